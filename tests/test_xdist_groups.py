"""The tests sharing a module- or session-scoped fixture form one xdist group (tests/conftest.py), so that
`--dist loadgroup` (scripts/run_tests.sh) builds each such fixture on one worker, once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PLUGIN = """
def pytest_collection_finish(session):
    for item in session.items:
        mark = item.get_closest_marker("xdist_group")
        print("GROUP", item.nodeid, mark.args[0] if mark else "-")
"""


def groups(tmp_path: Path, *paths: str) -> dict[str, str]:
    (tmp_path / "print_groups.py").write_text(PLUGIN)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PYTHONPATH"] = f"{tmp_path}{os.pathsep}{env.get('PYTHONPATH', '')}"
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "--co", "-q", "-p", "print_groups", "-p", "no:randomly", *paths],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return dict(line.split()[1:3] for line in out.stdout.splitlines() if line.startswith("GROUP "))


def test_a_shared_world_is_one_group_and_a_test_without_one_is_free(tmp_path):
    found = groups(
        tmp_path,
        "tests/test_production/test_pipeline_on_postgres.py",
        "tests/test_production/test_postgres_restart.py",
        "tests/test_reliability/test_bad_inputs.py",
        "tests/test_core/test_ingestion.py",
    )
    # The production world is a session fixture of the folder: every test using it, in any of its files.
    production = {k: v for k, v in found.items() if k.startswith("tests/test_production/")}
    assert len(production) >= 3 and set(production.values()) == {"tests/test_production"}
    # A module fixture groups its module's tests, whichever fixture of the module each one uses.
    landing = {k: v for k, v in found.items() if "test_bad_landing_day_is_held" in k}
    assert len(landing) == 18 and set(landing.values()) == {"tests/test_reliability/test_bad_inputs.py"}
    # Tests using only function-scoped fixtures (and the root conftest's) stay ungrouped.
    assert {v for k, v in found.items() if k.startswith("tests/test_core/test_ingestion.py")} == {"-"}
