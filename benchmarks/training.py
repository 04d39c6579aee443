"""Training and scoring benchmark: the candidate's training time at 1M and ~10M rows, and
single-row and batch scoring, ONNX (onnxruntime) vs native xgboost, on the same model.

Usage:
  .venv/bin/python benchmarks/feature_store.py --legs training   # once: builds the ~10M-row training set
  .venv/bin/python benchmarks/training.py [--sizes 1000000,0] [--db <its warehouse.duckdb>]  # 0 = every row

Data: features.training_set_bench from the feature-store benchmark (8.77M labelled
synthetic transactions with all 31 features). Its labels there are random, so this
script draws new ones from a fixed logistic function of a few features (bursts, foreign,
online, night hours, amount over the 30-day mean) with a seeded generator: a real signal
to learn, with about 1% fraud. Training runs the asset's own `fit` (encode, XGBoost with
early stopping on the time-ordered validation split, threshold, ONNX export, parity) with
the asset's default config (n_jobs=1 for reproducibility). Each size runs in a fresh process.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from results import common, record, row, show

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
DB = HERE / ".work" / "feature_store" / "rows10000000" / "warehouse.duckdb"
OUT = HERE / ".work" / "training"

LABEL_SQL = """
select * replace (
    random() < 1 / (1 + exp(-(-7.6 + 0.9 * least(txn_count_1h, 4) + 1.6 * is_foreign + 0.9 * is_online
                             + 0.7 * (hour_of_day between 0 and 5)::int + 0.4 * least(amount_to_mean_30d, 5))))
    as is_fraud)
from features.training_set_bench
"""


def load(rows: int, db: Path = DB):
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    con.execute("select setseed(0.42)")
    limit = (
        f"order by event_timestamp, transaction_id limit {rows}" if rows else "order by event_timestamp, transaction_id"
    )
    frame = con.execute(f"select * from ({LABEL_SQL}) {limit}").df()
    con.close()
    if rows:  # the first `rows` in time: recut 70/15/15 so every split exists
        n = len(frame)
        frame["split"] = (
            ["train"] * int(n * 0.7) + ["validation"] * int(n * 0.15) + ["test"] * (n - int(n * 0.7) - int(n * 0.15))
        )
    return frame


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)
    return {"p50_ms": statistics.median(ordered), "p99_ms": ordered[int(0.99 * len(ordered)) - 1]}


def leg(rows: int, db: Path = DB) -> dict:
    import numpy as np
    import xgboost

    from mlops_core.training import matrix
    from mlops_core.training.candidates import fit, split
    from mlops_core.training.models import XGBoostParams, train_xgboost
    from mlops_core.training.onnx_export import OnnxScorer

    started = time.perf_counter()
    frame = load(rows, db)
    load_s = time.perf_counter() - started
    started = time.perf_counter()
    trained = fit(frame, "xgboost", "bench")
    fit_s = time.perf_counter() - started
    result = {
        "rows": len(frame),
        "train_rows": int((frame["split"] == "train").sum()),
        "fraud_rate": float(frame["is_fraud"].mean()),
        "load_seconds": load_s,
        "fit_seconds": fit_s,
        "best_iteration": trained.best_iteration,
        "validation_auc_pr": trained.validation_metrics["auc_pr"],
        "onnx_max_difference": trained.onnx_max_difference,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    # Scoring, the same trees both ways: refit natively (seeded, identical) to hold the booster.
    train, validation, test = (split(frame, s) for s in ("train", "validation", "test"))
    started = time.perf_counter()
    native = train_xgboost(
        matrix.encode(train),
        matrix.labels(train),
        matrix.encode(validation),
        matrix.labels(validation),
        XGBoostParams(),
    )
    # The floor of `fit`: encoding the splits and XGBoost's own training, nothing else.
    result["native_train_seconds"] = time.perf_counter() - started
    scorer = OnnxScorer(trained.onnx)
    X = matrix.encode(test.head(200_000))
    assert float(np.max(np.abs(native.predict_proba(X[:1000])[:, 1] - scorer.predict(X[:1000])))) < 1e-5
    single = {"onnx": [], "native": []}
    for i in range(2000):
        row = X[i : i + 1]
        for name, predict in (("onnx", scorer.predict), ("native", lambda r: native.predict_proba(r)[:, 1])):
            begin = time.perf_counter_ns()
            predict(row)
            if i >= 200:
                single[name].append((time.perf_counter_ns() - begin) / 1e6)
    batch = {}
    for size in (1_000, 100_000):
        chunk = X[:size]
        for name, predict in (("onnx", scorer.predict), ("native", lambda r: native.predict_proba(r)[:, 1])):
            times = []
            for _ in range(5):
                begin = time.perf_counter()
                predict(chunk)
                times.append(time.perf_counter() - begin)
            batch[f"{name}_{size}_rows_ms"] = statistics.median(times) * 1000
    result["single_row"] = {name: percentiles(v) for name, v in single.items()}
    result["batch"] = batch
    result["xgboost_threads"] = native.get_params()["n_jobs"]
    result["xgboost_version"] = xgboost.__version__
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000000,0", help="Rows per leg; 0 = all (~8.77M).")
    parser.add_argument(
        "--db", type=Path, default=DB, help="The feature-store benchmark's DuckDB file (its --rows picks the folder)."
    )
    parser.add_argument("--leg", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out-json", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.leg is not None:
        Path(args.out_json).write_text(json.dumps(leg(args.leg, args.db)))
        return
    if not args.db.exists():
        sys.exit(f"{args.db} missing: run benchmarks/feature_store.py --legs training first")
    OUT.mkdir(parents=True, exist_ok=True)
    results = {"date": time.strftime("%Y-%m-%d"), "db": str(args.db)}
    for rows in (int(s) for s in args.sizes.split(",")):
        out = OUT / f"rows{rows}.json"
        subprocess.run(
            [sys.executable, __file__, "--leg", str(rows), "--db", str(args.db), "--out-json", str(out)], check=True
        )
        results[str(rows)] = json.loads(out.read_text())
        print(json.dumps(results[str(rows)], indent=1), flush=True)
    (OUT / "summary.json").write_text(json.dumps(results, indent=2))
    rows = result_rows(results)
    record(rows)
    show(rows)


def result_rows(results: dict) -> list[dict]:
    """Per size: `fit` beside plain XGBoost training, and single-row scoring ONNX beside native xgboost.

    RESULTS.md states no goal for either: they are recorded with `goal` and `met` null.
    """
    shared = common()
    rows = []
    for key, r in results.items():
        if key in ("date", "db"):
            continue
        size = f"{r['rows'] // 1000}k"  # the rows loaded: "all" differs between the 1M and the 10M warehouse
        details = {"rows": r["rows"], "train_rows": r["train_rows"], "best_iteration": r["best_iteration"]}
        rows.append(
            row(
                f"training_fit_{size}_rows",
                ours=r["fit_seconds"],
                peer=r["native_train_seconds"],
                peer_name="train_xgboost alone on the same splits (encode + XGBoost, no threshold, ONNX export or parity)",
                ratio="ours/peer",
                meaning="times the plain training's time",
                unit="s",
                goal=None,
                met=None,
                details=details | {"load_seconds": r["load_seconds"], "peak_rss_mb": r["peak_rss_mb"]},
                shared=shared,
            )
        )
        rows.append(
            row(
                f"training_single_row_p99_{size}_rows_model",
                ours=r["single_row"]["onnx"]["p99_ms"],
                peer=r["single_row"]["native"]["p99_ms"],
                peer_name="native xgboost predict_proba, same trees",
                ratio="peer/ours",
                meaning="times lower the ONNX p99 is",
                unit="ms",
                goal=None,
                met=None,
                details=details | {"single_row": r["single_row"], "batch": r["batch"], "calls": 1800},
                shared=shared,
            )
        )
    return rows


if __name__ == "__main__":
    main()
