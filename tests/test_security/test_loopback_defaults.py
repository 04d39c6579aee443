"""Servers bind 127.0.0.1 by default: `mlops serve`, `mlops ui`, the uvicorn server and the test
MLflow server. The endpoint's actual listening socket is read from /proc/net/tcp."""

import ast
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlops_cli import ui as ui_command
from mlops_cli.main import main
from mlops_core.serving import server
from mlops_core.settings import REPO_ROOT

sys.path.insert(0, str(Path(__file__).parents[1] / "test_serving"))


def test_serve_defaults_to_loopback():
    (host,) = [p for p in main.commands["serve"].params if p.name == "host"]
    assert host.default == "127.0.0.1"
    assert server.DEFAULT_HOST == "127.0.0.1"
    assert server.start_detached.__defaults__[0] == "127.0.0.1"  # host, the first defaulted parameter


def test_ui_starts_dagster_dev_on_loopback(monkeypatch):
    """The command line `mlops ui` runs, captured instead of started (the UI itself is tested by the UI check)."""
    seen = []
    monkeypatch.setattr(ui_command, "prepare_instance", lambda settings: None)
    monkeypatch.setattr(ui_command, "run_until_signalled", lambda commands, **kwargs: seen.extend(commands) or 0)
    monkeypatch.setattr(ui_command.os, "_exit", lambda code: (_ for _ in ()).throw(SystemExit(code)))
    result = CliRunner().invoke(main, ["ui", "--port", "3999"])
    assert result.exit_code == 0, result.output
    dagster, mlflow_ui = seen
    assert dagster[dagster.index("-h") + 1] == "127.0.0.1" and "0.0.0.0" not in dagster
    assert mlflow_ui[mlflow_ui.index("--host") + 1] == "127.0.0.1" and "0.0.0.0" not in mlflow_ui


def test_the_test_mlflow_server_binds_loopback():
    tree = ast.parse((REPO_ROOT / "tests" / "conftest.py").read_text())
    commands = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.List) and any(isinstance(e, ast.Constant) and e.value == "--host" for e in n.elts)
    ]
    assert commands
    for command in commands:
        values = [e.value if isinstance(e, ast.Constant) else None for e in command.elts]
        assert values[values.index("--host") + 1] == "127.0.0.1"


def _listening(port: int) -> set[str]:
    addresses = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                addresses.add(address)
    return addresses


@pytest.mark.slow
def test_a_started_endpoint_listens_on_loopback_only(tmp_path):
    from serving_world import build_world, free_port, running_endpoint

    if not Path("/proc/net/tcp").exists():
        pytest.skip("no /proc/net/tcp on this system")
    world = build_world(tmp_path / "world")
    port = free_port()
    with running_endpoint(world, port):
        addresses = _listening(port)
    assert addresses == {"0100007F"}, addresses  # 127.0.0.1, little-endian hex
