"""Peak memory of the point-in-time training-set build as the history grows (issue 18, bounded memory).

For each size (default 1M, 10M and 30M transactions, a year of them over rows/100 accounts, synthesized
straight into the marts as benchmarks/feature_store.py does), two builds run, each in a fresh process so
its peak RSS is its own:
  ours   build_training_set with the automatic slice count (one account-hash slice per 2M events)
  peer   the same build in one pass (slices=1): what the platform did before, run side by side
The peer is skipped above --peer-max-rows (one pass at 30M would need about 35 GB: 11.7 GB at 10M).
Both tables are compared (row count, and every windowed feature's sum to 1e-9) so a faster or leaner build
that changes a value does not count.

    .venv/bin/python benchmarks/memory.py                       # 1M, 10M, 30M (about 25 min here)
    .venv/bin/python benchmarks/memory.py --rows 1000000         # one size
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORK = HERE / ".work" / "memory"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

from feature_store import _cutoff, synthesize  # noqa: E402
from results import record, row, show  # noqa: E402

from mlops_core.features import offline, spec  # noqa: E402

WINDOWED = [f.name for f in spec.WINDOWED_FEATURES]
GOAL_MB = 4096


def rss_mb() -> float:
    """This process's resident set now (ru_maxrss gives only the peak of the whole process)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class StepTrace:
    """The peak RSS of each step of the build, sampled every 50 ms by a thread: which step holds the peak."""

    def __init__(self) -> None:
        self.peaks: dict[str, float] = {}
        self.current = "connect"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def step(self, name: str) -> None:
        self.current = name

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self.peaks[self.current] = max(self.peaks.get(self.current, 0.0), rss_mb())

    def __enter__(self) -> StepTrace:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def leg(db: Path, slices: int | None, out_json: Path, warehouse_memory: str | None) -> None:
    con = duckdb.connect(str(db))
    con.execute("set TimeZone='UTC'")
    training_spec = offline.TrainingSetSpec(cutoff=_cutoff())
    chosen = slices or offline.slices_for(con, training_spec)
    table = f"features.training_set_{'sliced' if slices is None else 'one_pass'}"
    started = time.perf_counter()
    with StepTrace() as trace:
        summary = offline.build_training_set(
            con, training_spec, target=table, slices=chosen, warehouse_memory=warehouse_memory, on_step=trace.step
        )
    seconds = time.perf_counter() - started
    sums = con.execute(f"select {', '.join(f'sum({name})' for name in WINDOWED)} from {table}").fetchone()
    con.close()
    out_json.write_text(
        json.dumps(
            {
                "slices": chosen,
                "seconds": seconds,
                "rows": summary.rows,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "feature_sums": [float(v) for v in sums],
                "warehouse_memory": warehouse_memory,
                # Slices are folded into one entry: the largest slice's peak.
                "peak_rss_mb_by_step": _fold_slices(trace.peaks),
            }
        )
    )


def _fold_slices(peaks: dict[str, float]) -> dict[str, float]:
    folded: dict[str, float] = {}
    for name, mb in peaks.items():
        key = "slices" if name.startswith("slice ") else name
        folded[key] = round(max(folded.get(key, 0.0), mb), 1)
    return folded


def run_leg(db: Path, slices: int | None, warehouse_memory: str | None) -> dict:
    out = WORK / f"{db.stem}-{'auto' if slices is None else slices}-{warehouse_memory or 'default'}.json"
    argv = [sys.executable, __file__, "--leg", str(db), "--out-json", str(out)]
    if slices is not None:
        argv += ["--slices", str(slices)]
    argv += ["--warehouse-memory", warehouse_memory or "none"]
    subprocess.run(argv, check=True)
    return json.loads(out.read_text())


def same_values(a: dict, b: dict) -> bool:
    return a["rows"] == b["rows"] and all(
        abs(x - y) <= 1e-9 * max(1.0, abs(y)) for x, y in zip(a["feature_sums"], b["feature_sums"])
    )


def fixed_buckets(args) -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    out_rows = []
    for rows in (int(r) for r in args.rows.split(",")):
        db = WORK / f"tx{rows}.duckdb"
        if not db.exists():
            synthesize(db, rows, accounts=max(1000, rows // 100))
        legs = {n: run_leg(db, n, args.warehouse_memory) for n in (int(b) for b in args.fixed_buckets.split(","))}
        first = legs[min(legs)]
        for n, result in legs.items():
            print(
                f"{rows:,} in {n} bucket(s): {result['seconds']:.1f} s, peak {result['peak_rss_mb']:,.0f} MB, "
                f"by step {result['peak_rss_mb_by_step']}, same values as {min(legs)}: {same_values(result, first)}",
                flush=True,
            )
            out_rows.append(
                row(
                    f"memory_training_set_build_{rows}_rows_{n}_buckets",
                    ours=result["peak_rss_mb"],
                    peer=first["peak_rss_mb"],
                    peer_name=f"the same build in {min(legs)} bucket(s), same run",
                    ratio="peer/ours",
                    meaning=f"times less memory than {min(legs)} bucket(s)",
                    unit="MB peak RSS",
                    goal=None,
                    met=None,
                    details={
                        "buckets": n,
                        "seconds": round(result["seconds"], 1),
                        "seconds_in_fewest_buckets": round(first["seconds"], 1),
                        "peak_rss_mb_by_step": result["peak_rss_mb_by_step"],
                        "warehouse_memory": result["warehouse_memory"],
                        "same_values": same_values(result, first),
                        "load_average_at_end": os.getloadavg(),
                    },
                )
            )
        db.unlink()
    record(out_rows)
    show(out_rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", default="1000000,10000000,30000000")
    parser.add_argument("--peer-max-rows", type=int, default=10_000_000)
    parser.add_argument("--leg", help=argparse.SUPPRESS)
    parser.add_argument("--slices", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out-json", help=argparse.SUPPRESS)
    parser.add_argument(
        "--warehouse-memory",
        default=offline.DEFAULT_WAREHOUSE_MEMORY,
        help="DuckDB's memory limit for the sliced build (the asset's default); the one-pass peer keeps DuckDB's own",
    )
    parser.add_argument(
        "--fixed-buckets",
        default="",
        help="e.g. 1,2,4: instead of the automatic count against one pass, build each size with each of these "
        "bucket counts (same DuckDB limit) and record a row per count: how per-bucket memory and time scale",
    )
    args = parser.parse_args()
    if args.fixed_buckets and not args.leg:
        fixed_buckets(args)
        return
    if args.leg:
        leg(
            Path(args.leg),
            args.slices,
            Path(args.out_json),
            None if args.warehouse_memory == "none" else args.warehouse_memory,
        )
        return
    WORK.mkdir(parents=True, exist_ok=True)
    results = {}
    for rows in (int(r) for r in args.rows.split(",")):
        db = WORK / f"tx{rows}.duckdb"
        if not db.exists():
            started = time.perf_counter()
            synthesize(db, rows, accounts=max(1000, rows // 100))
            print(f"{rows:,} rows synthesized in {time.perf_counter() - started:.0f} s", flush=True)
        ours = run_leg(db, None, args.warehouse_memory)
        peer = run_leg(db, 1, None) if rows <= args.peer_max_rows else None
        results[rows] = {"ours": ours, "peer": peer, "same_values": None if peer is None else same_values(ours, peer)}
        print(
            f"{rows:,}: sliced ({ours['slices']} slices, DuckDB limit {ours['warehouse_memory']}) {ours['seconds']:.1f} s, "
            f"peak {ours['peak_rss_mb']:,.0f} MB, by step {ours['peak_rss_mb_by_step']}"
            + (
                f"; one pass {peer['seconds']:.1f} s, peak {peer['peak_rss_mb']:,.0f} MB; same values: "
                f"{results[rows]['same_values']}"
                if peer
                else "; one pass not run"
            ),
            flush=True,
        )
        db.unlink()  # the next size needs the disk; a re-run synthesizes again (seconds per million rows)
    (WORK / "summary.json").write_text(json.dumps({str(k): v for k, v in results.items()}, indent=2))
    out_rows = []
    for rows, r in results.items():
        ours, peer = r["ours"], r["peer"]
        out_rows.append(
            row(
                f"memory_training_set_build_{rows}_rows",
                ours=ours["peak_rss_mb"],
                peer=peer["peak_rss_mb"] if peer else None,
                peer_name="the same build in one pass (slices=1), same run" if peer else None,
                ratio="peer/ours",
                meaning="times less memory the sliced build takes",
                unit="MB peak RSS",
                goal=f"peak under {GOAL_MB // 1024} GB, the same values as one pass",
                met=ours["peak_rss_mb"] < GOAL_MB and r["same_values"] is not False,
                details={
                    "slices": ours["slices"],
                    "rows_out": ours["rows"],
                    "seconds_sliced": round(ours["seconds"], 2),
                    "seconds_one_pass": round(peer["seconds"], 2) if peer else None,
                    "same_values": r["same_values"],
                    "warehouse_memory": ours["warehouse_memory"],
                    "peak_rss_mb_by_step": ours["peak_rss_mb_by_step"],
                    "cpus": os.cpu_count(),
                    "load_average_at_end": os.getloadavg(),
                },
            )
        )
    record(out_rows)
    show(out_rows)
    medians = [r["ours"]["peak_rss_mb"] for r in results.values()]
    print(f"peak RSS (sliced) by size: {medians}; median {statistics.median(medians):,.0f} MB")


if __name__ == "__main__":
    main()
