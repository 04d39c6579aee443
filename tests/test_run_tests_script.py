"""scripts/run_tests.sh (what `make test` runs): the suite over both cores, then the load tests alone. Its exit
status is what CI trusts, so a failure in either phase fails it, and a run that collects nothing fails too."""

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
"""


# Plugins the two inner tests do not use. Each run starts four pytest processes (the parallel phase's
# controller and 2 workers, then the load phase); loading hypothesis, Faker, typeguard and anyio in each took
# 11.8 s of CPU a run against 4.6 s without. xdist and the markers are what the script relies on.
UNUSED_PLUGINS = ("randomly", "cacheprovider", "hypothesispytest", "faker", "typeguard", "anyio", "timeout")


def run(tmp_path: Path, ordinary: bool, load: bool, *extra: str) -> subprocess.CompletedProcess:
    (tmp_path / "test_phases.py").write_text(TESTS.format(ordinary=ordinary, load=load))
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
    ("ordinary", "load", "status"),
    [(False, True, 1), (True, False, 1)],
    ids=["a parallel test fails", "a load test fails"],
)
def test_either_phase_failing_fails_the_run(tmp_path, ordinary, load, status):
    result = run(tmp_path, ordinary, load)
    assert result.returncode == status, result.stdout[-2000:] + result.stderr[-2000:]
    assert f"parallel phase exit {0 if ordinary else 1}, load phase exit {0 if load else 1}" in result.stdout


def test_the_parallel_phase_runs_in_workers_and_leaves_the_load_test_out(tmp_path):
    result = run(tmp_path, True, True, "-v")
    assert result.returncode == 0, result.stdout[-2000:]
    assert "parallel phase exit 0, load phase exit 0" in result.stdout
    # Two pytest sessions, in this order: each phase's output on its own, so one cannot pass for the other.
    _, parallel, load = result.stdout.split("test session starts")
    # xdist's controller reports no deselected count: one test passed there, and it is not the load test.
    assert "created: 2/2 workers" in parallel and "= 1 passed in " in parallel
    assert "test_ordinary" in parallel and "test_under_load" not in parallel
    assert "test_under_load PASSED" in load and "test_ordinary" not in load and "workers" not in load


def test_collecting_no_test_at_all_fails(tmp_path):
    result = run(tmp_path, True, True, "-k", "no_test_has_this_name")
    assert result.returncode == 5
    assert "no test was collected" in result.stderr
