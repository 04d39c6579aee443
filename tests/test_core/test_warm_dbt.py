"""`mlops-dbt` (mlops_core/warm_dbt.py) behaves as the cold `dbt` does: same output and exit status, the
caller's own environment and working directory on every command, signals reach dbt, a vanished caller
takes its command with it, and the server goes away when idle. Each test runs its own server in tmp_path
and stops it by its pid."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from mlops_core import warm_dbt

pytestmark = pytest.mark.slow

WARM = str(Path(sys.executable).with_name("mlops-dbt"))
COLD = str(Path(sys.executable).with_name("dbt"))

PROFILE = """probe:
  target: dev
  outputs:
    dev:
      type: duckdb
      path: "{{ env_var('PROBE_DB') }}"
"""
PROJECT = """name: probe
version: "1.0"
profile: probe
"""
# dbt's `print` writes the value to stdout, whatever the log format.
MACROS = """
{% macro show_env(name) %}{{ print("PROBE " ~ name ~ "=" ~ env_var(name, "<unset>")) }}{% endmacro %}
{% macro count_forever() %}{% do run_query("select count(*) from range(100000000000) a") %}{% endmacro %}
{% macro fail() %}{{ exceptions.raise_compiler_error("asked to fail") }}{% endmacro %}
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    folder = tmp_path / "probe"
    (folder / "macros").mkdir(parents=True)
    (folder / "dbt_project.yml").write_text(PROJECT)
    (folder / "profiles.yml").write_text(PROFILE)
    (folder / "macros" / "probe.sql").write_text(MACROS)
    return folder


@pytest.fixture
def server_dir(tmp_path: Path, monkeypatch):
    """A server of this test's own; stopped by its pid when the test ends."""
    folder = tmp_path / "warm"
    monkeypatch.setenv(warm_dbt.SOCKET_DIR_ENV, str(folder))
    yield folder
    for pid_file in folder.glob("*.pid"):
        pid = int(pid_file.read_text())
        os.kill(pid, signal.SIGTERM)
        psutil.Process(pid).wait(timeout=10)


def _dbt(executable: str, project: Path, *args: str, env: dict | None = None, **kwargs):
    environment = {**os.environ, "PROBE_DB": str(project / "probe.duckdb"), **(env or {})}
    return subprocess.run(
        [executable, *args, "--profiles-dir", str(project)],
        cwd=project,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        **kwargs,
    )


SHOW_HOME = ("run-operation", "show_env", "--args", "{name: HOME}")


def _probe_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("PROBE ")]


def test_output_and_exit_status_are_the_cold_dbts(project, server_dir):
    """Success and failure both: the printed value and the exit status match, and a failing command's
    error names its cause on the same stream."""
    args = ("run-operation", "show_env", "--args", "{name: PROBE_VALUE}")
    env = {"PROBE_VALUE": "warm-or-cold"}
    cold, warm = _dbt(COLD, project, *args, env=env), _dbt(WARM, project, *args, env=env)
    assert cold.returncode == warm.returncode == 0, warm.stdout + warm.stderr
    assert _probe_lines(cold.stdout) == _probe_lines(warm.stdout) == ["PROBE PROBE_VALUE=warm-or-cold"]
    assert warm_dbt.server_pid() is not None  # it really ran through the server
    cold_fail, warm_fail = _dbt(COLD, project, "run-operation", "fail"), _dbt(WARM, project, "run-operation", "fail")
    assert cold_fail.returncode == warm_fail.returncode != 0
    assert "asked to fail" in cold_fail.stdout and "asked to fail" in warm_fail.stdout


def test_each_command_sees_only_its_callers_environment_and_directory(project, server_dir, tmp_path):
    """The server forks every command from a state that never ran dbt: a variable one caller set is unset for
    the next, a value that shares a long prefix with the previous one is not confused with it, and the
    working directory is the caller's."""
    args = ("run-operation", "show_env", "--args", "{name: PROBE_SECRET}")
    first = _dbt(WARM, project, *args, env={"PROBE_SECRET": "value-0123456789-a"})
    second = _dbt(WARM, project, *args, env={"PROBE_SECRET": "value-0123456789-b"})
    third = _dbt(WARM, project, *args)
    assert _probe_lines(first.stdout) == ["PROBE PROBE_SECRET=value-0123456789-a"]
    assert _probe_lines(second.stdout) == ["PROBE PROBE_SECRET=value-0123456789-b"]
    assert _probe_lines(third.stdout) == ["PROBE PROBE_SECRET=<unset>"]
    # From another directory, without --project-dir, dbt finds no project: the caller's cwd is what counts.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    lost, cold_lost = (
        subprocess.run([executable, *SHOW_HOME], cwd=elsewhere, capture_output=True, text=True, timeout=120)
        for executable in (WARM, COLD)
    )
    assert lost.returncode == cold_lost.returncode != 0
    assert lost.stdout + lost.stderr == cold_lost.stdout + cold_lost.stderr
    assert "Usage: dbt run-operation" in lost.stderr


def _dbt_children(server: int) -> list[psutil.Process]:
    """The commands the server runs: grandchildren (server -> handler -> dbt)."""
    commands = []
    for handler in psutil.Process(server).children():
        # A handler whose command just ended (the previous one's) can exit between the two listings.
        with contextlib.suppress(psutil.NoSuchProcess):
            commands += handler.children()
    return commands


def _ended(process: psutil.Process) -> bool:
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_for(condition, seconds: float = 30.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"not true within {seconds} s: {condition}")


def _start_forever(project: Path, log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [WARM, "run-operation", "count_forever", "--profiles-dir", str(project)],
            cwd=project,
            env={**os.environ, "PROBE_DB": str(project / "probe.duckdb")},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def test_sigint_to_the_caller_reaches_dbt(project, server_dir, tmp_path):
    """dagster-dbt cancels a run by sending SIGINT to the executable it started: dbt itself must get it. Its
    running query then stops with DuckDB's "interrupted" error, which only the dbt process can print (a
    caller that died of the signal instead would leave its command to be killed without a word)."""
    assert _dbt(WARM, project, *SHOW_HOME).returncode == 0  # the server is up before the command
    server = warm_dbt.server_pid()
    log = tmp_path / "forever.log"
    caller = _start_forever(project, log)
    try:
        (command,) = _wait_for(lambda: _dbt_children(server))
        _wait_for(lambda: "Found" in log.read_text())  # parsed: the query is what runs now
        time.sleep(1.0)
        caller.send_signal(signal.SIGINT)
        code = caller.wait(timeout=60)
        output = log.read_text()
        assert code == 1 and "Query interrupted" in output, output
        assert "Traceback" not in output
        _wait_for(lambda: _ended(command))
    finally:
        caller.kill()
        caller.wait()


def test_a_caller_killed_outright_takes_its_dbt_command_with_it(project, server_dir, tmp_path):
    """SIGKILL cannot be forwarded: the server sees the caller's connection close and stops the command."""
    assert _dbt(WARM, project, *SHOW_HOME).returncode == 0
    server = warm_dbt.server_pid()
    caller = _start_forever(project, tmp_path / "forever.log")
    (command,) = _wait_for(lambda: _dbt_children(server))
    caller.kill()
    caller.wait()
    _wait_for(lambda: _ended(command))
    _wait_for(lambda: not _dbt_children(server))
    # The server itself keeps serving.
    assert _dbt(WARM, project, *SHOW_HOME).returncode == 0 and warm_dbt.server_pid() == server


def test_an_idle_server_exits_and_removes_its_socket(project, server_dir):
    """Idle means no command for the whole period: one that ran and ended counts as work, then not."""
    path = warm_dbt.socket_path()
    with warm_dbt.connect_or_start(path, idle_seconds=2.0) as sock:
        sock.close()
    pid = warm_dbt.server_pid(path)
    assert pid is not None and path.exists()
    assert _dbt(WARM, project, *SHOW_HOME).returncode == 0 and warm_dbt.server_pid(path) == pid
    psutil.Process(pid).wait(timeout=30)
    assert not path.exists() and warm_dbt.server_pid(path) is None


def test_without_a_usable_socket_folder_the_cold_dbt_runs(project, tmp_path, monkeypatch):
    """A socket folder other users can open is refused (they could run commands as this user); the command
    still runs, on the cold dbt, and says why on stderr."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    monkeypatch.setenv(warm_dbt.SOCKET_DIR_ENV, str(shared))
    result = _dbt(WARM, project, "run-operation", "show_env", "--args", "{name: PROBE_DB}")
    assert result.returncode == 0
    assert _probe_lines(result.stdout) == [f"PROBE PROBE_DB={project / 'probe.duckdb'}"]
    assert "running the cold dbt" in result.stderr and "not private" in result.stderr
    assert not list(shared.glob("*.sock"))


def test_the_launcher_is_chosen_by_the_environment_and_a_wrong_one_is_named(tmp_path):
    from mlops_core.settings import Settings
    from resources.environment import build_resources

    home = {"MLOPS_HOME": str(tmp_path / "home")}
    assert build_resources(Settings.from_env(home))["dbt"].dbt_executable == WARM
    cold = Settings.from_env({**home, "MLOPS_DBT_LAUNCHER": "cold"})
    assert build_resources(cold)["dbt"].dbt_executable == COLD
    with pytest.raises(ValueError, match="MLOPS_DBT_LAUNCHER must be 'warm' or 'cold', got 'warmer'"):
        Settings.from_env({**home, "MLOPS_DBT_LAUNCHER": "warmer"})


def test_a_server_that_stops_as_the_command_arrives_is_replaced_and_the_command_runs_once(project, server_dir):
    """A server past its idle time may take a connection as it exits: nothing ran, so the command asks a new
    server, once, and runs there (never on the cold dbt, never twice)."""
    import socket
    import threading

    path = warm_dbt.socket_path()
    stopping = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stopping.bind(str(path))
    stopping.listen(1)
    taken = []

    def take_one_and_go():
        conn, _ = stopping.accept()
        taken.append(True)
        conn.close()
        path.unlink()
        stopping.close()

    thread = threading.Thread(target=take_one_and_go)
    thread.start()
    result = _dbt(WARM, project, "run-operation", "show_env", "--args", "{name: PROBE_DB}")
    thread.join(timeout=30)
    assert taken == [True]
    assert result.returncode == 0, result.stdout + result.stderr
    assert _probe_lines(result.stdout) == [f"PROBE PROBE_DB={project / 'probe.duckdb'}"]
    assert "cold dbt" not in result.stderr
    assert warm_dbt.server_pid(path) is not None and path.exists()
