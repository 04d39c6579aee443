"""Synthetic training sets shaped like `features.training_set`, built from the feature spec.

A plainly named module rather than conftest, so tests can import it without clashing with
the other test folders' conftest modules."""

import numpy as np
import pandas as pd

from mlops_core.features import spec
from mlops_core.training import matrix

FRAUDULENT_CATEGORIES = ("digital_goods", "jewelry", "gambling")


def make_training_frame(n_rows: int = 3000, seed: int = 0, shuffle_labels: bool = False) -> pd.DataFrame:
    """Rows in time order, ~3% fraud driven by is_foreign, amount_to_mean_30d and merchant category;
    split 60/20/20 into train, validation and test by time."""
    rng = np.random.default_rng(seed)
    columns: dict[str, object] = {}
    for feature in spec.FEATURES:
        if feature.dtype == "int64":
            columns[feature.name] = rng.integers(0, 10, n_rows)
        elif feature.dtype == "float64":
            columns[feature.name] = rng.gamma(2.0, 50.0, n_rows)
        else:
            known = [c for c in feature.categories if c != "unknown"]
            columns[feature.name] = rng.choice(known, n_rows)
    frame = pd.DataFrame(columns)
    frame["is_foreign"] = (rng.random(n_rows) < 0.15).astype(np.int64)
    frame["amount_to_mean_30d"] = rng.lognormal(0.0, 0.8, n_rows)
    logit = (
        -5.9
        + 2.5 * frame["is_foreign"]
        + 2.0 * np.log(frame["amount_to_mean_30d"])
        + 2.0 * frame["merchant_category"].isin(FRAUDULENT_CATEGORIES)
    )
    is_fraud = rng.random(n_rows) < 1 / (1 + np.exp(-logit))
    if shuffle_labels:
        is_fraud = rng.permutation(is_fraud)
    start = pd.Timestamp("2024-01-01", tz="UTC")
    frame.insert(0, "transaction_id", [f"t{i:06d}" for i in range(n_rows)])
    frame.insert(1, "account_id", [f"a{i:04d}" for i in rng.integers(0, 500, n_rows)])
    frame.insert(2, "event_timestamp", start + pd.to_timedelta(np.sort(rng.integers(0, 90 * 86_400, n_rows)), unit="s"))
    frame["is_fraud"] = is_fraud
    frame["labeled_at"] = frame["event_timestamp"] + pd.Timedelta(days=30)
    frame["label_source"] = "maturity"
    position = np.arange(n_rows) / n_rows
    frame["split"] = np.select([position < 0.6, position < 0.8], ["train", "validation"], "test")
    return frame


def split_matrices(frame: pd.DataFrame) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {split: (matrix.encode(part), matrix.labels(part)) for split, part in frame.groupby("split", sort=False)}


def warehouse_of(frame: pd.DataFrame, table: str = "features.training_set", seed: int = 3):
    """An in-memory DuckDB holding `frame` as `table`, its rows written shuffled: a reader that forgets the
    training order gets another order, not the right one by luck."""
    import duckdb

    con = duckdb.connect()
    con.execute("set TimeZone='UTC'")
    con.execute(f"create schema if not exists {table.split('.')[0]}")
    shuffled = frame.sample(frac=1.0, random_state=seed)  # noqa: F841  (read by DuckDB below)
    con.execute(f"create table {table} as select * from shuffled")
    return con
