"""The embedded instance's storage (resources/instance_storage.py): Dagster's sqlite storage with its engines
kept. It must store and read exactly what Dagster's own storage does, in the same files, across processes."""

import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.storage.sqlite_storage import DagsterSqliteStorage

from resources import instance_storage
from resources.instance_storage import (
    RUN_ENGINES_KEPT,
    PooledSqliteEventLogStorage,
    PooledSqliteRunStorage,
    PooledSqliteScheduleStorage,
    PooledSqliteStorage,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
DAYS = dg.DailyPartitionsDefinition(start_date="2026-01-01", end_date="2026-01-04")


@dg.asset(partitions_def=DAYS)
def landed(context: dg.AssetExecutionContext) -> int:
    for i in range(25):
        context.log.info(f"line {i} of {context.partition_key}")
    return 1


@dg.asset_check(asset=landed, blocking=True)
def landed_is_sound(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=True, metadata={"rows": 1})


@pytest.fixture(autouse=True)
def dagster_home_is_the_tests(tmp_path, monkeypatch):
    # The profile names its folder as Dagster finds the file: DAGSTER_HOME.
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))


def _home(path: Path, pooled: bool) -> Path:
    """A DAGSTER_HOME with the repo's dagster.yaml (pooled) or the same file without its storage block
    (Dagster's default sqlite storage, same layout)."""
    path.mkdir(parents=True, exist_ok=True)
    profile = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())
    if not pooled:
        profile.pop("storage")
    (path / "dagster.yaml").write_text(yaml.safe_dump(profile))
    return path


def _instance(home: Path) -> dg.DagsterInstance:
    return dg.DagsterInstance.from_config(str(home))


def _materialize(instance: dg.DagsterInstance, day: str) -> dg.ExecuteInProcessResult:
    result = dg.materialize([landed, landed_is_sound], instance=instance, partition_key=day)
    assert result.success
    return result


def _picture(instance: dg.DagsterInstance) -> dict:
    """What a user sees of the instance: runs, every event of each, materialized partitions, check results."""
    runs = instance.get_runs()
    return {
        "runs": sorted((r.run_id, r.status.value, r.tags.get("dagster/partition")) for r in runs),
        "events": {
            r.run_id: [(e.dagster_event_type, e.user_message) for e in instance.all_logs(r.run_id)] for r in runs
        },
        "partitions": sorted(instance.get_materialized_partitions(dg.AssetKey("landed"))),
        "check": instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [dg.AssetCheckKey(dg.AssetKey("landed"), "landed_is_sound")]
        )[dg.AssetCheckKey(dg.AssetKey("landed"), "landed_is_sound")].status.value,
    }


def test_the_repos_profile_selects_the_pooled_storage_in_dagsters_layout(tmp_path):
    home = _home(tmp_path / "home", pooled=True)
    with _instance(home) as instance:
        assert isinstance(instance.run_storage, PooledSqliteRunStorage)
        assert isinstance(instance.event_log_storage, PooledSqliteEventLogStorage)
        assert isinstance(instance.schedule_storage, PooledSqliteScheduleStorage)
        result = _materialize(instance, "2026-01-02")
    # Dagster's own layout under DAGSTER_HOME: runs.db, one file per run beside the index, schedules.db.
    assert (home / "history" / "runs.db").is_file()
    assert (home / "history" / "runs" / f"{result.run_id}.db").is_file()
    assert (home / "history" / "runs" / "index.db").is_file()
    assert (home / "schedules" / "schedules.db").is_file()


def test_a_home_reads_the_same_through_either_storage_and_either_can_go_on_writing_it(tmp_path):
    default_home = _home(tmp_path / "home", pooled=False)
    with _instance(default_home) as instance:
        assert type(instance.event_log_storage).__name__ == "SqliteEventLogStorage"
        _materialize(instance, "2026-01-01")
        written_by_dagster = _picture(instance)
    pooled_home = _home(tmp_path / "home", pooled=True)
    with _instance(pooled_home) as instance:
        assert _picture(instance) == written_by_dagster
        _materialize(instance, "2026-01-02")
        written_by_both = _picture(instance)
    with _instance(_home(tmp_path / "home", pooled=False)) as instance:
        assert _picture(instance) == written_by_both
    assert written_by_both["partitions"] == ["2026-01-01", "2026-01-02"]
    assert len(written_by_both["runs"]) == 2 and written_by_both["check"] == "SUCCEEDED"
    # 25 log lines per run, each stored once: a storage that dropped or doubled one would differ.
    for events in written_by_both["events"].values():
        assert sum(1 for _, message in events if message.startswith("line ")) == 25


def test_one_engine_per_database_and_only_the_newest_runs_keep_theirs(tmp_path, monkeypatch):
    created: list[str] = []
    real_engine = instance_storage._engine

    def counting_engine(conn_string):
        created.append(conn_string)
        return real_engine(conn_string)

    monkeypatch.setattr(instance_storage, "_engine", counting_engine)
    with _instance(_home(tmp_path / "home", pooled=True)) as instance:
        storage = instance.event_log_storage
        created.clear()
        run_ids = [_materialize(instance, day).run_id for day in ("2026-01-01", "2026-01-02", "2026-01-03")]
        # Each run wrote about 70 events; each database got one engine, not one per statement.
        databases = {c.rsplit("/", 1)[-1] for c in created}
        assert len(created) == len(databases), created
        assert {f"{run_id}.db" for run_id in run_ids} <= databases
        # Past RUN_ENGINES_KEPT run files, the oldest engine goes; the index keeps its own.
        for _ in range(RUN_ENGINES_KEPT + 2):
            run_ids.append(_materialize(instance, "2026-01-03").run_id)
        cache = storage._engine_cache  # noqa: SLF001
        assert len(cache) == RUN_ENGINES_KEPT + 1
        # An evicted run's file still reads every event: its engine is made again.
        first_run_lines = [e for e in instance.all_logs(run_ids[0]) if e.user_message.startswith("line ")]
        assert len(first_run_lines) == 25
        assert len(cache) == RUN_ENGINES_KEPT + 1


def _pragmas(engine) -> tuple[str, int]:
    with engine.connect() as conn:
        return (
            conn.exec_driver_sql("PRAGMA journal_mode").scalar(),
            conn.exec_driver_sql("PRAGMA synchronous").scalar(),
        )


def test_every_kept_connection_to_a_wal_file_syncs_at_checkpoints_and_others_keep_full(tmp_path):
    """synchronous=NORMAL (1) only where Dagster put the file in WAL, including the connection that created
    the file before WAL was set; sqlite's default FULL (2) anywhere else."""
    with _instance(_home(tmp_path / "home", pooled=True)) as instance:
        run_id = _materialize(instance, "2026-01-01").run_id
        engines = instance.event_log_storage._engine_cache._engines  # noqa: SLF001
        assert set(engines) >= {run_id, "index"}
        kept = [*engines.values(), instance.run_storage._engine_cache._engines["db"]]  # noqa: SLF001
        kept.append(instance.schedule_storage._engine_cache._engines["db"])  # noqa: SLF001
        assert [_pragmas(engine) for engine in kept] == [("wal", 1)] * len(kept)
        # Every event of the run was stored and reads back (25 log lines).
        assert sum(e.user_message.startswith("line ") for e in instance.all_logs(run_id)) == 25
    plain = instance_storage._engine(f"sqlite:///{tmp_path / 'plain.db'}")
    try:
        assert _pragmas(plain) == ("delete", 2)
        with plain.connect() as conn:  # the same pooled connection, once the file is in WAL
            conn.exec_driver_sql("PRAGMA journal_mode=WAL")
        assert _pragmas(plain) == ("wal", 1)
    finally:
        plain.dispose()


def _write_lines(home: str, run_id: str, start: int, count: int) -> None:
    with dg.DagsterInstance.from_config(home) as instance:
        for i in range(start, start + count):
            instance.event_log_storage.store_event(_log_entry(run_id, i))


def _log_entry(run_id: str, i: int):
    from dagster._core.events.log import EventLogEntry

    return EventLogEntry(
        error_info=None,
        level=20,
        user_message=f"event {i:05d}",
        run_id=run_id,
        timestamp=time.time(),
        job_name="writers",
        step_key="s",
    )


def test_two_processes_writing_one_run_at_once_lose_no_event(tmp_path):
    home = str(_home(tmp_path / "home", pooled=True))
    run_id = "shared-run"
    with _instance(Path(home)) as instance:
        instance.event_log_storage.store_event(_log_entry(run_id, 0))  # both writers find the file made
        writer = subprocess.Popen(
            [
                sys.executable,
                "-c",
                f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r});"
                f"from test_instance_storage import _write_lines; _write_lines({home!r}, {run_id!r}, 1000, 400)",
            ],
            cwd=REPO_ROOT,
        )
        for i in range(1, 401):
            instance.event_log_storage.store_event(_log_entry(run_id, i))
        assert writer.wait(timeout=120) == 0
        messages = sorted(e.user_message for e in instance.all_logs(run_id))
    expected = sorted([f"event {i:05d}" for i in range(0, 401)] + [f"event {i:05d}" for i in range(1000, 1400)])
    assert messages == expected


def _child_writes(storage: PooledSqliteEventLogStorage, run_id: str, parents_engine_id: int, queue) -> None:
    storage.store_event(_log_entry(run_id, 2))
    engines = storage._engine_cache._engines  # noqa: SLF001
    # The inherited engine object keeps its id in the child: a new id is an engine the child made.
    queue.put((len(engines), id(engines[run_id]) != parents_engine_id))


def test_a_forked_child_makes_its_own_engines_and_leaves_the_parents_working(tmp_path):
    storage = PooledSqliteEventLogStorage(str(tmp_path / "events"))
    run_id = "forked-run"
    storage.store_event(_log_entry(run_id, 1))
    parents_engine = storage._engine_cache._engines[run_id]  # noqa: SLF001
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child_writes, args=(storage, run_id, id(parents_engine), queue))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0
    assert queue.get(timeout=5) == (1, True)  # the child held only an engine it made, for this run
    # The parent's engine is the one it had, and its connection still works after the child exited.
    storage.store_event(_log_entry(run_id, 3))
    assert storage._engine_cache._engines[run_id] is parents_engine  # noqa: SLF001
    assert [e.user_message for e in storage.get_logs_for_run(run_id)] == ["event 00001", "event 00002", "event 00003"]


def test_wipe_disposes_the_run_engines_before_deleting_their_files(tmp_path):
    home = _home(tmp_path / "home", pooled=True)
    with _instance(home) as instance:
        run_id = _materialize(instance, "2026-01-01").run_id
        instance.event_log_storage.wipe()
        assert not (home / "history" / "runs" / f"{run_id}.db").exists()
        assert not instance.all_logs(run_id)
        # The storage goes on: a new run writes a fresh file through a new engine.
        again = _materialize(instance, "2026-01-02").run_id
        assert len([e for e in instance.all_logs(again) if e.user_message.startswith("line ")]) == 25
    assert os.path.exists(home / "history" / "runs" / "index.db")


def test_dagster_takes_the_same_sqlite_paths_with_either_storage(tmp_path):
    # Dagster special-cases sqlite storage (run-sharded event queries, what it supports): the pooled storage
    # must answer every such question as Dagster's own does.
    pooled = PooledSqliteStorage.from_local(str(tmp_path / "pooled"))
    dagsters = DagsterSqliteStorage.from_local(str(tmp_path / "dagster"))
    assert isinstance(pooled, DagsterSqliteStorage)
    questions = [
        "is_run_sharded",
        "supports_global_concurrency_limits",
        "is_persistent",
        "supports_asset_checks",
        "supports_partition_subset_in_asset_materialization_planned_events",
        "supports_run_status_change_job_name_filter",
    ]
    answers = {q: getattr(pooled.event_log_storage, q) for q in questions}
    assert answers == {q: getattr(dagsters.event_log_storage, q) for q in questions}
    assert answers["is_run_sharded"] is True
    assert pooled.run_storage.supports_bucket_queries == dagsters.run_storage.supports_bucket_queries
    assert pooled.schedule_storage.supports_batch_queries == dagsters.schedule_storage.supports_batch_queries


@pytest.mark.parametrize("pooled", [True, False], ids=["pooled", "dagster"])
def test_the_cli_runs_a_job_on_the_profile(tmp_path, pooled):
    """`dagster` itself (the CLI the UI and CI use) loads the profile and runs a job on it."""
    home = _home(tmp_path / "home", pooled=pooled)
    module = tmp_path / "tiny_defs.py"
    module.write_text(
        "import dagster as dg\n"
        "@dg.asset\n"
        "def tiny(context):\n"
        "    context.log.info('tiny ran')\n"
        "    return 1\n"
        "defs = dg.Definitions(assets=[tiny], jobs=[dg.define_asset_job('tiny_job', [tiny])])\n"
    )
    env = {**os.environ, "DAGSTER_HOME": str(home), "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO_ROOT}"}
    done = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "job", "execute", "-m", "tiny_defs", "-j", "tiny_job"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    with _instance(home) as instance:
        (run,) = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.SUCCESS
        assert any(e.user_message == "tiny ran" for e in instance.all_logs(run.run_id))
        assert type(instance.event_log_storage).__name__ == (
            "PooledSqliteEventLogStorage" if pooled else "SqliteEventLogStorage"
        )
