"""Servers the tests start on 127.0.0.1: wait for their health URL, stop their process group by PID."""

import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest


def wait_healthy(process: subprocess.Popen, url: str, log: Path, timeout_s: float, what: str) -> float:
    """Seconds until `url` answered 200; fails the test with the log's tail if the process exits or time runs out."""
    started = time.monotonic()
    while True:
        if process.poll() is not None:
            pytest.fail(f"{what} exited {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return time.monotonic() - started
        except OSError:
            pass
        if time.monotonic() - started > timeout_s:
            pytest.fail(f"{what} not healthy after {timeout_s} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)


def stop_process_group(process: subprocess.Popen) -> None:
    """SIGTERM to the server's process group, SIGKILL if it has not ended 15 s later."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=15)
