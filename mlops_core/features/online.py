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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from mlops_core.features.spec import (
    ACCOUNT_COLUMNS,
    ACCOUNT_FEATURES,
    FEATURE_NAMES,
    MAX_WINDOW_SECONDS,
    REQUEST_FEATURES,
    REQUEST_FIELDS,
    WINDOWED_FEATURES,
)
from mlops_core.features.transforms import PYTHON_NAMESPACE, epoch_us, python_expression

MICROS = 1_000_000
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
FX_RATES_CSV = Path(__file__).resolve().parents[2] / "dbt_project" / "seeds" / "fx_rates.csv"


@dataclass(frozen=True)
class AccountSnapshot:
    valid_from_us: int
    created_at_us: int
    home_country: str | None
    age_band: str | None


_EVENT_VALUE_COLUMNS = frozenset(("amount_usd", "merchant_id", "country"))


@dataclass
class AccountEvents:
    """An account's recorded events in time order, column by column, and its snapshots."""

    ts_us: list[int] = field(default_factory=list)
    transaction_ids: list[str] = field(default_factory=list)
    amount_usd: list[float] = field(default_factory=list)
    merchant_id: list[str] = field(default_factory=list)
    country: list[str] = field(default_factory=list)
    snapshots: list[AccountSnapshot] = field(default_factory=list)

    def append(self, ts_us: int, transaction_id: str, amount_usd: float, merchant_id: str, country: str) -> None:
        """Add an event known to be the newest so far (stores read in time order)."""
        self.ts_us.append(ts_us)
        self.transaction_ids.append(transaction_id)
        self.amount_usd.append(amount_usd)
        self.merchant_id.append(merchant_id)
        self.country.append(country)

    def window(self, since_us: int, until_us: int) -> "AccountEvents":
        """The events with since_us <= ts < until_us (snapshots kept whole)."""
        lo, hi = bisect.bisect_left(self.ts_us, since_us), bisect.bisect_left(self.ts_us, until_us)
        return AccountEvents(
            self.ts_us[lo:hi], self.transaction_ids[lo:hi], self.amount_usd[lo:hi], self.merchant_id[lo:hi],
            self.country[lo:hi], self.snapshots,
        )

    def insert(self, event: "EventRecord") -> None:
        """Add one event in (time, transaction id) order."""
        i = bisect.bisect_left(self.ts_us, event.ts_us)
        while i < len(self.ts_us) and self.ts_us[i] == event.ts_us and self.transaction_ids[i] < event.transaction_id:
            i += 1
        self.ts_us.insert(i, event.ts_us)
        self.transaction_ids.insert(i, event.transaction_id)
        self.amount_usd.insert(i, event.amount_usd)
        self.merchant_id.insert(i, event.merchant_id)
        self.country.insert(i, event.country)


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
    """The snapshot valid strictly before t; snapshots are sorted by valid_from."""
    for snapshot in reversed(snapshots):
        if snapshot.valid_from_us < t_us:
            return snapshot
    return None


def _generate_source() -> str:
    """Python source of compute_features, generated from the spec like the offline SQL.

    One straight-line function: each window is located by bisection and sliced once,
    each feature is a local variable, request formulas are inlined. That keeps a lookup
    of all features in the tens of microseconds.
    """
    by_window: dict[int, list] = {}
    for f in WINDOWED_FEATURES:
        by_window.setdefault(f.window_seconds * MICROS, []).append(f)
    request_fields = sorted({i for f in REQUEST_FEATURES for i in f.inputs if i in REQUEST_FIELDS and i not in _WINDOWED_NAMES})
    lines = [
        "def compute_features(request, history):",
        '    """All features of one transaction as of its event_timestamp; `request` is normalized."""',
        "    t_us = epoch_us(request['event_timestamp'])",
        "    history = history or EMPTY",
        "    ts = history.ts_us",
        "    end = bisect_left(ts, t_us)  # the first event at or after t is excluded",
    ]
    lines += [f"    r_{field} = request[{field!r}]" for field in request_fields]
    for span, features in sorted(by_window.items()):
        columns = sorted({f.column for f in features if f.column in _EVENT_VALUE_COLUMNS})
        lines += [f"    start = bisect_left(ts, t_us - {span}, 0, end)", "    n = end - start", "    if n:"]
        lines += [f"        w_{c} = history.{c}[start:end]" for c in columns]
        # Correctly rounded sums, so the value does not depend on summation order.
        lines += [f"        total_{c} = fsum(w_{c})" for c in sorted({f.column for f in features if f.aggregation in ("sum", "mean")})]
        for f in features:
            expression = {
                "count": "n",
                "sum": f"total_{f.column}",
                "mean": f"total_{f.column} / n",
                "max": f"max(w_{f.column})",
                "distinct_count": f"len(set(w_{f.column}))",
                "seconds_since_last": f"(t_us - ts[end - 1]) / {MICROS}",
            }[f.aggregation]
            lines.append(f"        f_{f.name} = {expression}")
        lines.append("    else:")
        lines += [f"        f_{f.name} = {f.default!r}" for f in features]
    lines += [
        "    snapshot = snapshot_before(history.snapshots, t_us)",
        "    if snapshot is None:",
        "        a_created_at = a_home_country = a_age_band = None",
        "    else:",
        "        a_created_at = EPOCH + timedelta(microseconds=snapshot.created_at_us)",
        "        a_home_country = snapshot.home_country",
        "        a_age_band = snapshot.age_band",
    ]
    for f in ACCOUNT_FEATURES:
        lines.append(f"    f_{f.name} = {f.default!r} if a_{f.column} is None else a_{f.column}")
    for f in REQUEST_FEATURES:
        names = [f"f_{i}" if i in _WINDOWED_NAMES else f"a_{i}" if i in _ACCOUNT_INPUTS else f"r_{i}" for i in f.inputs]
        lines.append(f"    f_{f.name} = {python_expression(f, names)}")
    lines.append("    return {" + ", ".join(f"{name!r}: f_{name}" for name in FEATURE_NAMES) + "}")
    return "\n".join(lines) + "\n"


_WINDOWED_NAMES = frozenset(f.name for f in WINDOWED_FEATURES)
_ACCOUNT_INPUTS = frozenset(ACCOUNT_COLUMNS)
ONLINE_SOURCE = _generate_source()


def _compile() -> Callable[[Mapping[str, object], AccountEvents | None], dict[str, object]]:
    namespace = {
        **PYTHON_NAMESPACE,
        "bisect_left": bisect.bisect_left,
        "fsum": math.fsum,
        "EMPTY": AccountEvents(),
        "EPOCH": EPOCH,
        "timedelta": dt.timedelta,
        "snapshot_before": _snapshot_before,
    }
    exec(compile(ONLINE_SOURCE, "<generated online features>", "exec"), namespace)  # noqa: S102 - generated from the spec
    return namespace["compute_features"]


compute_features = _compile()


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
