"""`mlops ui` (dagster dev: webserver, daemon and a code server; the MLflow UI) stops on Ctrl-C and on SIGTERM within
10 s, leaving no process behind; it did not stop within 90 s before."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from ui_browser import VENV_BIN, mlops_env  # noqa: E402

from mlops_core.serving.server import free_port  # noqa: E402
from mlops_core.settings import REPO_ROOT  # noqa: E402


def _descendants(root: int) -> list[int]:
    """Every live process under `root` (dagster dev's webserver, daemon and code servers)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [root]
    while frontier:
        children = [pid for pid, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_mlops_ui_stops_with_its_children_within_10_seconds(tmp_path, signum):
    port, mlflow_port = free_port(), free_port()
    log = tmp_path / "ui.log"
    with open(log, "wb") as out:
        # Its own session, as a terminal gives it: the signal reaches `mlops ui` alone, like kill or Ctrl-C.
        ui = subprocess.Popen(
            [str(VENV_BIN / "mlops"), "ui", "--port", str(port), "--mlflow-port", str(mlflow_port)],
            cwd=REPO_ROOT,
            env=mlops_env(tmp_path / "home"),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    # One client for every poll: a new one per request builds a TLS context, 30-50 ms of CPU each.
    http = httpx.Client(timeout=2)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert ui.poll() is None, log.read_text()[-3000:]
            try:
                if http.get(f"http://127.0.0.1:{port}/server_info").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            pytest.fail(f"the UI did not answer within 180 s:\n{log.read_text()[-3000:]}")
        children = _descendants(ui.pid)
        assert len(children) >= 2, "dagster dev and its webserver run under mlops ui"
        while time.monotonic() < deadline:
            try:
                if http.get(f"http://127.0.0.1:{mlflow_port}/health").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            pytest.fail(f"the MLflow UI did not answer within 180 s:\n{log.read_text()[-3000:]}")
        # The MLflow UI runs without MLflow's GenAI job runner (its huey consumers): a viewer needs none.
        commands = [_command(pid) for pid in _descendants(ui.pid)]
        assert any("mlflow" in c and " ui " in f" {c} " for c in commands), commands
        assert not [c for c in commands if "huey" in c or "mlflow.server.jobs" in c], commands
        # One uvicorn worker: MLflow's default of 4 imports its server four times for one person's viewer.
        workers = [c for c in commands if "multiprocessing" in c and "spawn" in c]
        assert any("--workers 1 " in f"{c} " for c in commands) and not workers, commands
        http.close()  # no keep-alive connection of ours for the servers to wait on while they stop
        started = time.monotonic()
        ui.send_signal(signum)
        ui.wait(timeout=10)
        assert time.monotonic() - started < 10
        # Its children too, within the same 10 s: a code server that has loaded the code location takes
        # 0.7-0.9 s for its gRPC shutdown after `mlops ui` has returned.
        while [pid for pid in children if _alive(pid)] and time.monotonic() - started < 10:
            time.sleep(0.1)
        leftover = [pid for pid in children if _alive(pid)]
        assert not leftover, f"processes left behind: {[(p, _command(p)) for p in leftover]}"
        for url in (f"http://127.0.0.1:{port}/server_info", f"http://127.0.0.1:{mlflow_port}/health"):
            with pytest.raises(httpx.HTTPError):
                httpx.get(url, timeout=2)
    finally:
        http.close()
        if ui.poll() is None:
            os.killpg(ui.pid, signal.SIGKILL)
