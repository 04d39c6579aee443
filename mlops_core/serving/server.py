"""Build the scoring service from Settings and run it under uvicorn, in the foreground or detached.

The detached server writes a PID file; `stop()` signals that PID. Servers bind 127.0.0.1
unless told otherwise. A server reports its pid, role and MLOPS_HOME on /health, so a starter
accepts only the process it started, and a port held by anything else is named
(`describe_listener`) and refused (`PortInUseError`) before anything is started.
"""

import datetime as dt
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from mlops_core import registry
from mlops_core.features.online import OnlineFeatureService
from mlops_core.features.stores import OnlineStore, open_online_store
from mlops_core.serving.limits import ServingLimits, wall_clock
from mlops_core.serving.models import load_version
from mlops_core.serving.prediction_log import PredictionLog
from mlops_core.serving.service import ScoringService
from mlops_core.settings import SYSTEM_CLOCK, Settings
from mlops_core.wal_checkpoints import CHECKPOINT_SECONDS

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
ADMIN_TOKEN_ENV = "MLOPS_ADMIN_TOKEN"


class PortInUseError(RuntimeError):
    """Something this checkout did not start listens on the port a server was asked to use."""

    def __init__(self, host: str, port: int, listener: str) -> None:
        self.host, self.port, self.listener = host, port, listener
        super().__init__(
            f"port {port} on {host} is in use by {listener}. Stop it from the checkout that started it "
            f"(`mlops serve --stop --port {port}` there, with its MLOPS_HOME), or choose another port with --port."
        )


@dataclass(frozen=True)
class ServingPaths:
    """Where one serving role keeps its state: production and staging never share a log or plan."""

    root: Path

    @classmethod
    def for_role(cls, settings: Settings, role: str) -> "ServingPaths":
        return cls(settings.data_dir / "serving" / role)

    @property
    def plan(self) -> Path:
        return self.root / "traffic_plan.json"

    @property
    def predictions(self) -> Path:
        return self.root / "predictions.sqlite"

    def pid_file(self, port: int) -> Path:
        return self.root / f"server-{port}.pid"


def settings_online_store(settings: Settings) -> OnlineStore:
    """The online store the settings name (MLOPS_ONLINE_STORE; Redis at MLOPS_REDIS_URL)."""
    return open_online_store(
        settings.online_store,
        sqlite_path=settings.online_store_path,
        redis_url=os.environ.get("MLOPS_REDIS_URL"),
        # Every request records its transaction: the WAL's checkpoints (and their fsyncs) must not be in one.
        checkpoint_interval=CHECKPOINT_SECONDS,
    )


def build_service(
    settings: Settings,
    role: str = "production",
    model_version: str | None = None,
    limits: ServingLimits | None = None,
) -> ScoringService:
    """Production: resumes its recorded plan and records scored events into the online store.
    Staging (`model_version` given): serves that version only, records nothing into production state.
    Event times are bounded by `serving_clock(settings)`."""
    from mlflow import MlflowClient  # the server needs it; the code location importing this module does not

    client = MlflowClient(tracking_uri=registry.tracking_uri(settings.mlflow_dir))
    paths = ServingPaths.for_role(settings, role)
    staging = model_version is not None
    service = ScoringService(
        features=OnlineFeatureService(settings_online_store(settings)),
        loader=lambda version: load_version(client, version, releases_dir=settings.releases_dir),
        prediction_log=PredictionLog(paths.predictions),
        plan_path=None if staging else paths.plan,
        record_events=not staging,
        champion_alias=lambda: registry.alias_version(client, registry.CHAMPION),
        event_bounds=(limits or ServingLimits.from_env()).event_time,
        clock=serving_clock(settings),
    )
    service.warm_up()
    if staging:
        service.apply(champion_version=model_version, reason=f"{role}: version {model_version}")
    else:
        service.start()
    return service


MEMORY_BUDGET_ENV = "MLOPS_SERVING_MEMORY_BUDGET_MB"
DEFAULT_MEMORY_BUDGET_MB = 1024


def build_projects(settings: Settings, role: str = "production", metrics_registry=None):
    """Every declared snapshot project, served lazily within MLOPS_SERVING_MEMORY_BUDGET_MB (default 1024);
    plans per project under the role's folder. A bad declaration stops the start, naming its file."""
    from mlflow import MlflowClient

    from mlops_core.projects.catalog import FRAUD, projects_dir
    from mlops_core.projects.declaration import load_projects
    from mlops_core.serving.projects import ProjectMetrics, ProjectModels, features_root, registry_loader

    client = MlflowClient(tracking_uri=registry.tracking_uri(settings.mlflow_dir))
    root = projects_dir()
    projects = [p for p in load_projects(root) if p.name != FRAUD and p.entity.grain == "snapshot"]
    budget_mb = int(os.environ.get(MEMORY_BUDGET_ENV) or DEFAULT_MEMORY_BUDGET_MB)
    if budget_mb < 1:
        raise ValueError(f"{MEMORY_BUDGET_ENV} must be a positive number of megabytes, got {budget_mb}")
    return ProjectModels(
        projects,
        loader=registry_loader(client),
        champion_alias=lambda p: registry.alias_version(client, registry.CHAMPION, p.registered_model),
        features_root=features_root(settings.data_dir),
        plans_root=ServingPaths.for_role(settings, role).root / "projects",
        memory_budget_bytes=budget_mb * 1024 * 1024,
        metrics=None if metrics_registry is None else ProjectMetrics(metrics_registry),
    )


def serving_clock(settings: Settings) -> Callable[[], dt.datetime]:
    """ "Now" for the event-time bounds: the machine's clock. With a pinned calendar (MLOPS_TODAY=<date>)
    it is never earlier than the end of that day, so the days a demo or a simulation replays are
    served even when the pinned day lies in the machine's future; the default calendar lies in its past."""
    if settings.clock == SYSTEM_CLOCK:
        return wall_clock
    end_of_today = dt.datetime.combine(settings.today + dt.timedelta(days=1), dt.time.min, dt.UTC)
    return lambda: max(wall_clock(), end_of_today)


def uvicorn_config(app, host: str, port: int, limits: ServingLimits):
    """The uvicorn settings of `mlops serve` (tests run the same in process). One worker: the
    sqlite store keeps a per-process replica (see SqliteOnlineStore)."""
    import uvicorn

    from mlops_core.serving.protocol import guarded_protocol

    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http=guarded_protocol(limits, app.state.count_response),
        timeout_keep_alive=limits.keep_alive_seconds,
    )


def run(settings: Settings, host: str, port: int, role: str, model_version: str | None) -> None:
    import uvicorn

    from mlops_core.serving.app import create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    listener = describe_listener(host, port)
    if listener is not None:  # refuse before loading anything: uvicorn would only log a bind error
        raise PortInUseError(host, port, listener)
    limits = ServingLimits.from_env()
    service = build_service(settings, role, model_version, limits)
    identity = {"role": role, "mlops_home": str(settings.home), "port": port}
    app = create_app(
        service,
        admin_token=os.environ.get(ADMIN_TOKEN_ENV) or None,
        max_body_bytes=limits.max_body_bytes,
        identity=identity,
        projects=build_projects(settings, role, service.metrics.registry),
    )
    if not os.environ.get(ADMIN_TOKEN_ENV):
        log.warning("%s is not set: admin routes (traffic, rollback, reload) are disabled", ADMIN_TOKEN_ENV)
    log.info("serving %s on http://%s:%d (%s); limits %s", role, host, port, service.deployment.describe(), limits)
    try:
        uvicorn.Server(uvicorn_config(app, host, port, limits)).run()
    finally:
        service.close()


def start_detached(
    settings: Settings,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    role: str = "production",
    model_version: str | None = None,
    timeout: float = 60.0,
    log_file: Path | None = None,
) -> int:
    """Start `mlops serve` in its own session, wait until /health answers from that very process,
    write the PID file; returns the PID. PortInUseError if anything else holds the port."""
    paths = ServingPaths.for_role(settings, role)
    paths.root.mkdir(parents=True, exist_ok=True)
    existing = running_pid(paths.pid_file(port))
    if existing is not None:
        raise RuntimeError(
            f"a {role} server already runs on port {port} (pid {existing}); stop it with `mlops serve --stop --port {port}`"
        )
    listener = describe_listener(host, port)
    if listener is not None:
        raise PortInUseError(host, port, listener)
    command = [sys.executable, "-m", "mlops_cli", "serve", "--host", host, "--port", str(port), "--role", role]
    if model_version is not None:
        command += ["--model-version", str(model_version)]
    log_path = log_file or paths.root / f"server-{port}.log"
    with open(log_path, "ab") as out:
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # The endpoint serves the state of `settings`, whatever this process's environment says.
            env={**os.environ, **settings.environment()},
        )
    paths.pid_file(port).write_text(json.dumps({"pid": process.pid, "host": host, "port": port, "role": role}))
    deadline = time.monotonic() + timeout
    url = f"http://{host}:{port}/health"
    # One client for the whole wait: each new httpx client loads the CA bundle into a TLS context (30-50 ms of
    # CPU, even for plain http), and a start polls 10-30 times.
    with httpx.Client(timeout=1.0) as http:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                paths.pid_file(port).unlink(missing_ok=True)
                listener = describe_listener(host, port)
                if listener is not None:  # taken between the check and the bind
                    raise PortInUseError(host, port, listener)
                tail = log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(
                    f"the {role} server exited with code {process.returncode} during start-up; log {log_path}:\n{tail}"
                )
            if _health(url, http=http).get("pid") == process.pid:  # another server answering on the port does not count
                return process.pid
            time.sleep(0.2)
    stop_pid(process.pid)
    paths.pid_file(port).unlink(missing_ok=True)
    raise TimeoutError(f"the {role} server did not answer {url} within {timeout:.0f} s; log {log_path}")


def _health(url: str, timeout: float = 1.0, http: httpx.Client | None = None) -> dict:
    """/health's JSON, {} if nothing answers it as JSON."""
    try:
        answer = http.get(url, timeout=timeout) if http is not None else httpx.get(url, timeout=timeout)
        body = answer.json()
    except (httpx.HTTPError, ValueError):
        return {}
    return body if isinstance(body, dict) and answer.status_code == 200 else {}


def describe_listener(host: str, port: int) -> str | None:
    """What listens on host:port, in words for an error message; None if nothing does.

    An mlops endpoint names its pid, role and MLOPS_HOME on /health. For anything else (an
    older endpoint that does not, or another program) the pid and working directory of the
    listening socket's owner are looked up in /proc, where this user may read them."""
    with socket.socket() as probe:
        probe.settimeout(1.0)
        if probe.connect_ex((_connectable(host), port)) != 0:
            return None
    health = _health(f"http://{_connectable(host)}:{port}/health", timeout=2.0)
    if "pid" in health:
        return f"an mlops endpoint (pid {health['pid']}, role {health.get('role', '?')}, MLOPS_HOME {health.get('mlops_home', '?')})"
    owner = _socket_owner(port)
    where = f" (pid {owner[0]}, working directory {owner[1]})" if owner else ""
    if health.get("status") == "alive":
        return f"an mlops endpoint that does not report its pid or MLOPS_HOME, started by an older checkout{where}"
    return f"a process that is not an mlops endpoint{where}"


def _connectable(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host


def _socket_owner(port: int) -> tuple[int, str] | None:
    """(pid, cwd) of the process holding the listening socket on `port`, if /proc shows it to this user."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) in inodes:
                    try:
                        cwd = os.readlink(entry / "cwd")
                    except OSError:
                        cwd = "?"
                    return int(entry.name), cwd
        except OSError:  # another user's process, or gone
            continue
    return None


def free_port(host: str = DEFAULT_HOST) -> int:
    """A port nothing listens on right now, for a server started next (staging copies, tests)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def running_pid(pid_file: Path) -> int | None:
    if not pid_file.exists():
        return None
    pid = int(json.loads(pid_file.read_text())["pid"])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        pid_file.unlink(missing_ok=True)
        return None
    return pid


def stop_pid(pid: int, timeout: float = 15.0, kill_wait: float = 5.0) -> None:
    """SIGTERM the server's process group (uvicorn drains, the log flushes), SIGKILL after `timeout`.
    Returns once the process is gone, so a caller may reuse its port at once (bounded by `kill_wait`
    after the SIGKILL)."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    if _wait_gone(pid, timeout):
        return
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    _wait_gone(pid, kill_wait)


def _wait_gone(pid: int, timeout: float) -> bool:
    """True once `pid` has exited (reaped if it is our child) within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            finished, _ = os.waitpid(pid, os.WNOHANG)
            if finished == pid:
                return True
        except ChildProcessError:  # not our child: poll for existence instead
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def stop(settings: Settings, port: int = DEFAULT_PORT, role: str = "production") -> int | None:
    pid_file = ServingPaths.for_role(settings, role).pid_file(port)
    pid = running_pid(pid_file)
    if pid is not None:
        stop_pid(pid)
    pid_file.unlink(missing_ok=True)
    return pid


def admin_token_file(settings: Settings) -> Path:
    """Where a laptop keeps its admin token when MLOPS_ADMIN_TOKEN is unset."""
    return settings.home / "admin_token"


def read_or_create_admin_token(path: Path) -> str:
    """The token kept in `path`, written first (random, mode 0600) when the file does not exist yet."""
    if path.exists():
        return path.read_text().strip()
    import secrets

    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # written by another process in between
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(token)
    return token


def ensure_admin_token(settings: Settings) -> str:
    """MLOPS_ADMIN_TOKEN from the environment; on a laptop without one, a random token kept in
    MLOPS_HOME/admin_token (mode 0600) and exported, so the CLI, the server and Dagster agree.
    Production sets the variable from its secret store and this file is never written."""
    token = os.environ.get(ADMIN_TOKEN_ENV)
    if token:
        return token
    token = read_or_create_admin_token(admin_token_file(settings))
    os.environ[ADMIN_TOKEN_ENV] = token
    return token
