"""Helpers shared by the feature-store tests (not a test module).

- `reference_features`: an independent, deliberately naive pure-Python computation of every
  feature in the spec, written from the definitions in words. For each entity row it loops
  over ALL events of the account; it does not call online.py / offline.py / transforms.py.
  It only reads the spec dataclasses to know which features exist (name, aggregation,
  column, window, transform, inputs, argument, categories) and raises on anything it does
  not know, so a new kind of feature in the spec fails loudly here.
- `build_tables` / `make_connection`: the warehouse tables the offline code reads, from
  Python lists (naive UTC datetimes, like the dbt marts).
- Runners for the three implementations (point-in-time SQL, brute-force SQL, online
  replay through an OnlineStore), each returning rows keyed by transaction_id.
- `assert_features_match`: exact for int64/category features, |a - b| <= 1e-9 * max(1, |b|)
  for float64; also checks that no row is dropped or duplicated and that dtypes are sane.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping, Sequence

import duckdb

from mlops_core.features import offline, online
from mlops_core.features.spec import (
    ACCOUNT_FEATURES,
    FEATURE_NAMES,
    FEATURES,
    REQUEST_FEATURES,
    WINDOWED_FEATURES,
    AccountFeature,
    RequestFeature,
    WindowedFeature,
)

UTC = dt.UTC
EPOCH = dt.datetime(1970, 1, 1)

EVENT_FIELDS = (
    "transaction_id",
    "account_id",
    "event_timestamp",
    "amount_usd",
    "merchant_id",
    "merchant_category",
    "channel",
    "country",
)
SNAPSHOT_FIELDS = ("account_id", "created_at", "home_country", "age_band", "valid_from")
LABEL_FIELDS = ("transaction_id", "is_fraud", "labeled_at", "label_source", "landed_date", "event_timestamp")

EVENTS_DDL = """
create table marts.transactions_enriched (
    transaction_id varchar, account_id varchar, event_timestamp timestamp, amount_usd double,
    merchant_id varchar, merchant_category varchar, channel varchar, country varchar
)"""
ACCOUNT_HISTORY_DDL = """
create table marts.account_history (
    account_id varchar, created_at timestamp, home_country varchar, age_band varchar, valid_from timestamp
)"""
LABELS_DDL = """
create table marts.label_events (
    transaction_id varchar, is_fraud boolean, labeled_at timestamp, label_source varchar,
    landed_date date, event_timestamp timestamp
)"""


# --------------------------------------------------------------------------- builders


def event(
    transaction_id: str,
    account_id: str,
    event_timestamp: dt.datetime,
    amount_usd: float = 10.0,
    merchant_id: str = "m1",
    merchant_category: str = "grocery",
    channel: str = "in_store",
    country: str = "US",
) -> dict:
    """One row of marts.transactions_enriched (the columns the feature store reads)."""
    assert event_timestamp.tzinfo is None, "the warehouse stores naive UTC timestamps"
    return {
        "transaction_id": transaction_id,
        "account_id": account_id,
        "event_timestamp": event_timestamp,
        "amount_usd": float(amount_usd),
        "merchant_id": merchant_id,
        "merchant_category": merchant_category,
        "channel": channel,
        "country": country,
    }


def snapshot(
    account_id: str,
    valid_from: dt.datetime,
    created_at: dt.datetime | None = None,
    home_country: str | None = "US",
    age_band: str | None = "25-34",
) -> dict:
    """One row of marts.account_history."""
    return {
        "account_id": account_id,
        "created_at": created_at if created_at is not None else valid_from - dt.timedelta(days=100),
        "home_country": home_country,
        "age_band": age_band,
        "valid_from": valid_from,
    }


def label(
    transaction_id: str,
    is_fraud: bool,
    labeled_at: dt.datetime,
    event_timestamp: dt.datetime,
    label_source: str = "chargeback",
) -> dict:
    """One row of marts.label_events."""
    return {
        "transaction_id": transaction_id,
        "is_fraud": is_fraud,
        "labeled_at": labeled_at,
        "label_source": label_source,
        "landed_date": labeled_at.date(),
        "event_timestamp": event_timestamp,
    }


def build_tables(
    con: duckdb.DuckDBPyConnection,
    events: Iterable[Mapping],
    snapshots: Iterable[Mapping] = (),
    labels: Iterable[Mapping] | None = None,
) -> None:
    """(Re)create marts.transactions_enriched, marts.account_history and, if given, marts.label_events."""
    con.execute("set TimeZone='UTC'")
    con.execute("create schema if not exists marts")
    for table, ddl, fields, rows in (
        ("marts.transactions_enriched", EVENTS_DDL, EVENT_FIELDS, events),
        ("marts.account_history", ACCOUNT_HISTORY_DDL, SNAPSHOT_FIELDS, snapshots),
        ("marts.label_events", LABELS_DDL, LABEL_FIELDS, labels),
    ):
        if rows is None:
            continue
        con.execute(f"drop table if exists {table}")
        con.execute(ddl)
        rows = [tuple(r[c] for c in fields) for r in rows]
        if rows:
            # One multi-row INSERT: DuckDB's executemany is slow for many tiny statements.
            placeholders = ", ".join(["(" + ", ".join("?" * len(fields)) + ")"] * len(rows))
            con.execute(f"insert into {table} values {placeholders}", [v for r in rows for v in r])


def make_connection(events, snapshots=(), labels=None) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    build_tables(con, events, snapshots, labels)
    return con


# --------------------------------------------------------------------------- reference


def _window_default(f: WindowedFeature) -> float | int:
    # In words: nothing in the window => count 0, sums/means/maxima 0.0, and "seconds since
    # the last transaction" is the whole window length (the last one is not within it).
    if f.aggregation in ("count", "distinct_count"):
        return 0
    if f.aggregation in ("sum", "mean", "max"):
        return 0.0
    if f.aggregation == "seconds_since_last":
        return float(f.window_seconds)
    raise NotImplementedError(f"reference has no definition of aggregation {f.aggregation!r}")


def _windowed_value(f: WindowedFeature, t: dt.datetime, account_events: Sequence[Mapping]) -> float | int:
    lower = t - dt.timedelta(seconds=f.window_seconds)
    # [t - w, t): lower bound inclusive, the entity's own instant excluded.
    in_window = [e for e in account_events if lower <= e["event_timestamp"] < t]
    if not in_window:
        return _window_default(f)
    if f.aggregation == "count":
        return len(in_window)
    values = [e[f.column] for e in in_window]
    if f.aggregation == "sum":
        return float(math.fsum(values))
    if f.aggregation == "mean":
        return math.fsum(values) / len(values)
    if f.aggregation == "max":
        return float(max(values))
    if f.aggregation == "distinct_count":
        return len(set(values))
    if f.aggregation == "seconds_since_last":
        return (t - max(values)).total_seconds()
    raise NotImplementedError(f"reference has no definition of aggregation {f.aggregation!r}")


def _snapshot_before(account_snapshots: Sequence[Mapping], t: dt.datetime) -> Mapping | None:
    """The account's snapshot with the latest valid_from strictly before t (None: unknown)."""
    best = None
    for s in account_snapshots:
        if s["valid_from"] < t and (best is None or s["valid_from"] > best["valid_from"]):
            best = s
    return best


def _request_value(f: RequestFeature, inputs: list) -> object:
    """Each transform by its description in the spec, written independently of transforms.py."""
    if f.transform == "identity":
        if f.dtype == "category":
            return inputs[0] if inputs[0] in f.categories else "unknown"
        return float(inputs[0]) if f.dtype == "float64" else inputs[0]
    if f.transform == "log1p":
        return math.log1p(inputs[0])
    if f.transform == "hour_of_day":
        return inputs[0].hour
    if f.transform == "day_of_week":
        return inputs[0].weekday()  # Monday = 0
    if f.transform == "is_weekend":
        return 1 if inputs[0].weekday() in (5, 6) else 0
    if f.transform == "equals":
        return 1 if inputs[0] == f.argument else 0
    if f.transform == "differs":
        # 0 for an unknown account (no snapshot => no home country).
        if inputs[1] is None:
            return 0
        return 1 if inputs[0] != inputs[1] else 0
    if f.transform == "age_days":
        # Complete days since the account opened; -1 for an unknown account.
        t, created_at = inputs
        if created_at is None:
            return -1.0
        return float((t - created_at) // dt.timedelta(days=1))
    if f.transform == "ratio":
        # Amount over the 30-day mean; 1 without history.
        numerator, denominator = inputs
        return numerator / denominator if denominator > 0 else 1.0
    raise NotImplementedError(f"reference has no definition of transform {f.transform!r}")


def reference_features(entity: Mapping, events: Sequence[Mapping], snapshots: Sequence[Mapping] = ()) -> dict:
    """Every feature of `entity` (an event row, naive UTC timestamp) as of its own event_timestamp."""
    t = entity["event_timestamp"]
    account_events = [e for e in events if e["account_id"] == entity["account_id"]]
    account_snapshots = [s for s in snapshots if s["account_id"] == entity["account_id"]]
    values: dict[str, object] = {}
    for f in WINDOWED_FEATURES:
        values[f.name] = _windowed_value(f, t, account_events)
    snap = _snapshot_before(account_snapshots, t)
    account = {c: (snap[c] if snap is not None else None) for c in ("created_at", "home_country", "age_band")}
    for f in ACCOUNT_FEATURES:
        assert isinstance(f, AccountFeature)
        value = account[f.column]
        values[f.name] = value if value is not None else "unknown"
    for f in REQUEST_FEATURES:
        inputs = []
        for name in f.inputs:
            if name in values:
                inputs.append(values[name])
            elif name in account:
                inputs.append(account[name])
            else:
                inputs.append(entity[name])
        values[f.name] = _request_value(f, inputs)
    unknown = [f.name for f in FEATURES if f.name not in values]
    if unknown:
        raise NotImplementedError(f"reference does not compute {unknown}")
    return {name: values[name] for name in FEATURE_NAMES}


def reference_all(events: Sequence[Mapping], snapshots: Sequence[Mapping] = ()) -> dict[str, dict]:
    return {e["transaction_id"]: reference_features(e, events, snapshots) for e in events}


# --------------------------------------------------------------------------- implementations


def by_transaction(rows: Sequence[Mapping]) -> dict[str, dict]:
    """Rows keyed by transaction_id; fails on a duplicated transaction."""
    keyed: dict[str, dict] = {}
    for row in rows:
        txid = row["transaction_id"]
        assert txid not in keyed, f"transaction {txid!r} appears more than once"
        keyed[txid] = dict(row)
    return keyed


def _fetch_dicts(con: duckdb.DuckDBPyConnection, sql: str) -> list[dict]:
    cursor = con.execute(sql)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def offline_features(con: duckdb.DuckDBPyConnection) -> dict[str, dict]:
    return by_transaction(_fetch_dicts(con, offline.point_in_time_features_sql()))


def brute_force_features(
    con: duckdb.DuckDBPyConnection, transaction_ids: Iterable[str] | None = None
) -> dict[str, dict]:
    con.execute("create or replace temp table feature_sample (transaction_id varchar)")
    if transaction_ids is None:
        con.execute("insert into feature_sample select transaction_id from marts.transactions_enriched")
    else:
        con.executemany("insert into feature_sample values (?)", [(t,) for t in transaction_ids])
    return by_transaction(_fetch_dicts(con, offline.brute_force_features_sql("feature_sample")))


def to_us(ts: dt.datetime) -> int:
    """Epoch microseconds of a naive-UTC datetime, exact."""
    delta = ts - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def account_snapshots(snapshots: Iterable[Mapping]) -> list[tuple[str, online.AccountSnapshot]]:
    return [
        (
            s["account_id"],
            online.AccountSnapshot(to_us(s["valid_from"]), to_us(s["created_at"]), s["home_country"], s["age_band"]),
        )
        for s in snapshots
    ]


def request_of(e: Mapping) -> dict:
    """A scoring request for an event row (fields of the request contract)."""
    return {k: e[k] for k in EVENT_FIELDS}


def online_replay(events: Sequence[Mapping], snapshots: Sequence[Mapping], store=None) -> dict[str, dict]:
    """Serve every event in time order: look it up, then record it (what production does).

    The store is rebuilt first with the snapshots and no events, so every windowed value
    comes from transactions recorded online during the replay.
    """
    from mlops_core.features.stores import SqliteOnlineStore

    store = store if store is not None else SqliteOnlineStore(":memory:")
    store.rebuild([], account_snapshots(snapshots), 0)
    service = online.OnlineFeatureService(store)
    rows = []
    for e in sorted(events, key=lambda e: (e["event_timestamp"], e["transaction_id"])):
        request = request_of(e)
        features = service.get_online_features([request])
        assert len(features) == 1
        rows.append({"transaction_id": e["transaction_id"], **features[0]})
        service.record([request])
    return by_transaction(rows)


# --------------------------------------------------------------------------- comparison


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * max(1.0, abs(b))


def feature_mismatches(actual: Mapping, expected: Mapping) -> list[str]:
    """Differences between two feature dicts of one row, per the dtype rules of the spec."""
    problems = []
    for f in FEATURES:
        if f.name not in actual:
            problems.append(f"{f.name}: missing")
            continue
        a, b = actual[f.name], expected[f.name]
        if a is None:
            problems.append(f"{f.name}: NULL (expected {b!r})")
        elif f.dtype == "int64":
            if isinstance(a, bool) or not isinstance(a, int) or a != b:
                problems.append(f"{f.name}: {a!r} ({type(a).__name__}) != {b!r}")
        elif f.dtype == "float64":
            if (
                isinstance(a, bool)
                or not isinstance(a, (int, float))
                or not math.isfinite(a)
                or not _close(float(a), float(b))
            ):
                problems.append(f"{f.name}: {a!r} != {b!r}")
        else:
            if not isinstance(a, str) or a != b:
                problems.append(f"{f.name}: {a!r} != {b!r}")
    return problems


def assert_features_match(actual: Mapping[str, Mapping], expected: Mapping[str, Mapping], label: str) -> None:
    """Every row of `expected` is in `actual` exactly once with the same features, and no extra row."""
    missing = sorted(set(expected) - set(actual))
    extra = sorted(set(actual) - set(expected))
    assert not missing and not extra, f"{label}: rows missing {missing}, unexpected {extra}"
    report = []
    for txid in sorted(expected):
        problems = feature_mismatches(actual[txid], expected[txid])
        if problems:
            report.append(f"  {txid}: " + "; ".join(problems))
    assert not report, f"{label} differs from the reference:\n" + "\n".join(report[:20])
