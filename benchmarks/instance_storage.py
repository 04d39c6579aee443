"""The embedded instance's storage (resources/instance_storage.py, engines kept) against Dagster's own sqlite
storage, on the same job in the same process, interleaved.

Usage:
  .venv/bin/python benchmarks/instance_storage.py [--repeats 7] [--partitions 4] [--log-lines 50]

Each repeat, for each storage in turn: a fresh DAGSTER_HOME holding the repo's dagster.yaml (pooled) or the
same file without its `storage` block (Dagster's default sqlite storage, same layout), then one run per
partition of a daily-partitioned asset that writes --log-lines log lines, with a blocking asset check, as the
data layer's runs do. Measured: the process's CPU time and the wall time of those runs, and the events they
stored (the same count for both, or the benchmark stops).

Row: `dagster_instance_cpu_pooled_vs_sqlite` (median CPU seconds, ours = pooled, peer = Dagster's storage). No
goal of its own: it is a cause of the test suite's time (issue 18, `make test` under 10 minutes).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import dagster as dg
import yaml
from results import common, record, row, show

ROOT = Path(__file__).resolve().parents[1]


def _defs(log_lines: int, partitions: int):
    days = dg.DailyPartitionsDefinition(start_date="2026-01-01", end_offset=0, end_date=f"2026-01-{partitions + 1:02d}")

    @dg.asset(partitions_def=days)
    def landed(context) -> int:
        for i in range(log_lines):
            context.log.info(f"line {i} of {context.partition_key}")
        return 1

    @dg.asset_check(asset=landed, blocking=True)
    def landed_is_sound() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=True)

    return [landed, landed_is_sound], days.get_partition_keys()


def one_home(pooled: bool, assets, keys: list[str]) -> tuple[float, float, int]:
    home = Path(tempfile.mkdtemp(prefix="instance-storage-"))
    try:
        profile = yaml.safe_load((ROOT / "dagster.yaml").read_text())
        if not pooled:
            profile.pop("storage")
        (home / "dagster.yaml").write_text(yaml.safe_dump(profile))
        os.environ["DAGSTER_HOME"] = str(home)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        with dg.DagsterInstance.get() as instance:
            kind = type(instance.event_log_storage).__name__
            assert kind == ("PooledSqliteEventLogStorage" if pooled else "SqliteEventLogStorage"), kind
            run_ids = []
            for key in keys:
                result = dg.materialize(assets, instance=instance, partition_key=key, raise_on_error=True)
                run_ids.append(result.run_id)
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
            events = sum(len(instance.all_logs(run_id)) for run_id in run_ids)
        return cpu, wall, events
    finally:
        shutil.rmtree(home, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--log-lines", type=int, default=50)
    args = parser.parse_args()
    assets, keys = _defs(args.log_lines, args.partitions)
    one_home(True, assets, keys[:1])  # warm-up: imports and first-use costs, for neither side
    measured: dict[bool, list[tuple[float, float, int]]] = {True: [], False: []}
    for _ in range(args.repeats):
        for pooled in (False, True):
            measured[pooled].append(one_home(pooled, assets, keys))
    events = {pooled: {m[2] for m in runs} for pooled, runs in measured.items()}
    if events[True] != events[False] or len(events[True]) != 1:
        raise SystemExit(f"the storages stored different events: pooled {events[True]}, Dagster's {events[False]}")
    cpu = {pooled: [m[0] for m in runs] for pooled, runs in measured.items()}
    wall = {pooled: [m[1] for m in runs] for pooled, runs in measured.items()}
    (event_count,) = events[True]
    rounded = lambda values: [round(v, 3) for v in values]  # noqa: E731
    rows = [
        row(
            "dagster_instance_cpu_pooled_vs_sqlite",
            ours=round(statistics.median(cpu[True]), 3),
            peer=round(statistics.median(cpu[False]), 3),
            peer_name="Dagster's sqlite storage (engine per statement), the same runs in the same process, interleaved",
            ratio="peer/ours",
            meaning="times less CPU for the same runs",
            unit="s",
            goal=None,
            met=None,
            details={
                "repeats": args.repeats,
                "runs_per_repeat": len(keys),
                "events_per_repeat": event_count,
                "log_lines_per_run": args.log_lines,
                "cpu_s_pooled": rounded(cpu[True]),
                "cpu_s_dagster": rounded(cpu[False]),
                "wall_median_s_pooled": round(statistics.median(wall[True]), 3),
                "wall_median_s_dagster": round(statistics.median(wall[False]), 3),
                "cpu_ms_per_event_pooled": round(1000 * statistics.median(cpu[True]) / event_count, 3),
                "cpu_ms_per_event_dagster": round(1000 * statistics.median(cpu[False]) / event_count, 3),
                "load_average_1min_at_end": round(os.getloadavg()[0], 2),
            },
            shared=common(),
        )
    ]
    record(rows)
    show(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
