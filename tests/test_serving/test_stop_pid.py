"""stop_pid returns only once the server is gone, so its port can be claimed again at once.

It used to return right after the SIGKILL it sends to a server that ignored SIGTERM, and a caller
that then claimed the port could still find it held.
"""

import os
import subprocess
import sys
import time

from mlops_core.serving.server import stop_pid

# A stand-in server that ignores SIGTERM (as a wedged uvicorn would) and says when it is ready.
IGNORES_SIGTERM = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(120)"
)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_a_server_ignoring_sigterm_is_killed_and_gone_when_stop_pid_returns():
    child = subprocess.Popen(
        [sys.executable, "-c", IGNORES_SIGTERM], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert child.stdout.readline().strip() == "ready"
        started = time.monotonic()
        stop_pid(child.pid, timeout=0.5)
        # gone (killed and reaped), not merely signalled, and only after the SIGTERM grace
        assert _gone(child.pid)
        assert time.monotonic() - started >= 0.5
    finally:
        if not _gone(child.pid):
            os.killpg(child.pid, 9)


def test_a_server_that_honours_sigterm_is_gone_without_waiting_for_the_grace():
    child = subprocess.Popen(
        # SIGTERM's default action, whatever it inherited: under nohup the worker's SIGTERM can end up ignored
        # (tests/conftest.py says how), and this stand-in must honour it.
        [
            sys.executable,
            "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_DFL); print('ready', flush=True); time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert child.stdout.readline().strip() == "ready"
        started = time.monotonic()
        stop_pid(child.pid, timeout=30)
        assert _gone(child.pid) and time.monotonic() - started < 10
    finally:
        if not _gone(child.pid):
            os.killpg(child.pid, 9)
