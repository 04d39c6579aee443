"""Peak memory of training the fraud candidate on a large training set: in batches from the warehouse against the
in-memory path, side by side (issue 18, bounded memory).

Two legs, each in a fresh process so its peak RSS is its own, on the same table, both with the asset's defaults
(XGBoost config defaults, refit on every row after early stopping):
  ours   candidates.fit_from_warehouse: the training rows read from DuckDB in batches into XGBoost's quantized
         matrix, DuckDB limited to in_batches.READ_MEMORY (what fraud_model_candidate does above
         2M training rows)
  peer   read_training_set + candidates.fit: the whole table as one pandas frame (what the asset did before)
Same values: the best iteration, the validation AUC-PR and the largest difference between the two registered
models' scores on the test split (the quantile sketch is merged per batch on large data, so trees may differ
slightly; on small data they are identical, tests/test_training/test_in_batches.py).

Data: a training-set table in a DuckDB file, e.g. the 10M-transaction one benchmarks/memory.py builds
(features.training_set_sliced). Its synthetic labels are random, so they are drawn again, once, from the
logistic function benchmarks/training.py uses (a signal to learn, about 1% fraud) into
features.training_set_labelled, which both legs read.

    .venv/bin/python benchmarks/training_memory.py --db benchmarks/.work/keep10m.duckdb
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORK = HERE / ".work" / "training_memory"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

from results import record, row, show  # noqa: E402

from mlops_core.features.offline import read_training_set  # noqa: E402
from mlops_core.training import in_batches, matrix  # noqa: E402
from mlops_core.training.candidates import fit, fit_from_warehouse  # noqa: E402
from mlops_core.warehouse import memory_limit  # noqa: E402

TABLE = "features.training_set_labelled"
GOAL_MB = 4096
LABELS = """
create or replace table features.training_set_labelled as
select * replace (
    random() < 1 / (1 + exp(-(-7.6 + 0.9 * least(txn_count_1h, 4) + 1.6 * is_foreign + 0.9 * is_online
                             + 0.7 * (hour_of_day between 0 and 5)::int + 0.4 * least(amount_to_mean_30d, 5))))
    as is_fraud)
from {source}
"""


def prepare(db: Path, source: str) -> None:
    con = duckdb.connect(str(db))
    try:
        if con.execute(
            "select count(*) from duckdb_tables() where schema_name = 'features' and table_name = 'training_set_labelled'"
        ).fetchone()[0]:
            return
        con.execute("select setseed(0.42)")
        con.execute(LABELS.format(source=source))
    finally:
        con.close()


def leg(db: Path, kind: str, out: Path, warehouse_memory: str) -> None:
    con = duckdb.connect(str(db), read_only=True)
    started = time.perf_counter()
    if kind == "in_batches":
        with memory_limit(con, warehouse_memory):
            trained, _ = fit_from_warehouse(con, TABLE, "bench", refit=True)
    else:
        frame = read_training_set(con, TABLE)
        trained = fit(frame, "xgboost", "bench", refit=True)
        del frame
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows, train_rows = con.execute(f"select count(*), count(*) filter (split = 'train') from {TABLE}").fetchone()
    test = con.execute(f"select * from {TABLE} where split = 'test' order by event_timestamp, transaction_id").df()
    con.close()
    np.save(out.with_suffix(".npy"), trained.scorer().predict(matrix.encode(test)))
    out.write_text(
        json.dumps(
            {
                "kind": kind,
                "seconds": seconds,
                "peak_rss_mb": peak,
                "rows": rows,
                "train_rows": train_rows,
                "best_iteration": trained.best_iteration,
                "validation_auc_pr": trained.validation_metrics["auc_pr"],
                "threshold": trained.threshold,
            }
        )
    )


def run_leg(db: Path, kind: str, warehouse_memory: str) -> dict:
    out = WORK / f"{kind}.json"
    subprocess.run(
        [sys.executable, __file__, "--leg", kind, "--db", str(db), "--out-json", str(out)]
        + ["--warehouse-memory", warehouse_memory],
        check=True,
    )
    result = json.loads(out.read_text())
    result["scores"] = np.load(out.with_suffix(".npy"))
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", type=Path, default=HERE / ".work" / "keep10m.duckdb")
    parser.add_argument("--source", default="features.training_set_sliced", help="The training-set table to label.")
    parser.add_argument("--legs", default="in_batches,in_memory")
    parser.add_argument(
        "--warehouse-memory", default=in_batches.READ_MEMORY, help="DuckDB's limit while the batches are read."
    )
    parser.add_argument("--no-record", action="store_true", help="Print the row, leave results.json alone.")
    parser.add_argument("--leg", help=argparse.SUPPRESS)
    parser.add_argument("--out-json", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.leg:
        leg(args.db, args.leg, Path(args.out_json), args.warehouse_memory)
        return
    if not args.db.exists():
        sys.exit(f"{args.db} missing: benchmarks/memory.py builds a 10M-transaction training set")
    WORK.mkdir(parents=True, exist_ok=True)
    prepare(args.db, args.source)
    results = {kind: run_leg(args.db, kind, args.warehouse_memory) for kind in args.legs.split(",")}
    for kind, r in results.items():
        print(
            f"{kind}: {r['seconds']:.1f} s, peak {r['peak_rss_mb']:,.0f} MB, best iteration {r['best_iteration']}, "
            f"validation AUC-PR {r['validation_auc_pr']:.4f}",
            flush=True,
        )
    ours, peer = results["in_batches"], results.get("in_memory")
    difference = float(np.max(np.abs(ours["scores"] - peer["scores"]))) if peer else None
    if peer:
        print(f"largest test-score difference between the two models: {difference:.3g}")
    out = [
        row(
            f"memory_training_{ours['train_rows'] // 1_000_000}m_train_rows",
            ours=ours["peak_rss_mb"],
            peer=peer["peak_rss_mb"] if peer else None,
            peer_name="the same fit on one pandas frame (read_training_set + fit), same run" if peer else None,
            ratio="peer/ours",
            meaning="times less memory training in batches takes",
            unit="MB peak RSS",
            goal=f"peak under {GOAL_MB // 1024} GB, no slower",
            met=ours["peak_rss_mb"] < GOAL_MB and (peer is None or ours["seconds"] <= peer["seconds"] * 1.1),
            details={
                "rows": ours["rows"],
                "train_rows": ours["train_rows"],
                "refit_on_all_rows": True,
                "warehouse_memory": args.warehouse_memory,
                "seconds_in_batches": round(ours["seconds"], 1),
                "seconds_in_memory": round(peer["seconds"], 1) if peer else None,
                "best_iteration": [ours["best_iteration"], peer["best_iteration"] if peer else None],
                "validation_auc_pr": [ours["validation_auc_pr"], peer["validation_auc_pr"] if peer else None],
                "max_test_score_difference": difference,
                "cpus": os.cpu_count(),
                "load_average_at_end": os.getloadavg(),
            },
        )
    ]
    if not args.no_record:
        record(out)
    show(out)


if __name__ == "__main__":
    main()
