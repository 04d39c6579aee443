"""Features at request time, from the spec, over the events an online store holds.

`compute_features` is the online twin of offline.point_in_time_features_sql: the same
windows [t - w, t) (bisect on sorted microsecond timestamps, so an event at exactly t
is excluded like EXCLUDE GROUP does), the same account snapshot rule (valid strictly
before t) and the same request transforms. `OnlineFeatureService` is the serving-time
API: look up a batch of transactions, and record scored ones so later lookups see them.

What a transaction sees is what the offline build gives it, whatever the arrival order:
every event of its account held in the store or earlier in event time in the same batch,
in [t - w, t), each transaction id once (the first version recorded), never itself. A
transaction whose 30-day window reaches past what the store retains is refused
(TooLateError) rather than scored on a partial window.
"""

from __future__ import annotations

import bisect
import csv
import datetime as dt
import math
from collections import Counter
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
MAX_WINDOW_US = MAX_WINDOW_SECONDS * MICROS
# How much older than the warehouse's newest event a transaction may be and still be scored
# exactly: a rebuild keeps the longest window plus this much (OnlineStore.rebuild).
DEFAULT_ALLOWED_LATENESS_SECONDS = 7 * 86_400
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
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

    def window(self, since_us: int, until_us: int) -> AccountEvents:
        """The events with since_us <= ts < until_us (snapshots kept whole)."""
        lo, hi = bisect.bisect_left(self.ts_us, since_us), bisect.bisect_left(self.ts_us, until_us)
        return AccountEvents(
            self.ts_us[lo:hi],
            self.transaction_ids[lo:hi],
            self.amount_usd[lo:hi],
            self.merchant_id[lo:hi],
            self.country[lo:hi],
            self.snapshots,
        )

    def without(self, transaction_id: str, ts_us: int) -> AccountEvents:
        """A copy without the event (ts_us, transaction_id); the same object if it is not held."""
        i = bisect.bisect_left(self.ts_us, ts_us)
        while i < len(self.ts_us) and self.ts_us[i] == ts_us:
            if self.transaction_ids[i] == transaction_id:
                keep = lambda column, i=i: column[:i] + column[i + 1 :]  # noqa: E731
                return AccountEvents(
                    keep(self.ts_us),
                    keep(self.transaction_ids),
                    keep(self.amount_usd),
                    keep(self.merchant_id),
                    keep(self.country),
                    self.snapshots,
                )
            i += 1
        return self

    def copy(self) -> AccountEvents:
        return AccountEvents(
            list(self.ts_us),
            list(self.transaction_ids),
            list(self.amount_usd),
            list(self.merchant_id),
            list(self.country),
            self.snapshots,
        )

    def insert(self, event: EventRecord) -> None:
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
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


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
    return _event_of(normalize_request(request))


def _event_of(row: Mapping[str, object]) -> EventRecord:
    """The stored event of a normalized request."""
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
    request_fields = sorted(
        {i for f in REQUEST_FEATURES for i in f.inputs if i in REQUEST_FIELDS and i not in _WINDOWED_NAMES}
    )
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
        lines += [
            f"        total_{c} = fsum(w_{c})"
            for c in sorted({f.column for f in features if f.aggregation in ("sum", "mean")})
        ]
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


@dataclass(frozen=True)
class StoreRead:
    """What a lookup needs from the store, read together (OnlineStore.lookup)."""

    histories: dict[str, AccountEvents]  # events in [since, until) and all snapshots, per known account
    held: dict[str, tuple[str, int]]  # asked-for transaction ids already held: id -> (account_id, ts_us)
    retained_since_us: int | None  # events older than this may have been dropped (None: nothing ever was)


class TooLateError(ValueError):
    """Transactions whose 30-day window reaches past what the store retains.

    Scoring them would use a partial window, which the offline build never does, so the
    whole batch is refused and nothing is recorded. `rows` are their positions in the
    request; score such transactions offline (batch scoring of their day).
    """

    def __init__(
        self, rows: list[int], transaction_ids: list[str], event_times: list[dt.datetime], earliest_us: int
    ) -> None:
        self.rows = rows
        self.transaction_ids = transaction_ids
        self.event_times = event_times
        self.earliest = EPOCH + dt.timedelta(microseconds=earliest_us)
        shown = ", ".join(f"{t} at {ts.isoformat()}" for t, ts in zip(transaction_ids[:5], event_times[:5]))
        more = f" and {len(rows) - 5} more" if len(rows) > 5 else ""
        super().__init__(
            f"{len(rows)} transaction(s) older than the online store's allowed lateness: {shown}{more}. "
            f"It holds complete 30-day windows for event times from {self.earliest.isoformat()} on; "
            "score older transactions offline."
        )


class OnlineFeatureService:
    """The serving-time feature API over an OnlineStore (stores.py)."""

    def __init__(self, store) -> None:
        self.store = store

    def get_online_features(self, requests: Sequence[Mapping[str, object]]) -> list[dict[str, object]]:
        """Features of each transaction in `requests`, in request order, each as of its own event time.

        The batch is taken in event order: a row sees the store's events and the batch's rows
        of its account in [t - w, t), as the offline build does (rows at the same instant do
        not see each other). Each transaction id counts once: a held id keeps its recorded
        version, a repeated id in the batch its first; no row counts itself. Raises
        TooLateError, and computes nothing, if a row's 30-day window reaches past what the
        store retains.
        """
        rows = [normalize_request(r) for r in requests]
        if not rows:
            return []
        times = [epoch_us(r["event_timestamp"]) for r in rows]
        ids = [str(r["transaction_id"]) for r in rows]
        accounts = [str(r["account_id"]) for r in rows]
        read = self.store.lookup(sorted(set(accounts)), sorted(set(ids)), min(times) - MAX_WINDOW_US, max(times))
        if read.retained_since_us is not None:
            late = [i for i, t in enumerate(times) if t - MAX_WINDOW_US < read.retained_since_us]
            if late:
                raise TooLateError(
                    late,
                    [ids[i] for i in late],
                    [rows[i]["event_timestamp"] for i in late],
                    read.retained_since_us + MAX_WINDOW_US,
                )
        histories = read.histories
        # The version of each id in effect: the held one, else the batch's first.
        version = dict(read.held)
        if len(rows) > 1:
            rows_of = Counter(accounts)
            added: dict[str, list[EventRecord]] = {}
            for i, row in enumerate(rows):
                if ids[i] not in version:
                    version[ids[i]] = (accounts[i], times[i])
                    if rows_of[accounts[i]] > 1:  # a lone row of its account never sees itself: no copy needed
                        added.setdefault(accounts[i], []).append(_event_of(row))
            for account, events in added.items():
                merged = histories[account].copy() if account in histories else AccountEvents()
                for e in events:
                    merged.insert(e)
                histories[account] = merged
        features = []
        for i, row in enumerate(rows):
            history = histories.get(accounts[i])
            held = version.get(ids[i])
            if history is not None and held is not None and held[0] == accounts[i] and held[1] < times[i]:
                history = history.without(ids[i], held[1])  # a re-sent id never counts itself
            features.append(compute_features(row, history))
        return features

    def record(self, requests: Sequence[Mapping[str, object]]) -> int:
        """Remember scored transactions so later lookups count them; idempotent per transaction id
        (the first version recorded stays). Returns how many were new."""
        return self.store.record_events([event_record(r) for r in requests])
