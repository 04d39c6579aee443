"""scripts/run_tests.sh (what `make test` runs): the suite over both cores, then the load tests, with the
beside-load tests on one pinned core beside them. Its exit status is what CI trusts, so a failure in any phase
fails it, and a run that collects nothing fails too."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "run_tests.sh"

pytestmark = pytest.mark.slow

TESTS = """
import os
import pytest

def test_ordinary():
    assert {ordinary}

@pytest.mark.load
def test_under_load():
    # The load phase runs in the controlling process, not in an xdist worker.
    assert "PYTEST_XDIST_WORKER" not in os.environ
    assert {load}

@pytest.mark.beside_load
def test_beside_load():
    # Beside the load phase, never in a worker, and on the last of the script's cores only.
    assert "PYTEST_XDIST_WORKER" not in os.environ
    assert os.sched_getaffinity(0) == {{{last_core}}}
    assert {beside}
"""


# Plugins the two inner tests do not use. Each run starts four pytest processes (the parallel phase's
# controller and 2 workers, then the load phase); loading hypothesis, Faker, typeguard and anyio in each took
# 11.8 s of CPU a run against 4.6 s without. xdist and the markers are what the script relies on.
UNUSED_PLUGINS = ("randomly", "cacheprovider", "hypothesispytest", "faker", "typeguard", "anyio", "timeout")


def run(tmp_path: Path, ordinary: bool, load: bool, *extra: str, beside: bool = True) -> subprocess.CompletedProcess:
    last_core = max(os.sched_getaffinity(0))  # the script's cores are this test's
    (tmp_path / "test_phases.py").write_text(
        TESTS.format(ordinary=ordinary, load=load, beside=beside, last_core=last_core)
    )
    unused = [arg for plugin in UNUSED_PLUGINS for arg in ("-p", f"no:{plugin}")]
    return subprocess.run(
        ["bash", str(SCRIPT), "-c", str(REPO / "pyproject.toml"), "--rootdir", str(tmp_path), *unused,
         str(tmp_path / "test_phases.py"), *extra],
        capture_output=True, text=True, timeout=300, env=_outer_pytest_removed(),
    )  # fmt: skip


def _outer_pytest_removed() -> dict[str, str]:
    """The environment without what the pytest running this test exports: as an xdist worker it sets
    PYTEST_XDIST_WORKER (which the inner load test checks), and CI sets PYTEST_ADDOPTS."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_XDIST", "PYTEST_ADDOPTS"))}


@pytest.mark.parametrize(
    ("ordinary", "load", "beside"),
    [(False, True, True), (True, False, True), (True, True, False)],
    ids=["a parallel test fails", "a load test fails", "a beside-load test fails"],
)
def test_any_phase_failing_fails_the_run(tmp_path, ordinary, load, beside):
    result = run(tmp_path, ordinary, load, beside=beside)
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    exits = (
        f"parallel phase exit {int(not ordinary)}, load phase exit {int(not load)}, beside-load exit {int(not beside)}"
    )
    assert exits in result.stdout


def test_the_parallel_phase_runs_in_workers_and_leaves_the_load_and_beside_load_tests_out(tmp_path):
    result = run(tmp_path, True, True, "-v")
    assert result.returncode == 0, result.stdout[-2000:]
    assert "parallel phase exit 0, load phase exit 0, beside-load exit 0" in result.stdout
    # Three pytest sessions in this order; the beside-load one's output is printed after the load phase's.
    _, parallel, load, beside = result.stdout.split("test session starts")
    assert "created: 2/2 workers" in parallel and "PASSED" in parallel and "test_ordinary" in parallel
    assert "test_under_load" not in parallel and "test_beside_load" not in parallel
    assert "test_under_load PASSED" in load and "test_beside_load" not in load
    assert f"run_tests: the beside_load tests, pinned to core {max(os.sched_getaffinity(0))} while" in load
    assert "test_beside_load PASSED" in beside and "test_under_load" not in beside


def test_collecting_no_test_at_all_fails(tmp_path):
    result = run(tmp_path, True, True, "-k", "no_test_has_this_name")
    assert result.returncode == 5
    assert "no test was collected" in result.stderr
