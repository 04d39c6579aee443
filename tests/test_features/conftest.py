"""Fixtures of the feature-store tests: a real redis-server for the Redis online store.

`redis_server` (session scope) starts one throwaway redis-server on 127.0.0.1 with a free
port, no persistence, and stops it by PID at the end. `redis_launcher` starts extra
servers with chosen options (e.g. `--appendonly yes` to show persistence across a
restart). Without the redis-server binary the Redis tests are skipped locally, but fail
under CI (env var CI set): CI must install the Debian package redis-server.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis.configuration import set_hypothesis_home_dir

STARTUP_TIMEOUT_S = 10.0

# Hypothesis caches (even with database=None) under ./.hypothesis; keep them in the
# session's throwaway MLOPS_HOME (tests/conftest.py removes it) instead of the checkout.
set_hypothesis_home_dir(
    Path(os.environ.get("MLOPS_HOME") or tempfile.mkdtemp(prefix="mlops-hypothesis-")) / "hypothesis"
)


def redis_server_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        message = (
            "redis-server not found on PATH; install the Debian package redis-server (apt-get install redis-server)"
        )
        if os.environ.get("CI"):
            pytest.fail(f"{message}: the Redis online-store tests must run in CI", pytrace=False)
        pytest.skip(message)
    return binary


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RedisServer:
    process: subprocess.Popen
    port: int
    directory: Path
    log: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        """SIGTERM (redis shuts down cleanly and flushes its AOF), then SIGKILL if it hangs."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_redis(directory: Path, *extra_args: str, port: int | None = None) -> RedisServer:
    """A redis-server on 127.0.0.1 whose PING answers; the caller stops it."""
    import redis

    binary = redis_server_binary()
    directory.mkdir(parents=True, exist_ok=True)
    last_error = ""
    for _attempt in range(3):  # another process may grab the free port between probe and bind
        chosen = port or _free_port()
        log = directory / f"redis-{chosen}.log"
        args = [
            binary,
            "--port",
            str(chosen),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
            "--logfile",
            str(log),
        ]
        args += list(extra_args)  # later options override the defaults above
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        server = RedisServer(process, chosen, directory, log)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        client = redis.Redis(host="127.0.0.1", port=chosen, socket_connect_timeout=0.5)
        try:
            while time.monotonic() < deadline and process.poll() is None:
                try:
                    if client.ping():
                        return server
                except redis.exceptions.RedisError:
                    time.sleep(0.05)
        finally:
            client.close()
        server.stop()
        last_error = (process.stderr.read().decode(errors="replace") if process.stderr else "") + (
            log.read_text() if log.exists() else ""
        )
    raise RuntimeError(f"redis-server did not answer PING: {last_error[-2000:]}")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> Iterator[RedisServer]:
    server = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_launcher(tmp_path) -> Iterator:
    """start(*args, port=None, directory=None) -> RedisServer; every server started is stopped at teardown."""
    started: list[RedisServer] = []

    def start(*args: str, port: int | None = None, directory: Path | None = None) -> RedisServer:
        server = start_redis(directory or tmp_path / "redis", *args, port=port)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix of its own for each test, so tests sharing the server never see each other's keys."""
    return f"test-{uuid.uuid4().hex[:12]}"
