"""A port held by another server: `start_detached` refuses it by name and never takes another server's answer for its own.

Real processes on free loopback ports: a second `mlops serve` from another MLOPS_HOME, an
endpoint of an older checkout (its /health says only "alive") and a program that is not an
endpoint at all.
"""

import json
import os
import signal
import subprocess
import sys
import time
from unittest import mock

import httpx
import pytest
from serving_world import build_world, free_port, running_endpoint

from mlops_core.serving import server
from mlops_core.serving.server import PortInUseError, ServingPaths

pytestmark = pytest.mark.slow

# A stand-in for another program on the port: /health answers `HEALTH` (or 404 when None).
# It takes SIGTERM's default action whatever it inherited: under nohup (SIGINT ignored) the worker's SIGTERM
# ends up ignored too (tests/conftest.py says how), and a child that inherits that outlives __exit__'s wait.
FAKE_SERVER = """
import http.server, json, signal, sys
signal.signal(signal.SIGTERM, signal.SIG_DFL)
HEALTH = json.loads(sys.argv[2])
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if HEALTH is None:
            self.send_error(404)
            return
        body = json.dumps(HEALTH).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


class _FakeServer:
    def __init__(self, port: int, health: dict | None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", FAKE_SERVER, str(port), json.dumps(health)], start_new_session=True
        )
        deadline = time.monotonic() + 20
        while server.describe_listener("127.0.0.1", port) is None:
            assert self.process.poll() is None and time.monotonic() < deadline, "the fake server did not start"
            time.sleep(0.05)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def other_world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("other-checkout"))


def _serving_processes(port: int) -> list[int]:
    """Live `mlops serve` processes started for `port` (a fresh free port: only this test's)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = open(f"/proc/{entry}/cmdline", "rb").read()
        except OSError:
            continue
        if b"mlops_cli\0serve" in cmdline and b"--port\0%d\0" % port in cmdline + b"\0":
            found.append(int(entry))
    return found


def test_a_second_checkout_is_refused_naming_the_running_endpoint(world, other_world):
    port = free_port()
    with running_endpoint(world, port) as (url, pid):
        described = server.describe_listener("127.0.0.1", port)
        with mock.patch.dict(os.environ, other_world.env()), pytest.raises(PortInUseError) as refused:
            server.start_detached(other_world.settings, port=port, timeout=60)
        # The running endpoint is untouched and still the one answering.
        assert httpx.get(f"{url}/health").json()["pid"] == pid
    message = str(refused.value)
    assert described == f"an mlops endpoint (pid {pid}, role production, MLOPS_HOME {world.home})"
    assert f"port {port} on 127.0.0.1 is in use by {described}" in message
    assert f"`mlops serve --stop --port {port}`" in message and "--port" in message
    assert (refused.value.port, refused.value.host) == (port, "127.0.0.1")
    # Nothing was started or recorded for the other checkout.
    assert not ServingPaths.for_role(other_world.settings, "production").pid_file(port).exists()
    assert _serving_processes(port) == []


@pytest.mark.parametrize(
    "health,named",
    [
        (
            {"status": "alive"},
            "an mlops endpoint that does not report its pid or MLOPS_HOME, started by an older checkout",
        ),
        (None, "a process that is not an mlops endpoint"),
    ],
    ids=["older endpoint", "not an endpoint"],
)
def test_a_foreign_listener_is_refused_with_its_pid(world, health, named):
    port = free_port()
    with _FakeServer(port, health) as fake, pytest.raises(PortInUseError) as refused:
        with mock.patch.dict(os.environ, world.env()):
            server.start_detached(world.settings, port=port, timeout=60)
    assert f"in use by {named} (pid {fake.process.pid}, working directory {os.getcwd()})" in str(refused.value)
    assert not ServingPaths.for_role(world.settings, "production").pid_file(port).exists()


def test_only_the_started_process_counts_as_started(world, monkeypatch):
    """The port is taken between the check and the bind by an older endpoint that answers /health:
    the old code returned as if started. Now the new process's failure to bind is reported."""
    port = free_port()
    calls = []
    real = server.describe_listener

    def first_check_misses(host, p):  # the race: the pre-start check sees a free port
        calls.append(p)
        return None if len(calls) == 1 else real(host, p)

    monkeypatch.setattr(server, "describe_listener", first_check_misses)
    with _FakeServer(port, {"status": "alive"}) as fake:
        with mock.patch.dict(os.environ, world.env()), pytest.raises(PortInUseError) as refused:
            server.start_detached(world.settings, port=port, timeout=90)
        assert fake.process.poll() is None
    assert f"(pid {fake.process.pid}," in str(refused.value)
    assert not ServingPaths.for_role(world.settings, "production").pid_file(port).exists()
    assert _serving_processes(port) == []


def test_nothing_listening_is_described_as_none():
    assert server.describe_listener("127.0.0.1", free_port()) is None
