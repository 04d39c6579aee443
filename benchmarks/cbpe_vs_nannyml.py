"""Calibrated CBPE (mlops_core/monitoring/cbpe.py) against NannyML's CBPE on the same chunks: the mean absolute
error of each estimate (ROC AUC, AUC-PR, precision, recall) against the realized value, both judged by the
same realized values (mlops_core.monitoring.cbpe.realized).

Data sets:
- `car_loan`: NannyML's public synthetic car-loan data set (50,000 reference rows, ten chunks of 5,000);
- `car_loan_uncalibrated`: the same with every score cubed (the ranking intact, the probabilities far too
  low), as a model trained on another base rate gives;
- `sim_<home>`: a finished `mlops simulate` home (--sim DIR, repeatable): the served scores of the champion
  that served the most days, from its prediction log, with the labels the warehouse holds at the end.
  Reference: its first `--reference-days` days of service; analysis: each later day it served whose labels
  are mature.

NannyML runs in its own venv (benchmarks/peers/requirements-nannyml.txt):

    python3 -m venv .bench-venvs/nannyml && .bench-venvs/nannyml/bin/pip install -r benchmarks/peers/requirements-nannyml.txt
    .venv/bin/python benchmarks/cbpe_vs_nannyml.py --nannyml-python .bench-venvs/nannyml/bin/python --sim /tmp/sim60-7
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from results import record, row  # noqa: E402

from mlops_core.monitoring.cbpe import METRICS, CalibratedCBPE, realized  # noqa: E402

NANNYML_NAMES = {"roc_auc": "roc_auc", "auc_pr": "average_precision", "precision": "precision", "recall": "recall"}


# NannyML sends usage analytics to segment.io unless told not to; a benchmark sends nothing off the machine.
PEER_ENV = {**os.environ, "NML_DISABLE_USAGE_LOGGING": "1"}


def _nannyml(python: str, directory: Path) -> dict[int, dict[str, float]]:
    subprocess.run(
        [python, str(HERE / "peers" / "nannyml_cbpe.py"), "estimate", str(directory)], check=True, env=PEER_ENV
    )
    return {int(k): v for k, v in json.loads((directory / "nannyml.json").read_text()).items()}


def calibration_test(scores: np.ndarray, labels: np.ndarray) -> float:
    """p-value of "the reference's scores are calibrated": a likelihood-ratio test of the identity map against
    a fitted beta calibration, logit(p) = a ln(s) - b ln(1 - s) + c (3 degrees of freedom). A large p-value
    means calibrating can only fit the reference's sampling noise, which is when ours keeps the raw scores."""
    from scipy.stats import chi2
    from sklearn.linear_model import LogisticRegression

    s = np.clip(np.asarray(scores, dtype=float), 1e-12, 1 - 1e-12)
    y = np.asarray(labels, dtype=int)
    features = np.c_[np.log(s), -np.log1p(-s)]
    fitted = LogisticRegression(C=np.inf, max_iter=5000).fit(features, y).predict_proba(features)[:, 1]

    def log_likelihood(p: np.ndarray) -> float:
        p = np.clip(p, 1e-15, 1 - 1e-15)
        return float(np.sum(y * np.log(p) + (1 - y) * np.log1p(-p)))

    return float(chi2.sf(2 * (log_likelihood(fitted) - log_likelihood(s)), 3))


def compare(name: str, reference: pd.DataFrame, analysis: pd.DataFrame, threshold: float, python: str) -> dict:
    """MAE per metric of ours and of NannyML's over the analysis chunks."""
    reference = reference.assign(pred=(reference["score"] >= threshold).astype(int))
    analysis = analysis.assign(pred=(analysis["score"] >= threshold).astype(int))
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        reference.to_parquet(directory / "reference.parquet")
        analysis.to_parquet(directory / "analysis.parquet")
        peer = _nannyml(python, directory)
    ours = CalibratedCBPE(draws=20).fit(reference["score"].to_numpy(), reference["y"].to_numpy())
    errors = {"ours": {m: [] for m in METRICS}, "nannyml": {m: [] for m in METRICS}}
    for chunk, rows in analysis.groupby("chunk", sort=True):
        scores, y = rows["score"].to_numpy(float), rows["y"].to_numpy(int)
        truth = realized(y, scores, scores >= threshold)
        estimate = ours.estimate(scores, threshold)
        for metric in METRICS:
            if np.isnan(truth[metric]) or int(chunk) not in peer:
                continue
            errors["ours"][metric].append(abs(estimate[metric].value - truth[metric]))
            errors["nannyml"][metric].append(abs(peer[int(chunk)][NANNYML_NAMES[metric]] - truth[metric]))
    mae = {side: {m: float(np.mean(v)) for m, v in by.items() if v} for side, by in errors.items()}
    chunks = len(errors["ours"]["roc_auc"])
    calibrated_p = calibration_test(reference["score"].to_numpy(), reference["y"].to_numpy())
    print(f"{name}: {chunks} chunks, calibrated={ours.calibrated}, reference calibrated as is: p={calibrated_p:.3g}")
    for metric in METRICS:
        print(
            f"  {metric:10s} ours {mae['ours'].get(metric, float('nan')):.4f}  nannyml {mae['nannyml'].get(metric, float('nan')):.4f}"
        )
    return {"name": name, "chunks": chunks, "calibrated": ours.calibrated, "calibrated_p": calibrated_p, "mae": mae}


def car_loan(python: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [python, str(HERE / "peers" / "nannyml_cbpe.py"), "export-car-loan", tmp], check=True, env=PEER_ENV
        )
        return pd.read_parquet(Path(tmp) / "reference.parquet"), pd.read_parquet(Path(tmp) / "analysis.parquet")


def simulation(home: Path, reference_days: int, maturity_days: int) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    """The first champion's served days of a finished simulation, labelled from its warehouse."""
    import duckdb

    from mlops_core.serving.prediction_log import read_predictions

    log = read_predictions(home / "data" / "serving" / "production" / "predictions.sqlite")
    served = log[(log["variant"] == "champion") & (log["served"] == 1) & (log["status"] == "ok")]
    served = served.assign(day=pd.to_datetime(served["event_timestamp"], format="ISO8601").dt.date)
    newest_day = served["day"].max()
    # The champion that served the most days: one model's scores, before and after the drift.
    longest = served.groupby("model_version")["day"].nunique().idxmax()
    served = served[served["model_version"] == longest].drop_duplicates("transaction_id")
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        labels = con.execute(
            """select transaction_id, arg_max(is_fraud, labeled_at) as is_fraud from marts.label_events
               group by transaction_id"""
        ).df()
        threshold = None
    frame = served.merge(labels, on="transaction_id", how="inner")
    last_mature = newest_day - pd.Timedelta(days=maturity_days).to_pytimedelta()
    frame = frame[frame["day"] <= last_mature]
    index = {d: i for i, d in enumerate(sorted(frame["day"].unique()))}
    frame["chunk"] = frame["day"].map(index)
    frame = frame.rename(columns={"is_fraud": "y"}).assign(y=lambda f: f["y"].astype(int))
    threshold = float(frame.loc[frame["decision"] == 1, "score"].min())
    columns = ["score", "y", "chunk"]
    return (
        frame.loc[frame["chunk"] < reference_days, columns],
        frame.loc[frame["chunk"] >= reference_days, columns],
        threshold,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nannyml-python", required=True)
    parser.add_argument("--sim", action="append", default=[], type=Path, help="A finished `mlops simulate` MLOPS_HOME.")
    parser.add_argument("--reference-days", type=int, default=10)
    parser.add_argument("--label-maturity-days", type=int, default=7)
    args = parser.parse_args()
    runs = []
    reference, analysis = car_loan(args.nannyml_python)
    runs.append(compare("car_loan", reference, analysis, 0.5, args.nannyml_python))
    cubed = lambda f: f.assign(score=f["score"] ** 3)  # noqa: E731
    runs.append(compare("car_loan_uncalibrated", cubed(reference), cubed(analysis), 0.5**3, args.nannyml_python))
    for home in args.sim:
        reference, analysis, threshold = simulation(home, args.reference_days, args.label_maturity_days)
        runs.append(compare(f"sim_{home.name}", reference, analysis, threshold, args.nannyml_python))
    rows = []
    for run in runs:
        ours = float(np.mean(list(run["mae"]["ours"].values())))
        peer = float(np.mean(list(run["mae"]["nannyml"].values())))
        rows.append(
            row(
                f"cbpe_mae_vs_nannyml_{run['name']}",
                ours=ours,
                peer=peer,
                peer_name="NannyML 0.13.1 CBPE on the same chunks",
                ratio="ours/peer",
                meaning="below 1: our estimates are closer to the realized metrics",
                unit="mean absolute error (mean over ROC AUC, AUC-PR, precision, recall)",
                goal="no worse than NannyML's CBPE",
                met=ours <= peer,
                details={
                    "chunks": run["chunks"],
                    "calibrated": run["calibrated"],
                    "reference_calibration_test_p": run["calibrated_p"],
                    "mae_by_metric": run["mae"],
                },
            )
        )
    record(rows)


if __name__ == "__main__":
    main()
