"""The second phase's shortcut: under `-m load` or `-m beside_load` alone (scripts/run_tests.sh's second phase) a
test file that never names that mark is not collected. It cannot hold such a test, and importing the whole suite
only to deselect it cost about 10 s of that phase. A file holds one only through `mark.load` or
`mark.beside_load` (a decorator or `pytestmark`); every full collection checks that no such test is marked
another way (tests/conftest.py)."""

from __future__ import annotations

import os
from pathlib import Path

# Set to collect every file even under `-m load`.
COLLECT_EVERY_FILE_ENV = "MLOPS_COLLECT_EVERY_FILE"
# The marks scripts/run_tests.sh's second phase selects on, each alone: the load tests, and the in-process tests
# that run beside them on one pinned core.
SECOND_PHASE_MARKS = ("load", "beside_load")


def names_the_mark(path: Path, mark: str = "load") -> bool:
    return f"mark.{mark}" in Path(path).read_text(encoding="utf-8", errors="replace")


def names_the_load_mark(path: Path) -> bool:
    return names_the_mark(path, "load")


def skipped_by_the_load_phase(path: Path, markexpr: str) -> bool:
    """True for a test file the second phase (`-m load` or `-m beside_load`) need not import."""
    if markexpr not in SECOND_PHASE_MARKS or os.environ.get(COLLECT_EVERY_FILE_ENV):
        return False
    if path.suffix != ".py" or not path.name.startswith("test_"):
        return False
    return not names_the_mark(path, markexpr)


def load_tests_the_shortcut_misses(items) -> list[str]:
    """Files of load (or beside-load) tests that never name their mark: the second phase would skip them."""
    return sorted(
        {
            str(item.path)
            for item in items
            for mark in SECOND_PHASE_MARKS
            if item.get_closest_marker(mark) and not names_the_mark(item.path, mark)
        }
    )
