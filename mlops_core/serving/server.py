"""Build the scoring service from Settings and run it under uvicorn, in the foreground or detached.

The detached server writes a PID file; `stop()` signals that PID. Servers bind 127.0.0.1
unless told otherwise.
"""

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import mlflow

from mlops_core import registry
from mlops_core.features.online import OnlineFeatureService
from mlops_core.features.stores import OnlineStore, RedisOnlineStore, SqliteOnlineStore
from mlops_core.serving.models import load_version
from mlops_core.serving.prediction_log import PredictionLog
from mlops_core.serving.service import ScoringService
from mlops_core.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
ADMIN_TOKEN_ENV = "MLOPS_ADMIN_TOKEN"


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


def open_online_store(settings: Settings) -> OnlineStore:
    if settings.online_store == "redis":
        url = os.environ.get("MLOPS_REDIS_URL")
        if not url:
            raise ValueError("MLOPS_ONLINE_STORE=redis needs MLOPS_REDIS_URL")
        return RedisOnlineStore(url)
    return SqliteOnlineStore(settings.online_store_path)


def build_service(settings: Settings, role: str = "production", model_version: str | None = None) -> ScoringService:
    """Production: resumes its recorded plan and records scored events into the online store.
    Staging (`model_version` given): serves that version only, records nothing into production state."""
    client = mlflow.MlflowClient(tracking_uri=registry.tracking_uri(settings.mlflow_dir))
    paths = ServingPaths.for_role(settings, role)
    staging = model_version is not None
    service = ScoringService(
        features=OnlineFeatureService(open_online_store(settings)),
        loader=lambda version: load_version(client, version),
        prediction_log=PredictionLog(paths.predictions),
        plan_path=None if staging else paths.plan,
        record_events=not staging,
        champion_alias=lambda: registry.alias_version(client, registry.CHAMPION),
    )
    service.warm_up()
    if staging:
        service.apply(champion_version=model_version, reason=f"{role}: version {model_version}")
    else:
        service.start()
    return service


def run(settings: Settings, host: str, port: int, role: str, model_version: str | None) -> None:
    import uvicorn

    from mlops_core.serving.app import create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    service = build_service(settings, role, model_version)
    app = create_app(service, admin_token=os.environ.get(ADMIN_TOKEN_ENV) or None)
    if not os.environ.get(ADMIN_TOKEN_ENV):
        log.warning("%s is not set: admin routes (traffic, rollback, reload) are disabled", ADMIN_TOKEN_ENV)
    log.info("serving %s on http://%s:%d (%s)", role, host, port, service.deployment.describe())
    try:
        # One worker: the sqlite store keeps a per-process replica (see SqliteOnlineStore).
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, loop="uvloop", http="httptools")
    finally:
        service.close()


def start_detached(
    settings: Settings, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, role: str = "production",
    model_version: str | None = None, timeout: float = 60.0, log_file: Path | None = None,
) -> int:
    """Start `mlops serve` in its own session, wait until /health answers, write the PID file; returns the PID."""
    paths = ServingPaths.for_role(settings, role)
    paths.root.mkdir(parents=True, exist_ok=True)
    existing = running_pid(paths.pid_file(port))
    if existing is not None:
        raise RuntimeError(f"a {role} server already runs on port {port} (pid {existing}); stop it with `mlops serve --stop --port {port}`")
    command = [sys.executable, "-m", "mlops_core.cli", "serve", "--host", host, "--port", str(port), "--role", role]
    if model_version is not None:
        command += ["--model-version", str(model_version)]
    log_path = log_file or paths.root / f"server-{port}.log"
    with open(log_path, "ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=os.environ.copy())
    paths.pid_file(port).write_text(json.dumps({"pid": process.pid, "host": host, "port": port, "role": role}))
    deadline = time.monotonic() + timeout
    url = f"http://{host}:{port}/health"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            paths.pid_file(port).unlink(missing_ok=True)
            tail = log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the {role} server exited with code {process.returncode} during start-up; log {log_path}:\n{tail}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return process.pid
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    stop_pid(process.pid)
    paths.pid_file(port).unlink(missing_ok=True)
    raise TimeoutError(f"the {role} server did not answer {url} within {timeout:.0f} s; log {log_path}")


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


def stop_pid(pid: int, timeout: float = 15.0) -> None:
    """SIGTERM the server's process group (uvicorn drains, the log flushes), SIGKILL after `timeout`."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            finished, _ = os.waitpid(pid, os.WNOHANG)
            if finished == pid:
                return
        except ChildProcessError:  # not our child: poll for existence instead
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def stop(settings: Settings, port: int = DEFAULT_PORT, role: str = "production") -> int | None:
    pid_file = ServingPaths.for_role(settings, role).pid_file(port)
    pid = running_pid(pid_file)
    if pid is not None:
        stop_pid(pid)
    pid_file.unlink(missing_ok=True)
    return pid


def ensure_admin_token(settings: Settings) -> str:
    """MLOPS_ADMIN_TOKEN from the environment; on a laptop without one, a random token kept in
    MLOPS_HOME/admin_token (mode 0600) and exported, so the CLI, the server and Dagster agree.
    Production sets the variable from its secret store and this file is never written."""
    token = os.environ.get(ADMIN_TOKEN_ENV)
    if token:
        return token
    path = settings.home / "admin_token"
    if path.exists():
        token = path.read_text().strip()
    else:
        import secrets

        settings.home.mkdir(parents=True, exist_ok=True)
        token = secrets.token_urlsafe(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(token)
    os.environ[ADMIN_TOKEN_ENV] = token
    return token
