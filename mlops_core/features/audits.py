"""The feature store's audits: leakage, join integrity, online/offline parity, online state.

Pure functions over a DuckDB connection and an OnlineStore; the Dagster checks in
mlops_assets/features/ are thin wrappers that turn the reports into check results.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import duckdb
import pandas as pd

from mlops_core.features.offline import (
    TrainingSetSpec,
    brute_force_features_sql,
    checked_identifier,
    labels_known_at_cutoff_sql,
    point_in_time_features_sql,
)
from mlops_core.features.online import AccountSnapshot, EventRecord, OnlineFeatureService
from mlops_core.features.spec import (
    ACCOUNT_HISTORY_TABLE,
    BY_NAME,
    EVENTS_TABLE,
    FEATURE_NAMES,
    LABEL_EVENTS_TABLE,
    MAX_WINDOW_SECONDS,
    REQUEST_FIELDS,
)
from mlops_core.features.stores import OnlineStore

FLOAT_RELATIVE_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Mismatch:
    transaction_id: str
    feature: str
    found: object
    expected: object


def _equal(feature: str, found: object, expected: object) -> bool:
    if BY_NAME[feature].dtype == "float64":
        found, expected = float(found), float(expected)
        return math.isclose(found, expected, rel_tol=FLOAT_RELATIVE_TOLERANCE, abs_tol=FLOAT_RELATIVE_TOLERANCE) or (
            math.isnan(found) and math.isnan(expected)
        )
    if BY_NAME[feature].dtype == "int64":
        return int(found) == int(expected)
    return found == expected


def compare_features(found: pd.DataFrame, expected: pd.DataFrame) -> tuple[list[Mismatch], set[str], set[str]]:
    """Mismatches between two feature frames keyed by transaction_id: exact for counts and
    categories, 1e-9 relative for floats. Also returns ids missing from either side."""
    found_ix, expected_ix = found.set_index("transaction_id"), expected.set_index("transaction_id")
    missing = set(expected_ix.index) - set(found_ix.index)
    extra = set(found_ix.index) - set(expected_ix.index)
    mismatches = []
    for transaction_id in sorted(set(found_ix.index) & set(expected_ix.index)):
        f_row, e_row = found_ix.loc[transaction_id], expected_ix.loc[transaction_id]
        for feature in FEATURE_NAMES:
            if not _equal(feature, f_row[feature], e_row[feature]):
                mismatches.append(Mismatch(transaction_id, feature, f_row[feature], e_row[feature]))
    return mismatches, missing, extra


@dataclass(frozen=True)
class LeakageReport:
    sampled: int
    mismatches: list[Mismatch]
    labels_after_cutoff: int
    rows_inside_maturity_window: int
    labels_not_as_known: int

    @property
    def passed(self) -> bool:
        return self.sampled > 0 and not self.mismatches and not (
            self.labels_after_cutoff or self.rows_inside_maturity_window or self.labels_not_as_known
        )

    def describe(self) -> str:
        if self.sampled == 0:
            return "No rows to audit: the training set is empty."
        parts = [f"{self.sampled} sampled rows recomputed by brute force from events strictly before each row"]
        parts.append(f"{len(self.mismatches)} feature values differ")
        parts.append(f"{self.labels_after_cutoff} labels known only after the cutoff")
        parts.append(f"{self.rows_inside_maturity_window} rows inside the label-maturity window")
        parts.append(f"{self.labels_not_as_known} labels differ from the verdict known at the cutoff")
        text = "; ".join(parts) + "."
        if self.mismatches:
            m = self.mismatches[0]
            text += f" First: {m.transaction_id}.{m.feature} = {m.found!r}, brute force gives {m.expected!r}."
        return text


def audit_point_in_time(
    con: duckdb.DuckDBPyConnection,
    table: str,
    spec: TrainingSetSpec,
    sample_size: int = 200,
    seed: int = 0,
    events: str = EVENTS_TABLE,
    account_history: str = ACCOUNT_HISTORY_TABLE,
    labels: str = LABEL_EVENTS_TABLE,
) -> LeakageReport:
    """Recompute a sample of the training set the slow way and look for anything from the future."""
    table = checked_identifier(table)
    con.execute(
        f"create or replace temp table leakage_sample as "
        f"select transaction_id from {table} using sample reservoir({int(sample_size)} rows) repeatable ({int(seed)})"
    )
    expected = con.sql(brute_force_features_sql("leakage_sample", events, account_history)).df()
    found = con.execute(
        f"select transaction_id, {', '.join(FEATURE_NAMES)} from {table} "
        f"where transaction_id in (select transaction_id from leakage_sample)"
    ).df()
    mismatches, missing, extra = compare_features(found, expected)
    mismatches += [Mismatch(t, "<row>", "missing", "present") for t in sorted(missing)]
    params = {"cutoff": spec.cutoff_naive_utc, "horizon": spec.entity_horizon}
    labels_after = con.execute(f"select count(*) from {table} where labeled_at > $cutoff", {"cutoff": params["cutoff"]}).fetchone()[0]
    inside = con.execute(f"select count(*) from {table} where event_timestamp >= $horizon", {"horizon": params["horizon"]}).fetchone()[0]
    differing = con.execute(
        f"""select count(*) from {table} as t
            left join ({labels_known_at_cutoff_sql(labels)}) as known using (transaction_id)
            where known.transaction_id is null or known.is_fraud <> t.is_fraud or known.labeled_at <> t.labeled_at""",
        {"cutoff": params["cutoff"]},
    ).fetchone()[0]
    con.execute("drop table if exists leakage_sample")
    return LeakageReport(len(expected), mismatches, labels_after, inside, differing)


@dataclass(frozen=True)
class JoinReport:
    rows: int
    expected_rows: int
    distinct_transactions: int
    null_features: dict[str, int] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.rows == self.expected_rows == self.distinct_transactions and not self.null_features

    def describe(self) -> str:
        text = (
            f"{self.rows} rows for {self.expected_rows} mature labelled transactions "
            f"({self.distinct_transactions} distinct ids): "
            f"{self.expected_rows - min(self.rows, self.distinct_transactions)} dropped, "
            f"{self.rows - self.distinct_transactions} duplicated."
        )
        if self.null_features:
            text += f" Null feature values: {self.null_features}."
        return text


def audit_join(
    con: duckdb.DuckDBPyConnection,
    table: str,
    spec: TrainingSetSpec,
    events: str = EVENTS_TABLE,
    labels: str = LABEL_EVENTS_TABLE,
) -> JoinReport:
    """The training set has exactly one row per mature labelled transaction and no nulls."""
    table, events = checked_identifier(table), checked_identifier(events)
    rows, distinct = con.execute(f"select count(*), count(distinct transaction_id) from {table}").fetchone()
    expected = con.execute(
        f"""select count(*) from {events} as e
            join ({labels_known_at_cutoff_sql(labels)}) as l using (transaction_id)
            where e.event_timestamp < $horizon and e.event_timestamp >= $start""",
        spec.entity_params,
    ).fetchone()[0]
    null_counts = con.execute(
        f"select {', '.join(f'count(*) - count({name})' for name in FEATURE_NAMES)} from {table}"
    ).fetchone()
    nulls = {name: n for name, n in zip(FEATURE_NAMES, null_counts) if n}
    return JoinReport(rows, expected, distinct, nulls)


def warehouse_events(
    con: duckdb.DuckDBPyConnection, since: object | None = None, until: object | None = None, events: str = EVENTS_TABLE
) -> Iterator[EventRecord]:
    """Events of the warehouse as online-store records, in time order; bounds are naive UTC."""
    events = checked_identifier(events)
    cursor = con.execute(
        f"""select account_id, epoch_us(event_timestamp), transaction_id, amount_usd, merchant_id, country
            from {events}
            where ($since is null or event_timestamp >= $since) and ($until is null or event_timestamp < $until)
            order by event_timestamp, transaction_id""",
        {"since": since, "until": until},
    )
    while batch := cursor.fetchmany(50_000):
        for row in batch:
            yield EventRecord(*row)


def warehouse_snapshots(
    con: duckdb.DuckDBPyConnection, account_history: str = ACCOUNT_HISTORY_TABLE
) -> list[tuple[str, AccountSnapshot]]:
    account_history = checked_identifier(account_history)
    rows = con.execute(
        f"select account_id, epoch_us(valid_from), epoch_us(created_at), home_country, age_band from {account_history}"
    ).fetchall()
    return [(a, AccountSnapshot(v, c, h, g)) for a, v, c, h, g in rows]


@dataclass(frozen=True)
class MaterializeSummary:
    events: int
    accounts: int
    offline_watermark: str | None


def materialize_online_store(
    con: duckdb.DuckDBPyConnection,
    store: OnlineStore,
    events: str = EVENTS_TABLE,
    account_history: str = ACCOUNT_HISTORY_TABLE,
) -> MaterializeSummary:
    """Rebuild the online store from the warehouse: the last 30 days of events and all snapshots."""
    events = checked_identifier(events)
    watermark, watermark_us, since = con.execute(
        f"select max(event_timestamp), max(epoch_us(event_timestamp)), "
        f"max(event_timestamp) - interval {MAX_WINDOW_SECONDS} seconds from {events}"
    ).fetchone()
    records = [] if watermark is None else list(warehouse_events(con, since=since, events=events))
    snapshots = warehouse_snapshots(con, account_history)
    store.rebuild(records, snapshots, watermark_us or 0)
    return MaterializeSummary(len(records), len({a for a, _ in snapshots}), None if watermark is None else str(watermark))


@dataclass(frozen=True)
class ParityReport:
    replayed: int
    mismatches: list[Mismatch]
    missing: int
    exact_count_features: int
    float_features: int

    @property
    def passed(self) -> bool:
        return self.replayed > 0 and not self.mismatches and not self.missing

    def describe(self) -> str:
        text = (
            f"Replayed {self.replayed} transactions through the online store (lookup, then record): "
            f"{len(self.mismatches)} values differ from the offline SQL ({self.exact_count_features} features "
            f"compared exactly, {self.float_features} to 1e-9 relative), {self.missing} rows missing."
        )
        if self.mismatches:
            m = self.mismatches[0]
            text += f" First: {m.transaction_id}.{m.feature} online {m.found!r}, offline {m.expected!r}."
        return text


def replay_parity(
    con: duckdb.DuckDBPyConnection,
    scratch_store: OnlineStore,
    transactions: int = 500,
    events: str = EVENTS_TABLE,
    account_history: str = ACCOUNT_HISTORY_TABLE,
) -> ParityReport:
    """Replay the newest `transactions` events through an empty scratch store and compare.

    The scratch store gets what a rebuild just before the replay would give it (events of
    the previous 30 days, all snapshots); each replayed transaction is looked up first
    and recorded after, as serving does. The offline SQL runs on the same events.
    """
    events = checked_identifier(events)
    start = con.execute(
        f"""select min(event_timestamp) from (
                select event_timestamp from {events} order by event_timestamp desc, transaction_id desc limit $n)""",
        {"n": int(transactions)},
    ).fetchone()[0]
    if start is None:
        return ParityReport(0, [], 0, 0, 0)
    con.execute(
        f"""create or replace temp table parity_events as
            select * from {events}
            where event_timestamp >= $start - interval {MAX_WINDOW_SECONDS} seconds""",
        {"start": start},
    )
    history = list(warehouse_events(con, until=start, events="parity_events"))
    scratch_store.rebuild(history, warehouse_snapshots(con, account_history), history[-1].ts_us if history else 0)
    service = OnlineFeatureService(scratch_store)
    replay = con.execute(
        f"""select {', '.join(REQUEST_FIELDS)} from parity_events
            where event_timestamp >= $start order by event_timestamp, transaction_id""",
        {"start": start},
    ).df()
    replay["event_timestamp"] = replay["event_timestamp"].dt.tz_localize("UTC")
    online_rows = []
    for request in replay.to_dict("records"):
        features = service.get_online_features([request])[0]
        service.record([request])
        online_rows.append({"transaction_id": request["transaction_id"], **features})
    offline = con.execute(
        f"select * from ({point_in_time_features_sql('parity_events', account_history)}) where event_timestamp >= $start",
        {"start": start},
    ).df()
    mismatches, missing, extra = compare_features(pd.DataFrame(online_rows), offline)
    con.execute("drop table if exists parity_events")
    dtypes = [BY_NAME[n].dtype for n in FEATURE_NAMES]
    return ParityReport(
        replayed=len(online_rows),
        mismatches=mismatches,
        missing=len(missing) + len(extra),
        exact_count_features=sum(d != "float64" for d in dtypes),
        float_features=sum(d == "float64" for d in dtypes),
    )
