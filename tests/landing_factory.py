"""Tiny contract-valid landing frames for tests, and a writer for the landing layout."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd

from mlops_core.landing import partition_dir


def accounts(
    ids=("a1", "a2", "a3"), created="2025-06-01T00:00:00Z", home_country="US", age_band="25-34"
) -> pd.DataFrame:
    n = len(ids)
    return pd.DataFrame(
        {
            "account_id": list(ids),
            "created_at": pd.to_datetime([created] * n, utc=True),
            "home_country": [home_country] * n,
            "age_band": [age_band] * n,
        }
    )


def transactions(day: str, n: int = 10, prefix: str | None = None, accounts_=("a1", "a2", "a3")) -> pd.DataFrame:
    prefix = prefix or f"t{day.replace('-', '')}_"
    start = pd.Timestamp(day, tz="UTC")
    return pd.DataFrame(
        {
            "transaction_id": [f"{prefix}{i}" for i in range(n)],
            "account_id": [accounts_[i % len(accounts_)] for i in range(n)],
            "merchant_id": [f"m{i % 4}" for i in range(n)],
            "merchant_category": ["grocery", "retail", "travel", "electronics"] * (n // 4) + ["grocery"] * (n % 4),
            "amount": [10.0 + i for i in range(n)],
            "currency": ["USD"] * n,
            "channel": ["online", "in_store"] * (n // 2) + ["online"] * (n % 2),
            "country": ["US"] * (n - 1) + ["FR"],
            "event_timestamp": [start + pd.Timedelta(seconds=int(i * 86_399 / n)) for i in range(n)],
        }
    )


def labels(transaction_ids, day: str, is_fraud: bool = False, source: str = "maturity") -> pd.DataFrame:
    n = len(transaction_ids)
    return pd.DataFrame(
        {
            "transaction_id": pd.Series(list(transaction_ids), dtype="string"),
            "is_fraud": pd.Series([is_fraud] * n, dtype=bool),
            "labeled_at": pd.Series(
                [pd.Timestamp(day, tz="UTC") + pd.Timedelta(hours=1 + i % 20) for i in range(n)],
                dtype="datetime64[ns, UTC]",
            ),
            "label_source": pd.Series([source] * n, dtype="string"),
        }
    )


def write(landing: Path, source: str, day: str | date, frame: pd.DataFrame, name: str = "part-0.parquet") -> Path:
    folder = partition_dir(landing, source, date.fromisoformat(str(day)))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if name.endswith(".csv"):
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path
