"""How the suite's tests are handed to the pytest-xdist workers: by the fixtures they share, longest first.

A module or session fixture is built once per worker that runs one of its tests. xdist's `load` and
`worksteal` hand out single tests, so two workers often both built the same 40 s world (the production
world on Postgres, a module's generated history); `loadgroup` would keep them together, but with pytest 9.2
xdist 3.8 ignores its groups (pytest-dev/pytest-xdist#1386). Here a unit of work is a test file, or a family
of files that share a session fixture, and a worker gets a whole unit. Units go out longest first (by the
costs recorded in test_costs.json), so the last unit to finish is a short one and neither core waits for
the other at the end.

A pytest plugin: `scripts/run_tests.sh` loads it for its parallel phase (`-p tests.shared_fixture_scheduling`,
from the repository root), which is what selects it. MLOPS_TEST_COSTS_OUT=path writes each unit's measured
seconds at the end, which is how test_costs.json is refreshed (a unit missing there counts one second a test).
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

import pytest
from xdist.scheduler import LoadScopeScheduling
from xdist.workermanage import WorkerController

COSTS_PATH = Path(__file__).with_name("test_costs.json")
UNKNOWN_TEST_SECONDS = 1.0

# Files that share a session fixture, kept on one worker so the fixture is built once.
FAMILIES = {
    "tests/test_production/test_pipeline_on_postgres.py": "production world on Postgres",
    "tests/test_production/test_postgres_restart.py": "production world on Postgres",
}
# Folders whose conftest holds session fixtures every file there uses (generated landings, trained models).
FAMILY_FOLDERS = ("tests/test_datagen/", "tests/test_training/")


def unit_of(nodeid: str) -> str:
    """The unit of work a test belongs to: its family, or its file."""
    path = nodeid.split("::", 1)[0]
    if path in FAMILIES:
        return FAMILIES[path]
    for folder in FAMILY_FOLDERS:
        if path.startswith(folder):
            return folder
    return path


def load_costs(path: Path = COSTS_PATH) -> dict[str, float]:
    try:
        return {str(unit): float(seconds) for unit, seconds in json.loads(path.read_text()).items()}
    except FileNotFoundError:
        return {}


class SharedFixtureScheduling(LoadScopeScheduling):
    def __init__(self, config: pytest.Config, log=None) -> None:
        super().__init__(config, log)
        self.costs = load_costs()
        self.measured: dict[str, float] = defaultdict(float)

    def _split_scope(self, nodeid: str) -> str:
        return unit_of(nodeid)

    def cost(self, unit: str) -> float:
        return self.costs.get(unit, UNKNOWN_TEST_SECONDS * len(self.workqueue.get(unit, ())))

    def _assign_work_unit(self, node: WorkerController) -> None:
        # Longest first (LPT): the costliest unit still queued goes to the worker that asks.
        costliest = max(self.workqueue, key=self.cost)
        self.workqueue.move_to_end(costliest, last=False)
        super()._assign_work_unit(node)

    def mark_test_complete(self, node: WorkerController, item_index: int, duration: float = 0) -> None:
        self.measured[unit_of(self.registered_collections[node][item_index])] += duration
        super().mark_test_complete(node, item_index, duration)

    def write_measured(self, path: Path) -> None:
        path.write_text(json.dumps({unit: round(s, 1) for unit, s in sorted(self.measured.items())}, indent=1) + "\n")


_SCHEDULER = pytest.StashKey[SharedFixtureScheduling]()


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log) -> SharedFixtureScheduling:
    config.stash[_SCHEDULER] = scheduler = SharedFixtureScheduling(config, log)
    return scheduler


def pytest_sessionfinish(session: pytest.Session) -> None:
    scheduler = session.config.stash.get(_SCHEDULER, None)  # set in the xdist controller only
    if scheduler is not None and os.environ.get("MLOPS_TEST_COSTS_OUT"):
        scheduler.write_measured(Path(os.environ["MLOPS_TEST_COSTS_OUT"]))
