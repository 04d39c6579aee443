"""The load phase's shortcut: under `-m load` alone (scripts/run_tests.sh's second phase) a test file that never
names the load mark is not collected. It cannot hold a load test, and importing the whole suite only to deselect
it cost about 10 s of that serial phase. A file holds one only through `mark.load` (a decorator or `pytestmark`);
every full collection checks that no load test is marked another way (tests/conftest.py)."""

from __future__ import annotations

import os
from pathlib import Path

# Set to collect every file even under `-m load`.
COLLECT_EVERY_FILE_ENV = "MLOPS_COLLECT_EVERY_FILE"


def names_the_load_mark(path: Path) -> bool:
    return "mark.load" in Path(path).read_text(encoding="utf-8", errors="replace")


def skipped_by_the_load_phase(path: Path, markexpr: str) -> bool:
    """True for a test file the load phase need not import."""
    if markexpr != "load" or os.environ.get(COLLECT_EVERY_FILE_ENV):
        return False
    if path.suffix != ".py" or not path.name.startswith("test_"):
        return False
    return not names_the_load_mark(path)


def load_tests_the_shortcut_misses(items) -> list[str]:
    """Files of load tests that never name `mark.load`: the load phase would skip them."""
    return sorted(
        {str(item.path) for item in items if item.get_closest_marker("load") and not names_the_load_mark(item.path)}
    )
