"""The load phase collects only the files that name the load mark (tests/load_phase.py), and loses no load test."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from load_phase import COLLECT_EVERY_FILE_ENV, load_tests_the_shortcut_misses, skipped_by_the_load_phase

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    sources = {
        "test_marked.py": "import pytest\n\n@pytest.mark.load\ndef test_a():\n    pass\n",
        "test_module_marked.py": "import pytest\n\npytestmark = [pytest.mark.slow, pytest.mark.load]\n",
        "test_plain.py": "import pytest\n\n@pytest.mark.slow\ndef test_b():\n    pass\n# loads of load tests elsewhere\n",
        "helpers.py": "LOAD = 1\n",
    }
    for name, text in sources.items():
        (tmp_path / name).write_text(text)
    return {name: tmp_path / name for name in sources}


def test_under_load_alone_only_files_naming_the_mark_are_collected(files, monkeypatch):
    monkeypatch.delenv(COLLECT_EVERY_FILE_ENV, raising=False)
    skipped = {name for name, path in files.items() if skipped_by_the_load_phase(path, "load")}
    assert skipped == {"test_plain.py"}
    # Any other selection collects everything: the parallel phase must see every file to deselect load tests.
    for markexpr in ("", "not load", "load or slow", "slow"):
        assert not any(skipped_by_the_load_phase(path, markexpr) for path in files.values()), markexpr
    monkeypatch.setenv(COLLECT_EVERY_FILE_ENV, "1")
    assert not any(skipped_by_the_load_phase(path, "load") for path in files.values())


def test_a_load_test_marked_where_the_shortcut_cannot_see_it_is_named(files, tmp_path):
    def item(path: Path, marks: set[str]):
        return SimpleNamespace(path=path, get_closest_marker=lambda name: name if name in marks else None)

    hidden = tmp_path / "test_hidden.py"  # marked by a hook: item.add_marker("load")
    hidden.write_text("def test_c():\n    pass\n")
    items = [
        item(files["test_marked.py"], {"load"}),
        item(files["test_module_marked.py"], {"load", "slow"}),
        item(files["test_plain.py"], {"slow"}),
        item(hidden, {"load"}),
    ]
    assert load_tests_the_shortcut_misses(items) == [str(hidden)]
    assert load_tests_the_shortcut_misses(items[:3]) == []


@pytest.mark.slow
def test_the_suites_load_phase_imports_only_the_files_that_can_hold_a_load_test():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_XDIST", "PYTEST_ADDOPTS"))}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "load", "-p", "no:randomly"],
        cwd=REPO, capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    selected = [line for line in result.stdout.splitlines() if "::" in line]
    assert selected == [
        "tests/test_reliability/test_load.py::test_endpoint_offered_1000_requests_per_second_for_60_seconds_fails_and_loses_none"
    ]
    # The suite holds over 1,300 tests; the files naming the mark hold a few dozen.
    collected = int(re.search(r"/(\d+) tests? collected", result.stdout).group(1))
    assert collected < 100, result.stdout[-500:]
