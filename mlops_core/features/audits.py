"""The feature store's audits: leakage, join integrity, online/offline parity, online state.

Pure functions over a DuckDB connection and an OnlineStore; the Dagster checks in
mlops_assets/features/ are thin wrappers that turn the reports into check results.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import duckdb
import pandas as pd

from mlops_core.features.offline import (
    EARLY_SPLIT,
    TrainingSetSpec,
    brute_force_features_sql,
    checked_identifier,
    labels_known_at_cutoff_sql,
    point_in_time_features_sql,
)
from mlops_core.features.online import (
    DEFAULT_ALLOWED_LATENESS_SECONDS,
    MICROS,
    AccountSnapshot,
    EventRecord,
    OnlineFeatureService,
    TooLateError,
)
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

# Floats differ only by summation order (math.fsum online, DuckDB's window sums offline): about
# 1e-13 relative here. Purely relative, so a 0.1% error fails at any magnitude, even a 1 us gap.
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
        return math.isclose(found, expected, rel_tol=FLOAT_RELATIVE_TOLERANCE) or (
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
        return (
            self.sampled > 0
            and not self.mismatches
            and not (self.labels_after_cutoff or self.rows_inside_maturity_window or self.labels_not_as_known)
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
    labels_after = con.execute(
        f"select count(*) from {table} where labeled_at > $cutoff", {"cutoff": params["cutoff"]}
    ).fetchone()[0]
    # Inside the maturity window only the early frauds belong, and only when the spec keeps them.
    inside = con.execute(
        f"select count(*) from {table} where event_timestamp >= $horizon "
        f"and not ($early and split = '{EARLY_SPLIT}' and is_fraud and event_timestamp < $cutoff)",
        {"horizon": params["horizon"], "cutoff": params["cutoff"], "early": spec.early_frauds},
    ).fetchone()[0]
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
            f"{self.rows} rows for {self.expected_rows} labelled transactions "
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
    """The training set has exactly one row per mature labelled transaction (and, when the spec keeps them, per
    fraud already confirmed inside the maturity window) and no nulls."""
    table, events = checked_identifier(table), checked_identifier(events)
    rows, distinct = con.execute(f"select count(*), count(distinct transaction_id) from {table}").fetchone()
    expected = con.execute(
        f"""select count(*) from {events} as e
            join ({labels_known_at_cutoff_sql(labels)}) as l using (transaction_id)
            where e.event_timestamp >= $start
              and (e.event_timestamp < $horizon or ($early and l.is_fraud and e.event_timestamp < $cutoff))""",
        {**spec.entity_params, "early": spec.early_frauds},
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
    retained_since: str | None = None


def materialize_online_store(
    con: duckdb.DuckDBPyConnection,
    store: OnlineStore,
    events: str = EVENTS_TABLE,
    account_history: str = ACCOUNT_HISTORY_TABLE,
    allowed_lateness_seconds: int = DEFAULT_ALLOWED_LATENESS_SECONDS,
) -> MaterializeSummary:
    """Rebuild the online store from the warehouse: all snapshots, and the events of the longest
    window plus the allowed lateness before the newest, so a transaction that much older than the
    newest still finds its whole window."""
    events = checked_identifier(events)
    retained = MAX_WINDOW_SECONDS + int(allowed_lateness_seconds)
    watermark, watermark_us, since = con.execute(
        f"select max(event_timestamp), max(epoch_us(event_timestamp)), "
        f"max(event_timestamp) - interval {retained} seconds from {events}"
    ).fetchone()
    records = [] if watermark is None else list(warehouse_events(con, since=since, events=events))
    snapshots = warehouse_snapshots(con, account_history)
    store.rebuild(records, snapshots, watermark_us or 0, allowed_lateness_us=int(allowed_lateness_seconds) * MICROS)
    return MaterializeSummary(
        len(records),
        len({a for a, _ in snapshots}),
        None if watermark is None else str(watermark),
        None if since is None else str(since),
    )


@dataclass(frozen=True)
class ParityReport:
    replayed: int  # answers compared with the offline build (exact retries and tied twins included)
    mismatches: list[Mismatch]
    missing: int  # replayed transactions without an answer, or refused as too late
    exact_count_features: int
    float_features: int
    batches: int = 0
    burst_batches: int = 0  # batches holding several transactions of one account
    tied_rows: int = 0  # rows sharing their account and instant with another row of their batch
    twins: int = 0  # tied transactions added to the replay (and to the offline side)
    late: int = 0  # transactions sent after later ones of their account were recorded and a rebuild
    resent_exact: int = 0  # retries of a scored transaction, same fields: compared with its offline values
    resent_altered: int = 0  # ids re-sent with another time and amount: must not count again
    refused: int = 0  # rows the store refused as too late (a failure: all are within the allowed lateness)

    @property
    def passed(self) -> bool:
        return self.replayed > 0 and not self.mismatches and not self.missing and not self.refused

    def describe(self) -> str:
        text = (
            f"Replayed {self.replayed} answers through the online store in {self.batches} batches "
            f"({self.burst_batches} with several transactions of one account, {self.tied_rows} rows tied with one "
            f"of their batch ({self.twins} tied twins added), {self.late} late transactions after a rebuild, {self.resent_exact} exact retries, "
            f"{self.resent_altered} ids re-sent with another time and amount): "
            f"{len(self.mismatches)} values differ from the offline SQL ({self.exact_count_features} features "
            f"compared exactly, {self.float_features} to {FLOAT_RELATIVE_TOLERANCE:g} relative), "
            f"{self.missing} rows missing, {self.refused} refused as too late."
        )
        if self.mismatches:
            m = self.mismatches[0]
            text += f" First: {m.transaction_id}.{m.feature} online {m.found!r}, offline {m.expected!r}."
        return text


# Every TWIN_EVERY-th replayed transaction gets a tied twin, so ties are replayed even when the
# warehouse, with its one-second timestamps, has few.
TWIN_EVERY = 10
TWIN_SUFFIX = "~tie"
# Transactions of one account less than this apart arrive together, as one burst.
BURST_SECONDS = 3_600
BURST_MAX_ROWS = 6
BATCH_MAX_ROWS = 16


def _bursts(rows: list[dict]) -> list[list[dict]]:
    """Rows (in event order) cut into per-account bursts: consecutive transactions of an account
    less than BURST_SECONDS after the burst's first, at most BURST_MAX_ROWS; ordered by their newest."""
    open_: dict[str, list[dict]] = {}
    done: list[list[dict]] = []
    for row in rows:
        burst = open_.get(row["account_id"])
        if burst is not None and (
            len(burst) >= BURST_MAX_ROWS
            or (row["event_timestamp"] - burst[0]["event_timestamp"]).total_seconds() >= BURST_SECONDS
        ):
            done.append(burst)
            burst = None
        if burst is None:
            burst = open_[row["account_id"]] = []
        burst.append(row)
    done += open_.values()
    return sorted(done, key=lambda b: (b[-1]["event_timestamp"], b[-1]["transaction_id"]))


def _batches(bursts: list[list[dict]]) -> list[list[dict]]:
    """Bursts packed, in delivery order, into request batches; each batch newest first, so the
    request order is not the event order."""
    batches: list[list[dict]] = []
    current: list[dict] = []
    for burst in bursts:
        if current and len(current) + len(burst) > BATCH_MAX_ROWS:
            batches.append(current[::-1])
            current = []
        current += burst
    if current:
        batches.append(current[::-1])
    return batches


def replay_parity(
    con: duckdb.DuckDBPyConnection,
    scratch_store: OnlineStore,
    transactions: int = 500,
    events: str = EVENTS_TABLE,
    account_history: str = ACCOUNT_HISTORY_TABLE,
    allowed_lateness_seconds: int = DEFAULT_ALLOWED_LATENESS_SECONDS,
) -> ParityReport:
    """Replay the newest `transactions` events through an empty scratch store as serving
    traffic would bring them, and compare every answer with the offline point-in-time build.

    0. Every tenth replayed transaction gets a twin, another transaction of its account at the
       same instant ('<id>~tie', half its amount plus one, another merchant), on both sides of
       the comparison: ties are replayed even when the warehouse has none.
    1. The scratch store is rebuilt from the warehouse as it was before the replay.
    2. On time: every fifth account's transactions among the older half of those within the
       allowed lateness of the newest are held back as late; the rest arrive in bursts (an account's
       transactions less than an hour apart in one batch, ties included), several bursts per
       batch, newest first; each batch is looked up, then recorded. Every fifth row of a batch
       is retried unchanged in the next batch, every seventh re-sent with another time and amount.
    3. A rebuild from the warehouse as serving saw it (without the late transactions) prunes
       to its retention; then the late transactions arrive the same way.

    On-time answers (and their exact retries) must equal the offline build over the warehouse
    without the late transactions (they had not arrived); late ones the offline build over all.
    Altered re-sends are not compared: they must only never count twice.
    """
    events = checked_identifier(events)
    start = con.execute(
        f"""select min(event_timestamp) from (
                select event_timestamp from {events} order by event_timestamp desc, transaction_id desc limit $n)""",
        {"n": int(transactions)},
    ).fetchone()[0]
    dtypes = [BY_NAME[n].dtype for n in FEATURE_NAMES]
    exact, floats = sum(d != "float64" for d in dtypes), sum(d == "float64" for d in dtypes)
    if start is None:
        return ParityReport(0, [], 0, exact, floats)
    fields = ", ".join(REQUEST_FIELDS)
    con.execute(
        f"""create or replace temp table parity_events as
            select {fields} from {events} where event_timestamp >= $start - interval {MAX_WINDOW_SECONDS} seconds""",
        {"start": start},
    )
    # Twins: another transaction of the account at the same instant, on both sides of the comparison.
    con.execute(
        f"""insert into parity_events ({fields})
            select transaction_id || $twin, account_id, event_timestamp, amount_usd * 0.5 + 1,
                   merchant_id || $twin, merchant_category, channel, country
            from (select *, row_number() over (order by event_timestamp, transaction_id) as nth
                  from parity_events where event_timestamp >= $start)
            where nth % {TWIN_EVERY} = 0""",
        {"start": start, "twin": TWIN_SUFFIX},
    )
    replay = con.execute(
        f"""select {", ".join(REQUEST_FIELDS)} from parity_events
            where event_timestamp >= $start order by event_timestamp, transaction_id""",
        {"start": start},
    ).df()
    replay["event_timestamp"] = replay["event_timestamp"].dt.tz_localize("UTC")
    rows = replay.to_dict("records")
    newest = rows[-1]["event_timestamp"]
    accounts = sorted({r["account_id"] for r in rows})
    late_accounts = set(accounts[::5])
    # Late candidates: the older half of the rows within the allowed lateness of the newest, so the
    # newest (the rebuild's watermark) is always on time.
    within = [r for r in rows if (newest - r["event_timestamp"]).total_seconds() <= allowed_lateness_seconds]
    late_ids = {r["transaction_id"] for r in within[: len(within) // 2] if r["account_id"] in late_accounts}
    con.execute("create or replace temp table parity_late (transaction_id varchar)")
    if late_ids:
        con.executemany("insert into parity_late values (?)", [(t,) for t in sorted(late_ids)])
    con.execute(
        "create or replace temp table parity_history as select * from parity_events where event_timestamp < $start",
        {"start": start},
    )
    con.execute(
        "create or replace temp table parity_known as select * from parity_events anti join parity_late using (transaction_id)"
    )

    def offline_rows(table: str) -> dict[str, dict]:
        frame = con.execute(
            f"select * from ({point_in_time_features_sql(table, account_history)}) where event_timestamp >= $start",
            {"start": start},
        ).df()
        return {r["transaction_id"]: r for r in frame.to_dict("records")}

    expected_known, expected_all = offline_rows("parity_known"), offline_rows("parity_events")
    service = OnlineFeatureService(scratch_store)
    answers: list[tuple[str, dict, dict]] = []  # (transaction id, online features, offline row)
    stats = {"batches": 0, "burst_batches": 0, "tied_rows": 0, "resent_exact": 0, "resent_altered": 0, "refused": 0}

    def send(phase_rows: list[dict], expected: dict[str, dict]) -> None:
        pending: list[tuple[dict, str]] = []  # re-sends of the previous batch: (request, "retry" or "altered")
        for batch in [*_batches(_bursts(phase_rows)), []]:
            requests = [(r, "original") for r in batch] + pending
            if not requests:
                continue
            pending = [(r, "retry") for r in batch[::5]] + [
                (
                    {
                        **r,
                        "event_timestamp": r["event_timestamp"] + pd.Timedelta(minutes=7),
                        "amount_usd": r["amount_usd"] * 2 + 1,
                    },
                    "altered",
                )
                for r in batch[3::7]
            ]
            payload = [r for r, _ in requests]
            stats["batches"] += 1
            stats["burst_batches"] += any(n > 1 for n in Counter(r["account_id"] for r in batch).values())
            stats["tied_rows"] += sum(
                n for n in Counter((r["account_id"], r["event_timestamp"]) for r in batch).values() if n > 1
            )
            try:
                features = service.get_online_features(payload)
            except TooLateError as exc:
                stats["refused"] += len(exc.rows)
                continue
            service.record(payload)
            for (request, kind), found in zip(requests, features):
                if kind == "altered":
                    stats["resent_altered"] += 1
                    continue
                stats["resent_exact"] += kind == "retry"
                answers.append((request["transaction_id"], found, expected[request["transaction_id"]]))

    materialize_online_store(con, scratch_store, "parity_history", account_history, allowed_lateness_seconds)
    send([r for r in rows if r["transaction_id"] not in late_ids], expected_known)
    materialize_online_store(con, scratch_store, "parity_known", account_history, allowed_lateness_seconds)
    send([r for r in rows if r["transaction_id"] in late_ids], expected_all)
    for name in ("parity_events", "parity_late", "parity_history", "parity_known"):
        con.execute(f"drop table if exists {name}")

    mismatches = [
        Mismatch(txid, feature, found[feature], offline[feature])
        for txid, found, offline in answers
        for feature in FEATURE_NAMES
        if not _equal(feature, found[feature], offline[feature])
    ]
    answered = {txid for txid, _, _ in answers}
    return ParityReport(
        replayed=len(answers),
        mismatches=mismatches,
        missing=len({r["transaction_id"] for r in rows} - answered),
        exact_count_features=exact,
        float_features=floats,
        batches=stats["batches"],
        burst_batches=stats["burst_batches"],
        tied_rows=stats["tied_rows"],
        twins=sum(r["transaction_id"].endswith(TWIN_SUFFIX) for r in rows),
        late=len(late_ids),
        resent_exact=stats["resent_exact"],
        resent_altered=stats["resent_altered"],
        refused=stats["refused"],
    )
