"""The suite's xdist scheduling (tests/shared_fixture_scheduling.py): whole files or families to a worker,
costliest first, and each unit's measured time written back."""

import json
from collections import OrderedDict, defaultdict

from shared_fixture_scheduling import COSTS_PATH, SharedFixtureScheduling, load_costs, unit_of


class _Worker:
    shutting_down = True  # nothing more to hand out once the queue is empty

    def __init__(self) -> None:
        self.sent: list[list[int]] = []

    def send_runtest_some(self, indices) -> None:
        self.sent.append(list(indices))


def _scheduler(collection: list[str], costs: dict[str, float]) -> tuple[SharedFixtureScheduling, _Worker]:
    # LoadScopeScheduling's constructor reads the -n/--tx options; only the queue and the bookkeeping matter here.
    scheduler = object.__new__(SharedFixtureScheduling)
    scheduler.costs = costs
    scheduler.measured = defaultdict(float)
    scheduler.assigned_work = {}
    scheduler.workqueue = OrderedDict()
    for nodeid in collection:
        scheduler.workqueue.setdefault(scheduler._split_scope(nodeid), {})[nodeid] = False
    worker = _Worker()
    scheduler.registered_collections = {worker: collection}
    return scheduler, worker


def test_files_sharing_the_production_world_are_one_unit_and_other_files_their_own():
    restart = "tests/test_production/test_postgres_restart.py::test_postgres_restarted_during_a_run[while-events]"
    pipeline = "tests/test_production/test_pipeline_on_postgres.py::test_nothing_went_to_sqlite"
    assert unit_of(restart) == unit_of(pipeline) == "production world on Postgres"
    # Same folder, no shared fixture: its own unit (a name sharing a long prefix is not a family member).
    assert unit_of("tests/test_production/test_k8s_specs.py::test_x") == "tests/test_production/test_k8s_specs.py"
    assert unit_of("tests/test_production/test_pipeline_on_postgres_extra.py::t") != unit_of(pipeline)
    # A folder whose conftest holds session fixtures every file uses.
    assert unit_of("tests/test_training/test_models.py::test_a") == unit_of("tests/test_training/test_refit.py::t")
    assert unit_of("tests/test_cli.py::test_a[param::with::colons]") == "tests/test_cli.py"


def test_the_costliest_unit_goes_first_and_an_unknown_file_counts_a_second_a_test():
    collection = [
        "tests/test_small.py::t1",
        "tests/test_new.py::t1",
        "tests/test_new.py::t2",
        "tests/test_new.py::t3",
        "tests/test_production/test_postgres_restart.py::t",
        "tests/test_cli.py::t",
        "tests/test_production/test_pipeline_on_postgres.py::t",
    ]
    scheduler, worker = _scheduler(
        collection, {"tests/test_small.py": 2.9, "production world on Postgres": 96.4, "tests/test_cli.py": 147.2}
    )
    while scheduler.workqueue:
        scheduler._assign_work_unit(worker)
    assert worker.sent == [[5], [4, 6], [1, 2, 3], [0]]  # cli 147 s, the world 96 s, new 3 x 1 s, small 2.9 s


def test_measured_seconds_add_up_per_unit_and_are_written_as_the_costs_file_reads_them(tmp_path):
    collection = ["tests/test_a.py::t1", "tests/test_a.py::t2", "tests/test_b.py::t1"]
    scheduler, worker = _scheduler(collection, {})
    while scheduler.workqueue:
        scheduler._assign_work_unit(worker)
    for index, seconds in enumerate([1.25, 2.5, 0.75]):
        scheduler.mark_test_complete(worker, index, seconds)
    out = tmp_path / "costs.json"
    scheduler.write_measured(out)
    assert json.loads(out.read_text()) == {"tests/test_a.py": 3.8, "tests/test_b.py": 0.8}
    assert load_costs(out) == {"tests/test_a.py": 3.8, "tests/test_b.py": 0.8}
    assert load_costs(tmp_path / "missing.json") == {}


def test_the_committed_costs_name_units_of_files_that_exist():
    costs = load_costs(COSTS_PATH)
    assert costs and all(seconds >= 0 for seconds in costs.values())
    root = COSTS_PATH.parent.parent
    for unit in costs:
        if unit.startswith("tests/"):
            assert (root / unit).exists(), f"{COSTS_PATH.name} names {unit}, which is gone: refresh it (see its module)"
