"""NannyML's CBPE as the peer of mlops_core/monitoring/cbpe.py. Runs in its own venv (requirements-nannyml.txt):
NannyML pins its own stack and is not a dependency of the platform.

    python nannyml_cbpe.py export-car-loan DIR   # NannyML's public synthetic car-loan data set, as parquet
    python nannyml_cbpe.py estimate DIR          # DIR/reference.parquet + DIR/analysis.parquet -> DIR/nannyml.json

Both parquet files hold score, pred (0/1), y (0/1) and chunk (int); analysis chunks are estimated one by one.
"""

import json
import sys
from pathlib import Path

import pandas as pd

METRICS = ["roc_auc", "average_precision", "precision", "recall"]


def export_car_loan(out: Path) -> None:
    import nannyml as nml

    reference, analysis, targets = nml.load_synthetic_car_loan_dataset()
    analysis = analysis.merge(targets, on="id")
    out.mkdir(parents=True, exist_ok=True)
    for name, frame in (("reference", reference), ("analysis", analysis)):
        frame = frame.reset_index(drop=True)
        pd.DataFrame(
            {
                "score": frame["y_pred_proba"].astype(float),
                "y": frame["repaid"].astype(int),
                # NannyML's own chunks of this data set: 5,000 rows.
                "chunk": (frame.index // 5000).astype(int),
            }
        ).to_parquet(out / f"{name}.parquet")


def _with_time(frame: pd.DataFrame) -> pd.DataFrame:
    """A timestamp per row putting each chunk on its own day, so NannyML chunks exactly as given."""
    frame = frame.copy()
    offset = frame.groupby("chunk").cumcount()
    frame["timestamp"] = (
        pd.Timestamp("2020-01-01") + pd.to_timedelta(frame["chunk"], unit="D") + pd.to_timedelta(offset, unit="s")
    )
    return frame


def estimate(directory: Path) -> None:
    import nannyml as nml

    reference = _with_time(pd.read_parquet(directory / "reference.parquet"))
    analysis = _with_time(pd.read_parquet(directory / "analysis.parquet"))
    cbpe = nml.CBPE(
        y_pred_proba="score",
        y_pred="pred",
        y_true="y",
        timestamp_column_name="timestamp",
        metrics=METRICS,
        chunk_period="D",
        problem_type="classification_binary",
    )
    cbpe.fit(reference)
    result = cbpe.estimate(analysis.drop(columns=["y"])).filter(period="analysis").to_df()
    out = {}
    for _, chunk in result.iterrows():
        day = int((pd.Timestamp(chunk[("chunk", "start_date")]) - pd.Timestamp("2020-01-01")).days)
        out[day] = {m: float(chunk[(m, "value")]) for m in METRICS}
    (directory / "nannyml.json").write_text(json.dumps(out))


if __name__ == "__main__":
    command, target = sys.argv[1], Path(sys.argv[2])
    {"export-car-loan": export_car_loan, "estimate": estimate}[command](target)
