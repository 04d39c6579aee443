import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import duckdb
import pytest

# landing_factory lives beside the tests; test folders have no __init__.py by design.
sys.path.insert(0, str(Path(__file__).parent))

from load_phase import load_tests_the_shortcut_misses, skipped_by_the_load_phase  # noqa: E402
from server_process import stop_process_group, wait_healthy  # noqa: E402

from mlops_core.registry import seed_sqlite_store  # noqa: E402
from mlops_core.warm_dbt import SOCKET_DIR_ENV  # noqa: E402

_SESSION_HOME = None
_WARM_DBT_DIR = None


def pytest_configure(config):
    """Point every default path at a throwaway MLOPS_HOME before the code location is imported."""
    global _SESSION_HOME, _WARM_DBT_DIR
    _SESSION_HOME = tempfile.mkdtemp(prefix="mlops-tests-")
    os.environ["MLOPS_HOME"] = _SESSION_HOME
    # One warm dbt server (mlops_core/warm_dbt.py) for the session, in a folder of its own: the xdist workers
    # inherit the controller's folder and share it, and the controller stops it by its pid at the end.
    if not hasattr(config, "workerinput"):
        _WARM_DBT_DIR = tempfile.mkdtemp(prefix="mlops-dbt-")
        os.environ[SOCKET_DIR_ENV] = _WARM_DBT_DIR
    # The calendar and the endpoint too: every test runs on the fixed simulated calendar, whatever the caller set.
    for key in (
        "MLOPS_DATA_DIR",
        "MLOPS_DUCKDB_PATH",
        "DAGSTER_HOME",
        "MLOPS_REPORTS_DIR",
        "MLOPS_MLFLOW_DIR",
        "MLOPS_TODAY",
        "MLOPS_PARTITIONS_START",
        "MLOPS_SERVING_URL",
    ):
        os.environ.pop(key, None)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Every full collection (the parallel phase's, before `-m "not load"` deselects) checks the load phase's
    shortcut (tests/load_phase.py)."""
    missed = load_tests_the_shortcut_misses(items)
    if missed:
        raise pytest.UsageError(
            f"load tests in {', '.join(missed)} are marked without `mark.load` in their file: the load phase "
            "(tests/load_phase.py) would skip them; mark them with @pytest.mark.load"
        )


def pytest_ignore_collect(collection_path: Path, config):
    return skipped_by_the_load_phase(collection_path, config.getoption("markexpr", "")) or None


def pytest_terminal_summary(terminalreporter, config):
    """The order's seed again at the end of the log (pytest-randomly prints it in the header only)."""
    if config.pluginmanager.hasplugin("randomly") and isinstance(config.getoption("randomly_seed", None), int):
        seed = config.getoption("randomly_seed")
        terminalreporter.write_sep("-", f"random order: --randomly-seed={seed}")
        terminalreporter.write_line(
            f"replay this order: .venv/bin/python -m pytest --randomly-seed={seed} [the same args]"
        )


def pytest_unconfigure(config):
    if _SESSION_HOME:
        shutil.rmtree(_SESSION_HOME, ignore_errors=True)
    if _WARM_DBT_DIR:
        for pid_file in Path(_WARM_DBT_DIR).glob("*.pid"):
            with contextlib.suppress(ValueError, ProcessLookupError):
                os.kill(int(pid_file.read_text()), signal.SIGTERM)
        shutil.rmtree(_WARM_DBT_DIR, ignore_errors=True)


# What code under test changes in the process for whoever runs next: Settings.export() (the CLI's commands)
# publishes MLOPS_HOME, DAGSTER_HOME and the other paths, ensure_admin_token exports MLOPS_ADMIN_TOKEN, and
# mlflow.set_tracking_uri (tests, the ModelRegistry resource's setup, `models:/` downloads) sets a process-wide URI and exports it
# as MLFLOW_TRACKING_URI to every later subprocess. Dagster maps SIGTERM to SIGINT's handler in-process
# (dagster._utils.interrupts.setup_interrupt_handlers, reached by the K8s launcher the chart tests render):
# where SIGINT is ignored (a shell's background job, nohup), SIGTERM becomes ignored too, and every child
# started later inherits that: test_claim_port_stops_the_endpoint_this_home_started's listener survived its
# SIGTERM whenever test_k8s_specs ran first.
_LEAKED_ENV_PREFIXES = ("MLOPS_", "DAGSTER_", "MLFLOW_TRACKING_URI")
_MLFLOW_URI_MODULE = "mlflow.tracking._tracking_service.utils"
_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def _process_state_kept():
    saved = {key: value for key, value in os.environ.items() if key.startswith(_LEAKED_ENV_PREFIXES)}
    uri_module = sys.modules.get(_MLFLOW_URI_MODULE)
    saved_uri = uri_module._tracking_uri if uri_module is not None else None
    handlers = {sig: signal.getsignal(sig) for sig in _SIGNALS}
    try:
        yield
    finally:
        for sig, handler in handlers.items():
            if signal.getsignal(sig) != handler and handler is not None:
                signal.signal(sig, handler)
        uri_module = sys.modules.get(_MLFLOW_URI_MODULE)
        if uri_module is not None and uri_module._tracking_uri != saved_uri:
            uri_module.set_tracking_uri(saved_uri)  # None: back to MLflow's default resolution
        for key in [key for key in os.environ if key.startswith(_LEAKED_ENV_PREFIXES) and key not in saved]:
            del os.environ[key]
        os.environ.update(saved)


@pytest.fixture(autouse=True, scope="module")
def _process_state_restored_per_module():
    """What a module's fixtures changed (set up before the per-test snapshot) ends with the module."""
    with _process_state_kept():
        yield


@pytest.fixture(autouse=True)
def _process_state_restored():
    """Each test starts from what its own fixtures set up, never from what the previous test left: in a
    random order (pytest-randomly) a leaked variable or signal handler would make a test pass or fail
    depending on its neighbour. Module and session fixtures are set up before this snapshot, so what they
    export stays for their tests."""
    with _process_state_kept():
        yield


@pytest.fixture
def landing(tmp_path: Path) -> Path:
    path = tmp_path / "landing"
    path.mkdir()
    return path


@pytest.fixture
def con():
    connection = duckdb.connect()
    yield connection
    connection.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


MLFLOW_BIN = Path(sys.executable).parent / "mlflow"
READY_TIMEOUT_S = 90


@pytest.fixture
def mlflow_server(tmp_path: Path):
    """A real `mlflow server` on 127.0.0.1; yields (uri, data dir, seconds until /health answered)."""
    port = _free_port()
    data = tmp_path / "server"
    data.mkdir()
    seed_sqlite_store(data / "mlflow.db")  # as the platform's own stores start (mlops_core/registry.py)
    log_path = tmp_path / "mlflow-server.log"
    # As deploy/mlflow/run_server.sh runs it: no GenAI job runner (8 more processes, ~25 s of CPU per start).
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    cmd = [
        str(MLFLOW_BIN),
        "server",
        "--backend-store-uri",
        f"sqlite:///{data}/mlflow.db",
        "--default-artifact-root",
        str(data / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        ready_s = wait_healthy(proc, f"http://127.0.0.1:{port}/health", log_path, READY_TIMEOUT_S, "mlflow server")
        yield f"http://127.0.0.1:{port}", data, ready_s
    finally:
        stop_process_group(proc)
