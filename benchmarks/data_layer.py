"""Data-layer benchmark: ~10M transactions through ingestion, validation and dbt marts.

Usage: .venv/bin/python benchmarks/data_layer.py [--days 365] [--rows-per-day 27400]

Measures, in one run on the same generated landing zone:
  ours  - the data_layer_job (pandera gates, quarantine, load log, dbt build), in process
  floor - the peer: DuckDB reading the same files with no validation at all, then the same dbt build
Each leg runs in a fresh child process so its peak RSS is its own; dbt's own peak is
reported from its child process. Rows go to benchmarks/results.json; RESULTS.md is written by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

from results import common, record, row, show

HERE = Path(__file__).resolve().parent
# Its own folder: the run starts by removing it, and the other benchmarks keep their state beside it.
WORK = HERE / ".work" / "data_layer"


def _tree_rss_bytes(root: int) -> int:
    """Resident memory of a process and all its descendants, from /proc (Linux)."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            parents[int(entry.name)] = int(fields[1])
            rss[int(entry.name)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        children = [p for p, pp in parents.items() if pp == pid]
        tree.update(children)
        frontier.extend(children)
    return sum(rss.get(pid, 0) for pid in tree)


def _peak_mb(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024


def leg_ours(first: str, last: str) -> dict:
    from mlops_cli.common import run_data_layer
    from mlops_core.local_state import prepare_instance
    from mlops_core.settings import Settings

    settings = Settings.from_env()
    prepare_instance(settings)
    start = time.perf_counter()
    ok = run_data_layer(date.fromisoformat(first), date.fromisoformat(last))
    return {"ok": ok, "seconds": time.perf_counter() - start}


def leg_floor(first: str, last: str) -> dict:
    """No validation: read every landing file straight into raw tables, then dbt build."""
    import duckdb

    from mlops_core.contracts import SOURCES
    from mlops_core.settings import Settings
    from mlops_core.warehouse import ensure_schema

    settings = Settings.from_env()
    settings.export()
    settings.ensure_dirs()
    start = time.perf_counter()
    with duckdb.connect(str(settings.duckdb_path)) as con:
        ensure_schema(con)
        # Raw tables hold naive UTC; with the session in UTC the cast keeps the instant.
        con.execute("SET TimeZone = 'UTC'")
        for name, contract in SOURCES.items():
            columns = ", ".join(
                f"CAST(CAST({c} AS TIMESTAMPTZ) AS TIMESTAMP)" if contract.dtype_of(c).startswith("datetime64") else c
                for c in contract.columns
            )
            con.execute(
                f"""INSERT INTO raw.{name} SELECT {columns}, CAST(regexp_extract(filename, 'date=([0-9-]+)', 1) AS DATE),
                filename, 0, 'accepted', 'floor', now()::TIMESTAMP
                FROM read_parquet('{settings.landing_dir}/{name}/date=*/*.parquet', filename=true)"""
            )
    load_seconds = time.perf_counter() - start
    dbt = Path(sys.executable).with_name("dbt")
    project = Path(__file__).resolve().parents[1] / "dbt_project"
    subprocess.run(
        [str(dbt), "build", "--project-dir", str(project), "--profiles-dir", str(project), "--quiet"], check=True
    )
    return {"ok": True, "seconds": time.perf_counter() - start, "load_seconds": load_seconds}


def landing_days(days: int) -> tuple[date, date]:
    """The first and last landed day of the benchmark's history: `days` days ending two days before the
    platform's today. Its calendar (fixed unless MLOPS_TODAY says otherwise), not the machine's: the daily
    partitions end at that today, and a machine date past it made the ours leg fail."""
    from mlops_core.settings import Settings

    first = Settings.from_env().today - timedelta(days=days + 1)
    return first, first + timedelta(days=days - 1)


def run_leg(name: str, home: Path, first: str, last: str, data_dir: Path) -> dict:
    """Run one leg in a child process against its own MLOPS_HOME and the shared landing zone."""
    shutil.rmtree(home, ignore_errors=True)
    env = {**os.environ, "MLOPS_HOME": str(home), "MLOPS_DATA_DIR": str(data_dir)}
    for key in ("MLOPS_DUCKDB_PATH", "DAGSTER_HOME"):
        env.pop(key, None)
    # Output goes to files: a pipe that nobody reads while we poll fills up and blocks the leg.
    stdout_path, stderr_path = home.with_suffix(".stdout"), home.with_suffix(".stderr")
    with stdout_path.open("w") as out, stderr_path.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, __file__, "--leg", name, "--first", first, "--last", last], env=env, stdout=out, stderr=err
        )
    # The leg and its dbt child overlap in time: sample the whole tree's RSS, 5 times a second.
    tree_peak = 0
    while proc.poll() is None:
        tree_peak = max(tree_peak, _tree_rss_bytes(proc.pid))
        time.sleep(0.2)
    if proc.returncode != 0:
        raise SystemExit(f"leg {name} failed:\n{stderr_path.read_text()[-4000:]}")
    result = json.loads(stdout_path.read_text().strip().splitlines()[-1])
    result["peak_tree_rss_mb"] = tree_peak / 2**20
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--rows-per-day", type=int, default=27_400)
    parser.add_argument("--repeats", type=int, default=1, help="Runs per leg; medians are reported.")
    parser.add_argument("--legs", default="floor,ours", help="Comma-separated legs to run.")
    parser.add_argument("--leg", choices=["ours", "floor"], help=argparse.SUPPRESS)
    parser.add_argument("--first", help=argparse.SUPPRESS)
    parser.add_argument("--last", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.leg:
        result = (leg_ours if args.leg == "ours" else leg_floor)(args.first, args.last)
        result["peak_rss_mb"] = _peak_mb(resource.RUSAGE_SELF)
        result["peak_rss_children_mb"] = _peak_mb(resource.RUSAGE_CHILDREN)
        print(json.dumps(result))
        return

    from mlops_core.datagen.generator import DemoSpec, generate_landing

    data_dir = WORK / "data"
    shutil.rmtree(WORK, ignore_errors=True)
    first, last = landing_days(args.days)
    start = time.perf_counter()
    summary = generate_landing(
        DemoSpec(start=first, days=args.days, rows_per_day=args.rows_per_day, seed=11), data_dir / "landing"
    )
    generate_seconds = time.perf_counter() - start
    rows = summary.rows
    print(f"generated {rows} in {generate_seconds:.1f} s; peak RSS {_peak_mb(resource.RUSAGE_SELF):.0f} MB")

    legs = args.legs.split(",")
    results = {leg: [] for leg in legs}
    for _ in range(args.repeats):
        for leg in legs:
            outcome = run_leg(leg, WORK / f"home_{leg}", first.isoformat(), last.isoformat(), data_dir)
            results[leg].append(outcome)
            print(leg, outcome)
    total_rows = sum(rows.values())
    for leg, runs in results.items():
        seconds = sorted(r["seconds"] for r in runs)[len(runs) // 2]
        peak = max(r["peak_rss_mb"] for r in runs)
        child = max(r["peak_rss_children_mb"] for r in runs)
        tree = max(r["peak_tree_rss_mb"] for r in runs)
        print(
            f"{leg:6s} median {seconds:6.1f} s  {total_rows / seconds:>10,.0f} rows/s  "
            f"peak RSS {peak:,.0f} MB (dbt child {child:,.0f} MB, whole tree {tree:,.0f} MB)"
        )
    if {"ours", "floor"} <= set(results):
        rows = result_rows(results, total_rows, args)
        record(rows)
        show(rows)


def result_rows(results: dict[str, list[dict]], total_rows: int, args: argparse.Namespace) -> list[dict]:
    """Time and peak memory of ours beside the no-validation floor, medians (time) and maxima (memory) of the runs."""
    shared = common()
    seconds = {leg: statistics.median(r["seconds"] for r in runs) for leg, runs in results.items()}
    tree = {leg: max(r["peak_tree_rss_mb"] for r in runs) for leg, runs in results.items()}
    details = {
        "days": args.days,
        "rows_per_day": args.rows_per_day,
        "landed_rows": total_rows,
        "repeats": args.repeats,
        **{f"{leg}_runs_s": [r["seconds"] for r in runs] for leg, runs in results.items()},
        **{f"{leg}_peak_rss_mb": max(r["peak_rss_mb"] for r in runs) for leg, runs in results.items()},
        **{
            f"{leg}_peak_rss_children_mb": max(r["peak_rss_children_mb"] for r in runs) for leg, runs in results.items()
        },
    }
    floor = "DuckDB read_parquet of the same files, no validation, no Dagster, then the same dbt build"
    return [
        row(
            "data_layer_year_seconds",
            ours=seconds["ours"],
            peer=seconds["floor"],
            peer_name=floor,
            ratio="ours/peer",
            meaning="times the floor's time",
            unit="s",
            goal="10M rows in under 2 minutes (ingestion, validation and dbt marts)",
            met=seconds["ours"] < 120,
            details=details,
            shared=shared,
        ),
        row(
            "data_layer_year_peak_memory",
            ours=tree["ours"],
            peer=tree["floor"],
            peer_name=floor + " (whole process tree)",
            ratio="ours/peer",
            meaning="times the floor's peak",
            unit="MB",
            goal="under 4 GB peak memory (whole process tree)",
            met=tree["ours"] < 4096,
            details=details,
            shared=shared,
        ),
    ]


if __name__ == "__main__":
    main()
