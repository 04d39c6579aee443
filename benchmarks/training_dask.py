"""The candidate's training on Dask (xgboost.dask) with 1, 2 and 4 workers, beside the same fit in this process
(issue 18, past one machine).

Each leg runs in a fresh process on the same table: `fit_from_warehouse` with the asset's XGBoost defaults,
early stopping on validation, no refit (the refit repeats the same work on every row), the training rows read
from DuckDB in batches either way:
  in_process   the batches into one QuantileDMatrix here (what fraud_model_candidate does above 2M rows)
  dask_N       the batches staged for a LocalCluster of N worker processes, one thread each
A sampler adds up the RSS of the leg's process and every child (the workers) every 200 ms: the peak of the
whole tree, since the rows now live in the workers. On this 2-core machine more than 2 workers cannot run at
once, so the legs show the overhead and the memory split, not the speed-up a cluster of machines would give.

Data: the first --rows rows (in time) of the labelled 10M training set benchmarks/training_memory.py prepares,
copied into their own file with the splits recut 70/15/15.

    .venv/bin/python benchmarks/training_dask.py --rows 2000000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import psutil

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORK = HERE / ".work" / "training_dask"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

from results import record, row, show  # noqa: E402

from mlops_core.features.offline import DEFAULT_WAREHOUSE_MEMORY  # noqa: E402
from mlops_core.training.candidates import DaskEngine, fit_from_warehouse  # noqa: E402
from mlops_core.warehouse import memory_limit  # noqa: E402

TABLE = "features.training_set"


def prepare(source_db: Path, db: Path, rows: int) -> None:
    if db.exists():
        return
    con = duckdb.connect(str(db))
    try:
        con.execute(f"attach '{source_db}' as source (read_only)")
        con.execute("create schema features")
        con.execute(
            f"""
create table {TABLE} as
with first_rows as (
    select * exclude (split) from source.features.training_set_labelled
    order by event_timestamp, transaction_id limit {int(rows)}
),
numbered as (select *, row_number() over (order by event_timestamp, transaction_id) as position from first_rows)
select * exclude (position),
    case when position <= {int(rows * 0.7)} then 'train'
         when position <= {int(rows * 0.85)} then 'validation' else 'test' end as split
from numbered
"""
        )
    finally:
        con.close()


class TreePeak:
    """The peak of the summed RSS of this process and all its descendants, sampled every 200 ms."""

    def __init__(self) -> None:
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.wait(0.2):
            total = 0
            for process in [me, *me.children(recursive=True)]:
                try:
                    total += process.memory_info().rss
                except psutil.Error:
                    pass
            self.peak_mb = max(self.peak_mb, total / 2**20)

    def __enter__(self) -> TreePeak:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def leg(db: Path, workers: int, out: Path) -> None:
    con = duckdb.connect(str(db), read_only=True)
    dask = DaskEngine(workers=workers, staging_dir=str(WORK)) if workers else None
    started = time.perf_counter()
    with TreePeak() as peak, memory_limit(con, DEFAULT_WAREHOUSE_MEMORY):
        trained, _ = fit_from_warehouse(con, TABLE, "bench", refit=False, dask=dask)
    seconds = time.perf_counter() - started
    train_rows = con.execute(f"select count(*) from {TABLE} where split = 'train'").fetchone()[0]
    con.close()
    out.write_text(
        json.dumps(
            {
                "workers": workers,
                "seconds": seconds,
                "peak_tree_rss_mb": peak.peak_mb,
                "train_rows": train_rows,
                "best_iteration": trained.best_iteration,
                "validation_auc_pr": trained.validation_metrics["auc_pr"],
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--source-db", type=Path, default=HERE / ".work" / "keep10m.duckdb")
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--workers", default="0,1,2,4", help="0 = in this process (the peer)")
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument("--leg", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out-json", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.leg is not None:
        leg(args.db, args.leg, Path(args.out_json))
        return
    WORK.mkdir(parents=True, exist_ok=True)
    db = WORK / f"rows{args.rows}.duckdb"
    prepare(args.source_db, db, args.rows)
    results = {}
    for workers in (int(w) for w in args.workers.split(",")):
        out = WORK / f"workers{workers}.json"
        argv = [sys.executable, __file__, "--leg", str(workers), "--db", str(db), "--out-json", str(out)]
        subprocess.run(argv, check=True)
        results[workers] = json.loads(out.read_text())
        r = results[workers]
        print(
            f"{'in process' if not workers else f'{workers} dask worker(s)'}: {r['seconds']:.1f} s, "
            f"peak (process tree) {r['peak_tree_rss_mb']:,.0f} MB, best iteration {r['best_iteration']}, "
            f"validation AUC-PR {r['validation_auc_pr']:.4f}",
            flush=True,
        )
    peer = results.get(0)
    out_rows = [
        row(
            f"training_dask_{workers}_workers_{args.rows // 1000}k_rows",
            ours=r["seconds"],
            peer=peer["seconds"] if peer else None,
            peer_name="the same fit in batches in one process, same run" if peer else None,
            ratio="ours/peer",
            meaning="times the in-process fit's wall time (a LocalCluster on 2 cores: overhead, not speed-up)",
            unit="s",
            goal=None,
            met=None,
            details={
                "workers": workers,
                "train_rows": r["train_rows"],
                "peak_tree_rss_mb": round(r["peak_tree_rss_mb"]),
                "peak_tree_rss_mb_in_process": round(peer["peak_tree_rss_mb"]) if peer else None,
                "best_iteration": r["best_iteration"],
                "validation_auc_pr": r["validation_auc_pr"],
                "validation_auc_pr_in_process": peer["validation_auc_pr"] if peer else None,
                "cpus": os.cpu_count(),
                "load_average_at_end": os.getloadavg(),
            },
        )
        for workers, r in results.items()
        if workers
    ]
    if not args.no_record:
        record(out_rows)
    show(out_rows)


if __name__ == "__main__":
    main()
