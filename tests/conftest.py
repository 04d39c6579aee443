import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import duckdb
import pytest

# landing_factory lives beside the tests; test folders have no __init__.py by design.
sys.path.insert(0, str(Path(__file__).parent))

from server_process import stop_process_group, wait_healthy  # noqa: E402

_SESSION_HOME = None


def pytest_configure(config):
    """Point every default path at a throwaway MLOPS_HOME before the code location is imported."""
    global _SESSION_HOME
    _SESSION_HOME = tempfile.mkdtemp(prefix="mlops-tests-")
    os.environ["MLOPS_HOME"] = _SESSION_HOME
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
    log_path = tmp_path / "mlflow-server.log"
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
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
