"""Features at request time, from the spec, over the events an online store holds.

`compute_features` is the online twin of offline.point_in_time_features_sql: the same
windows [t - w, t) (bisect on sorted microsecond timestamps, so an event at exactly t
is excluded like EXCLUDE GROUP does), the same account snapshot rule (valid strictly
before t) and the same request transforms. `OnlineFeatureService` is the serving-time
API: look up a batch of transactions, and record scored ones so later lookups see them.
"""

from __future__ import annotations

import bisect
import csv
import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from mlops_core.features.spec import (
    ACCOUNT_FEATURES,
    FEATURE_NAMES,
    MAX_WINDOW_SECONDS,
    REQUEST_FEATURES,
    WINDOWED_FEATURES,
)
from mlops_core.features.transforms import epoch_us, python_value

MICROS = 1_000_000
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
FX_RATES_CSV = Path(__file__).resolve().parents[2] / "dbt_project" / "seeds" / "fx_rates.csv"


@dataclass(frozen=True)
class AccountSnapshot:
    valid_from_us: int
    created_at_us: int
    home_country: str | None
    age_band: str | None


@dataclass
class AccountEvents:
    """An account's recorded events in time order, column by column, and its snapshots."""

    ts_us: list[int] = field(default_factory=list)
    transaction_ids: list[str] = field(default_factory=list)
    amount_usd: list[float] = field(default_factory=list)
    merchant_id: list[str] = field(default_factory=list)
    country: list[str] = field(default_factory=list)
    snapshots: list[AccountSnapshot] = field(default_factory=list)

    def column(self, name: str) -> list:
        return {"amount_usd": self.amount_usd, "merchant_id": self.merchant_id, "country": self.country}[name]


@dataclass(frozen=True)
class EventRecord:
    """What the online store keeps of one scored transaction."""

    account_id: str
    ts_us: int
    transaction_id: str
    amount_usd: float
    merchant_id: str
    country: str


@lru_cache(maxsize=1)
def fx_rates() -> dict[str, float]:
    """USD per unit of each currency: the dbt seed the warehouse converts with."""
    with FX_RATES_CSV.open() as handle:
        return {row["currency"]: float(row["usd_per_unit"]) for row in csv.DictReader(handle)}


def parse_timestamp(value: object) -> dt.datetime:
    """A UTC datetime from a datetime, pandas Timestamp or ISO-8601 string (naive = UTC)."""
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if hasattr(value, "to_pydatetime"):
        value = value.to_pydatetime()
    if not isinstance(value, dt.datetime):
        raise TypeError(f"event_timestamp must be a datetime or ISO-8601 string, got {type(value).__name__}")
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc)


def normalize_request(request: Mapping[str, object]) -> dict[str, object]:
    """The request fields the features read, with a UTC timestamp and amount_usd.

    A request carries either amount_usd or amount + currency (converted with the same
    seed rates as the warehouse, so the product is bit-identical).
    """
    row = dict(request)
    row["event_timestamp"] = parse_timestamp(row["event_timestamp"])
    if row.get("amount_usd") is None:
        currency = row.get("currency")
        rates = fx_rates()
        if currency not in rates:
            raise ValueError(f"currency {currency!r} has no fx rate; expected one of {sorted(rates)}")
        row["amount_usd"] = float(row["amount"]) * rates[currency]
    return row


def event_record(request: Mapping[str, object]) -> EventRecord:
    row = normalize_request(request)
    return EventRecord(
        account_id=str(row["account_id"]),
        ts_us=epoch_us(row["event_timestamp"]),
        transaction_id=str(row["transaction_id"]),
        amount_usd=float(row["amount_usd"]),
        merchant_id=str(row["merchant_id"]),
        country=str(row["country"]),
    )


def _snapshot_before(snapshots: Sequence[AccountSnapshot], t_us: int) -> AccountSnapshot | None:
    known = [s for s in snapshots if s.valid_from_us < t_us]
    return max(known, key=lambda s: s.valid_from_us) if known else None


def compute_features(request: Mapping[str, object], history: AccountEvents | None) -> dict[str, object]:
    """All features of one transaction as of its event_timestamp; `request` is normalized."""
    t = request["event_timestamp"]
    t_us = epoch_us(t)
    history = history or AccountEvents()
    ts = history.ts_us
    end = bisect.bisect_left(ts, t_us)  # first event at or after t: excluded
    values: dict[str, object] = {}
    starts: dict[int, int] = {}
    for f in WINDOWED_FEATURES:
        start = starts.get(f.window_seconds)
        if start is None:
            start = starts[f.window_seconds] = bisect.bisect_left(ts, t_us - f.window_seconds * MICROS, 0, end)
        n = end - start
        if n == 0:
            values[f.name] = f.default
        elif f.aggregation == "count":
            values[f.name] = n
        elif f.aggregation == "seconds_since_last":
            values[f.name] = (t_us - ts[end - 1]) / MICROS
        elif f.aggregation == "distinct_count":
            values[f.name] = len(set(history.column(f.column)[start:end]))
        else:
            window = history.column(f.column)[start:end]
            if f.aggregation == "sum":
                values[f.name] = math.fsum(window)
            elif f.aggregation == "mean":
                values[f.name] = math.fsum(window) / n
            else:
                values[f.name] = max(window)
    snapshot = _snapshot_before(history.snapshots, t_us)
    account = {
        "created_at": EPOCH + dt.timedelta(microseconds=snapshot.created_at_us) if snapshot else None,
        "home_country": snapshot.home_country if snapshot else None,
        "age_band": snapshot.age_band if snapshot else None,
    }
    for f in ACCOUNT_FEATURES:
        value = account[f.column]
        values[f.name] = value if value is not None else f.default
    for f in REQUEST_FEATURES:
        inputs = [values[i] if i in values else account[i] if i in account else request[i] for i in f.inputs]
        values[f.name] = python_value(f, inputs)
    return {name: values[name] for name in FEATURE_NAMES}


class OnlineFeatureService:
    """The serving-time feature API over an OnlineStore (stores.py)."""

    def __init__(self, store) -> None:
        self.store = store

    def get_online_features(self, requests: Sequence[Mapping[str, object]]) -> list[dict[str, object]]:
        """Features of each transaction in `requests`, in order, as of its own event time."""
        rows = [normalize_request(r) for r in requests]
        if not rows:
            return []
        since = min(epoch_us(r["event_timestamp"]) for r in rows) - MAX_WINDOW_SECONDS * MICROS
        until = max(epoch_us(r["event_timestamp"]) for r in rows)
        histories = self.store.read(sorted({str(r["account_id"]) for r in rows}), since, until)
        return [compute_features(r, histories.get(str(r["account_id"]))) for r in rows]

    def record(self, requests: Sequence[Mapping[str, object]]) -> int:
        """Remember scored transactions so later lookups count them; idempotent per transaction."""
        return self.store.record_events([event_record(r) for r in requests])
