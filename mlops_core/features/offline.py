"""Point-in-time correct features and training sets in DuckDB SQL, generated from the spec.

Windowed aggregates use window frames `RANGE BETWEEN <w> PRECEDING AND CURRENT ROW
EXCLUDE GROUP`: the frame holds the account's events in [t - w, t] and EXCLUDE GROUP
drops every event at exactly t (the row itself and its ties), leaving [t - w, t).
Account attributes come from an ASOF join on the snapshot valid strictly before t.
Labels are the newest verdict known at the training cutoff.

Identifiers in the SQL come only from the spec and from table names checked here;
every user-supplied value (cutoff, maturity, split shares) is a bound parameter.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from mlops_core.features.spec import (
    ACCOUNT_COLUMNS,
    ACCOUNT_FEATURES,
    ACCOUNT_HISTORY_TABLE,
    EVENTS_TABLE,
    FEATURE_NAMES,
    LABEL_EVENTS_TABLE,
    MAX_WINDOW_SECONDS,
    REQUEST_FEATURES,
    WINDOWED_FEATURES,
    WINDOWS,
    RequestFeature,
    WindowedFeature,
    spec_version,
)
from mlops_core.features.transforms import sql_expression
from mlops_core.splits import ALL_SPLITS, EARLY_SPLIT, SPLITS
from mlops_core.warehouse import (
    checked_identifier,  # noqa: F401  (re-exported: audits and scoring import it from here)
    memory_limit,
    transaction,
)

if TYPE_CHECKING:
    import pandas as pd

TRAINING_SET_TABLE = "features.training_set"


def _window_clause(window: str) -> str:
    seconds = WINDOWS[window]
    return (
        f"w_{window} as (partition by account_id order by event_timestamp "
        f"range between interval {seconds} seconds preceding and current row exclude group)"
    )


def _windowed_sql(f: WindowedFeature) -> str:
    w = f"w_{f.window}"
    if f.aggregation == "count":
        return f"count(*) over {w}"
    if f.aggregation == "distinct_count":
        return f"count(distinct {f.column}) over {w}"
    if f.aggregation == "seconds_since_last":
        last = f"max(event_timestamp) over {w}"
        return f"coalesce((epoch_us(event_timestamp) - epoch_us({last})) / 1000000.0, {float(f.default)!r})"
    function = {"sum": "sum", "mean": "avg", "max": "max"}[f.aggregation]
    return f"coalesce({function}({f.column}) over {w}, {float(f.default)!r})"


def _request_sql(f: RequestFeature) -> str:
    return sql_expression(f, list(f.inputs))


def point_in_time_features_sql(events: str = EVENTS_TABLE, account_history: str = ACCOUNT_HISTORY_TABLE) -> str:
    """A query giving every event in `events` its features as of its own event_timestamp.

    `events` needs the request fields (transaction_id, account_id, event_timestamp,
    amount_usd, merchant_id, merchant_category, channel, country); `account_history`
    needs account_id, valid_from, created_at, home_country, age_band.
    """
    events, account_history = checked_identifier(events), checked_identifier(account_history)
    windows = sorted({f.window for f in WINDOWED_FEATURES}, key=lambda w: WINDOWS[w])
    windowed = ",\n        ".join(f"{_windowed_sql(f)} as {f.name}" for f in WINDOWED_FEATURES)
    account = ",\n        ".join(f"coalesce(history.{f.column}, '{f.default}') as {f.name}" for f in ACCOUNT_FEATURES)
    request = ",\n        ".join(f"{_request_sql(f)} as {f.name}" for f in REQUEST_FEATURES)
    # Snapshot columns request transforms read; those that are features themselves come coalesced.
    raw_account = ", ".join(f"history.{c}" for c in ACCOUNT_COLUMNS if c not in {f.name for f in ACCOUNT_FEATURES})
    return f"""
with events as (
    select transaction_id, account_id, event_timestamp, amount_usd, merchant_id,
           merchant_category, channel, country
    from {events}
),
windowed as (
    select
        events.*,
        {windowed}
    from events
    window {", ".join(_window_clause(w) for w in windows)}
),
with_account as (
    -- The snapshot valid strictly before the event; none => an unknown account.
    select windowed.*, {raw_account},
        {account}
    from windowed
    asof left join {account_history} as history
        on windowed.account_id = history.account_id
        and windowed.event_timestamp > history.valid_from
)
select
    transaction_id, account_id, event_timestamp,
    -- Raw fields kept beside the features for per-segment evaluation; not model inputs.
    channel, country,
    {", ".join(f.name for f in WINDOWED_FEATURES)},
    {", ".join(f.name for f in ACCOUNT_FEATURES)},
    {request}
from with_account
"""


def brute_force_features_sql(
    sample: str, events: str = EVENTS_TABLE, account_history: str = ACCOUNT_HISTORY_TABLE
) -> str:
    """The same features recomputed the slow, obvious way for the entity rows in `sample`.

    Every pair (entity row, earlier event of the account within 30 days) is joined and
    each window is a FILTER on the pair's time difference: no window frames, no ASOF.
    Used by the leakage check to audit point_in_time_features_sql on a sample.
    """
    sample, events, account_history = (checked_identifier(x) for x in (sample, events, account_history))
    max_window = max(WINDOWS.values())
    aggregates = []
    for f in WINDOWED_FEATURES:
        in_window = f"p.event_timestamp >= s.event_timestamp - interval {f.window_seconds} seconds"
        if f.aggregation == "count":
            expr = f"count(p.transaction_id) filter (where {in_window})"
        elif f.aggregation == "distinct_count":
            expr = f"count(distinct p.{f.column}) filter (where {in_window})"
        elif f.aggregation == "seconds_since_last":
            expr = (
                f"coalesce((epoch_us(s.event_timestamp) - epoch_us(max(p.event_timestamp) filter (where {in_window}))) "
                f"/ 1000000.0, {float(f.default)!r})"
            )
        else:
            function = {"sum": "sum", "mean": "avg", "max": "max"}[f.aggregation]
            expr = f"coalesce({function}(p.{f.column}) filter (where {in_window}), {float(f.default)!r})"
        aggregates.append(f"{expr} as {f.name}")
    account = ", ".join(f"coalesce(h.{f.column}, '{f.default}') as {f.name}" for f in ACCOUNT_FEATURES)
    request = ",\n        ".join(f"{_request_sql(f)} as {f.name}" for f in REQUEST_FEATURES)
    raw_account = ", ".join(f"h.{c}" for c in ACCOUNT_COLUMNS if c not in {f.name for f in ACCOUNT_FEATURES})
    return f"""
with entity as (
    select e.transaction_id, e.account_id, e.event_timestamp, e.amount_usd, e.merchant_id,
           e.merchant_category, e.channel, e.country
    from {sample} as s join {events} as e using (transaction_id)
),
windowed as (
    select s.transaction_id,
        {", ".join(aggregates)}
    from entity as s
    left join {events} as p
        on p.account_id = s.account_id
        and p.event_timestamp < s.event_timestamp
        and p.event_timestamp >= s.event_timestamp - interval {max_window} seconds
    group by s.transaction_id, s.event_timestamp
),
latest_snapshot as (
    select s.transaction_id, max(h.valid_from) as valid_from
    from entity as s join {account_history} as h
        on h.account_id = s.account_id and h.valid_from < s.event_timestamp
    group by s.transaction_id
),
joined as (
    select entity.*, windowed.* exclude (transaction_id), {raw_account}, {account}
    from entity
    join windowed using (transaction_id)
    left join latest_snapshot using (transaction_id)
    left join {account_history} as h
        on h.account_id = entity.account_id and h.valid_from = latest_snapshot.valid_from
)
select transaction_id, account_id, event_timestamp,
    {", ".join(f.name for f in WINDOWED_FEATURES)},
    {", ".join(f.name for f in ACCOUNT_FEATURES)},
    {request}
from joined
"""


@dataclass(frozen=True)
class TrainingSetSpec:
    """What goes into a training set; all of it is recorded in the metadata."""

    cutoff: dt.datetime
    # A legitimate transaction gets its label only when it matures; younger ones have
    # only their fraud labels, which would inflate the fraud rate of the latest split.
    label_maturity_days: int = 45
    validation_share: float = 0.15
    test_share: float = 0.15
    # Only transactions in the last `lookback_days` before the maturity horizon (None: all history):
    # after the world changed, old behaviour stops outweighing the new in the train split.
    lookback_days: int | None = None
    # Also train on the frauds already confirmed inside the maturity window (a customer report, an early
    # chargeback), as split 'early': a new fraud pattern reaches the model days before its transactions
    # mature (docs/monitoring.md, "Training on the newest labels").
    early_frauds: bool = False

    def __post_init__(self) -> None:
        if self.lookback_days is not None and self.lookback_days < 1:
            raise ValueError(f"lookback_days must be >= 1 or None, got {self.lookback_days}")
        if self.cutoff.tzinfo is None:
            raise ValueError(f"cutoff must be timezone-aware (UTC), got {self.cutoff!r}")
        if self.label_maturity_days < 0:
            raise ValueError(f"label_maturity_days must be >= 0, got {self.label_maturity_days}")
        if not (
            0 < self.validation_share < 1 and 0 < self.test_share < 1 and self.validation_share + self.test_share < 1
        ):
            raise ValueError(
                f"validation_share and test_share must be in (0, 1) and sum below 1, got "
                f"{self.validation_share} and {self.test_share}"
            )

    @property
    def cutoff_naive_utc(self) -> dt.datetime:
        # The warehouse stores naive UTC timestamps.
        return self.cutoff.astimezone(dt.UTC).replace(tzinfo=None)

    @property
    def entity_horizon(self) -> dt.datetime:
        """Transactions at or after this instant are too young to have a mature label."""
        return self.cutoff_naive_utc - dt.timedelta(days=self.label_maturity_days)

    @property
    def entity_start(self) -> dt.datetime:
        """Transactions before this instant are left out (the lookback window's start)."""
        if self.lookback_days is None:
            return dt.datetime(1900, 1, 1)
        return self.entity_horizon - dt.timedelta(days=self.lookback_days)

    @property
    def rows_end(self) -> dt.datetime:
        """No row is at or after this instant: the horizon, or the cutoff when early frauds are kept."""
        return self.cutoff_naive_utc if self.early_frauds else self.entity_horizon

    @property
    def entity_params(self) -> dict[str, dt.datetime]:
        return {"cutoff": self.cutoff_naive_utc, "horizon": self.entity_horizon, "start": self.entity_start}


@dataclass(frozen=True)
class TrainingSetSummary:
    rows: int
    rows_by_split: dict[str, int]
    fraud_rate_by_split: dict[str, float]
    split_bounds: dict[str, tuple[str, str]]
    entity_rows: int
    labels_after_cutoff: int
    unlabeled_mature_transactions: int
    data_version: str


def labels_known_at_cutoff_sql(labels: str = LABEL_EVENTS_TABLE) -> str:
    """The newest verdict per transaction among those known by the cutoff ($cutoff)."""
    labels = checked_identifier(labels)
    return f"""
select
    transaction_id,
    -- The newest verdict; on equal times fraud wins (a hash aggregate, not a sort).
    arg_max(is_fraud, (labeled_at, is_fraud, label_source)) as is_fraud,
    max(labeled_at) as labeled_at,
    arg_max(label_source, (labeled_at, is_fraud, label_source)) as label_source
from {labels}
where labeled_at <= $cutoff
group by transaction_id
"""


# DuckDB's memory limit for a training-set build unless the caller sets one: with the slices, it keeps the whole
# process under 4 GB at 30M transactions (benchmarks/memory.py); DuckDB spills to disk past it.
DEFAULT_WAREHOUSE_MEMORY = "2GB"

# Rows per slice of an automatically sliced build: the window query sorts one slice at a time, so DuckDB's
# peak memory follows this number, not the history's length (benchmarks/memory.py measures it).
ROWS_PER_SLICE = 2_000_000


def _history_start(spec: TrainingSetSpec) -> dt.datetime:
    """The oldest event any kept row's windows read: the lookback's start less the longest window."""
    return spec.entity_start - dt.timedelta(seconds=MAX_WINDOW_SECONDS)


def slices_for(con: duckdb.DuckDBPyConnection, spec: TrainingSetSpec, events: str = EVENTS_TABLE) -> int:
    """How many account-hash slices keep each slice's window query near ROWS_PER_SLICE events: the events of
    [history start, horizon), the ones the slices read."""
    events = checked_identifier(events)
    rows = con.execute(
        f"select count(*) from {events} where event_timestamp < $horizon and event_timestamp >= $history_start",
        {"horizon": spec.entity_horizon, "history_start": _history_start(spec)},
    ).fetchone()[0]
    return max(1, -(-rows // ROWS_PER_SLICE))


def build_training_set(
    con: duckdb.DuckDBPyConnection,
    spec: TrainingSetSpec,
    target: str = TRAINING_SET_TABLE,
    events: str = EVENTS_TABLE,
    account_history: str = ACCOUNT_HISTORY_TABLE,
    labels: str = LABEL_EVENTS_TABLE,
    slices: int | None = 1,
    warehouse_memory: str | None = None,
    on_step: Callable[[str], None] | None = None,
    staging_dir: str | Path | None = None,
) -> TrainingSetSummary:
    """Write `target`: one row per mature labelled transaction, features as of its event time.

    The rows are built one account-hash bucket at a time (`write_bucket`), each into its own Parquet file, and
    the table is made of the files (`combine_buckets`). Every window, the account join and the labels are per
    account, so a bucket holds every row its accounts' features read, and the table is the same, row for row,
    whatever the count (tested). DuckDB then sorts one bucket at a time, which bounds its memory. `slices` is
    the count; None picks it from the events (`slices_for`). The splits are cut afterwards, on all rows.
    The training_set asset runs the same two functions as separate steps (one pod per bucket on Kubernetes).

    `warehouse_memory` caps DuckDB's memory for the build (`warehouse.memory_limit`): the steps that still see
    every row (the split cut, the summary) then spill instead of growing with the history. `on_step` is told
    the name of each step as it starts (the memory benchmark traces RSS by step). The bucket files go to a
    temporary folder under `staging_dir` (default: the system's), removed when the build ends.

    Replaces the table in one transaction, so a failed build leaves the previous one.
    """
    if slices is None:
        slices = slices_for(con, spec, events)
    if slices < 1:
        raise ValueError(f"slices must be >= 1 or None, got {slices}")
    step = on_step or (lambda name: None)
    with (
        memory_limit(con, warehouse_memory),
        tempfile.TemporaryDirectory(prefix="training_set_buckets_", dir=staging_dir) as folder,
    ):
        paths = []
        for bucket in range(slices):
            step(f"slice {bucket + 1}/{slices}")
            paths.append(Path(folder) / bucket_file_name(bucket, slices))
            write_bucket(con, spec, bucket, slices, paths[-1], events, account_history, labels)
        step("splits")
        combine_buckets(con, spec, paths, target)
        step("summary")
        return summarize_training_set(con, spec, target, events, labels)


def plan_asof_as_a_sorted_join(con: duckdb.DuckDBPyConnection) -> None:
    """Keep the account join a sorted ASOF join, never a nested loop.

    DuckDB turns an ASOF join into a nested-loop join when it estimates at most `asof_loop_join_threshold`
    rows on its left side. It cannot estimate a CTE filtered by bound parameters (a bucket's events), so it
    guessed low and looped: on 1M transactions of 20k accounts the join took 29 s of a 36 s bucket, and
    4.6 s for the whole bucket as a sorted join (benchmarks/RESULTS.md, the feature-store section)."""
    con.execute("set asof_loop_join_threshold = 0")


def bucket_file_name(bucket: int, buckets: int) -> str:
    return f"bucket_{bucket:04d}_of_{buckets:04d}.parquet"


def write_bucket(
    con: duckdb.DuckDBPyConnection,
    spec: TrainingSetSpec,
    bucket: int,
    buckets: int,
    path: str | Path,
    events: str = EVENTS_TABLE,
    account_history: str = ACCOUNT_HISTORY_TABLE,
    labels: str = LABEL_EVENTS_TABLE,
) -> int:
    """Write the training rows of the accounts with `hash(account_id) % buckets = bucket` to a Parquet file at
    `path`; returns how many. Reads the warehouse only, so it runs beside other readers (a bucket step's pod).

    Only the bucket's events before the horizon and within the windows' reach of the lookback are read, and
    only the label events of those transactions: memory follows the bucket, not the history."""
    # COPY takes no bound parameter for its target, so the relation writes the file: the path never enters SQL.
    # On its own cursor: a relation with parameters leaves its connection busy until it is closed.
    cursor = con.cursor()
    try:
        bucket_rows(cursor, con, spec, bucket, buckets, events, account_history, labels).write_parquet(str(path))
    finally:
        cursor.close()
    return con.execute("select count(*) from read_parquet($path)", {"path": str(path)}).fetchone()[0]


def bucket_rows(
    cursor: duckdb.DuckDBPyConnection,
    con: duckdb.DuckDBPyConnection,
    spec: TrainingSetSpec,
    bucket: int,
    buckets: int,
    events: str = EVENTS_TABLE,
    account_history: str = ACCOUNT_HISTORY_TABLE,
    labels: str = LABEL_EVENTS_TABLE,
) -> duckdb.DuckDBPyRelation:
    """The relation `write_bucket` writes, on `cursor` (a cursor of `con`, set up here like `con`)."""
    events, account_history, labels = (checked_identifier(x) for x in (events, account_history, labels))
    if not 0 <= bucket < buckets:
        raise ValueError(f"bucket must be in [0, {buckets}), got {bucket}")
    params = spec.entity_params
    # The labels' SQL reads a named relation; the CTE holds only this bucket's transactions' label events.
    known_labels = labels_known_at_cutoff_sql("bucket_label_events")
    # A cursor starts with the default session settings: the caller's time zone decides calendar features.
    time_zone = con.execute("select current_setting('TimeZone')").fetchone()[0]
    cursor.execute("set TimeZone = $time_zone", {"time_zone": time_zone})
    plan_asof_as_a_sorted_join(cursor)
    return cursor.sql(
        f"""
with bucket_events as (
    -- Only the windows' reach before the lookback's start: no feature of a kept row reads further back.
    select * from {events}
    where event_timestamp < $rows_end and event_timestamp >= $history_start
      and hash(account_id) % $buckets = $bucket
),
bucket_history as (
    select * from {account_history} where hash(account_id) % $buckets = $bucket
),
bucket_label_events as (
    select * from {labels}
    where transaction_id in (select transaction_id from bucket_events where event_timestamp >= $start)
),
bucket_labels as ({known_labels})
select features.*, labels.is_fraud, labels.labeled_at, labels.label_source
from ({point_in_time_features_sql("bucket_events", "bucket_history")}) as features
join bucket_labels as labels using (transaction_id)
where features.event_timestamp >= $start
  and (features.event_timestamp < $horizon or (labels.is_fraud and features.event_timestamp < $rows_end))
""",
        params={
            "horizon": params["horizon"],
            "rows_end": spec.rows_end,
            "start": params["start"],
            "cutoff": params["cutoff"],
            "history_start": _history_start(spec),
            "buckets": buckets,
            "bucket": bucket,
        },
    )


def combine_buckets(
    con: duckdb.DuckDBPyConnection, spec: TrainingSetSpec, paths: list[str | Path], target: str = TRAINING_SET_TABLE
) -> None:
    """Replace `target` with the rows of the bucket files, the time splits cut over all of them, in one
    transaction: a failure leaves the previous table."""
    target = checked_identifier(target)
    if not paths:
        raise ValueError("no bucket files to combine")
    missing = [str(p) for p in paths if not Path(p).exists()]
    if missing:
        raise FileNotFoundError(f"bucket files missing: {missing}")
    schema = checked_identifier(target.split(".")[0]) if "." in target else None
    if schema:
        con.execute(f"create schema if not exists {schema}")
    with transaction(con):
        con.execute(
            f"""
create or replace table {target} as
with bounds as (
    -- The time splits are cut over the mature rows only; the early frauds are training rows.
    select
        quantile_disc(event_timestamp, {float(1 - spec.validation_share - spec.test_share)!r}) as train_end,
        quantile_disc(event_timestamp, {float(1 - spec.test_share)!r}) as validation_end
    from read_parquet($files)
    where event_timestamp < $horizon
)
select
    entity.*,
    case
        when event_timestamp >= $horizon then '{EARLY_SPLIT}'
        when event_timestamp <= bounds.train_end then 'train'
        when event_timestamp <= bounds.validation_end then 'validation'
        else 'test'
    end as split
from read_parquet($files) as entity, bounds
""",
            {"files": [str(p) for p in paths], "horizon": spec.entity_horizon},
        )


def summarize_training_set(
    con: duckdb.DuckDBPyConnection,
    spec: TrainingSetSpec,
    target: str = TRAINING_SET_TABLE,
    events: str = EVENTS_TABLE,
    labels: str = LABEL_EVENTS_TABLE,
) -> TrainingSetSummary:
    target, events, labels = (checked_identifier(x) for x in (target, events, labels))
    by_split = con.execute(
        f"""select split, count(*), avg(cast(is_fraud as double)),
                   cast(min(event_timestamp) as varchar), cast(max(event_timestamp) as varchar)
            from {target} group by split"""
    ).fetchall()
    splits = ALL_SPLITS if spec.early_frauds else SPLITS
    rows_by_split = {s: 0 for s in splits}
    fraud_rate = {s: 0.0 for s in splits}
    bounds: dict[str, tuple[str, str]] = {}
    for split, n, rate, first, last in by_split:
        rows_by_split[split], fraud_rate[split], bounds[split] = n, rate, (first, last)
    params = spec.entity_params
    entity_rows = con.execute(
        f"select count(*) from {events} where event_timestamp < $horizon and event_timestamp >= $start",
        {"horizon": spec.entity_horizon, "start": spec.entity_start},
    ).fetchone()[0]
    labels_after = con.execute(
        f"select count(*) from {labels} where labeled_at > $cutoff", {"cutoff": params["cutoff"]}
    ).fetchone()[0]
    unlabeled = con.execute(
        f"""select count(*) from {events} as e
            where e.event_timestamp < $horizon and e.event_timestamp >= $start
              and not exists (select 1 from {labels} as l where l.transaction_id = e.transaction_id and l.labeled_at <= $cutoff)""",
        params,
    ).fetchone()[0]
    return TrainingSetSummary(
        rows=sum(rows_by_split.values()),
        rows_by_split=rows_by_split,
        fraud_rate_by_split=fraud_rate,
        split_bounds=bounds,
        entity_rows=entity_rows,
        labels_after_cutoff=labels_after,
        unlabeled_mature_transactions=unlabeled,
        data_version=data_version(con, target),
    )


def data_version(con: duckdb.DuckDBPyConnection, table: str = TRAINING_SET_TABLE) -> str:
    """A content hash of the table: order-independent, changes with any value, row or the spec."""
    table = checked_identifier(table)
    columns = ["transaction_id", "is_fraud", "labeled_at", "split", *FEATURE_NAMES]
    rows, digest = con.execute(f"select count(*), coalesce(sum(hash({', '.join(columns)})), 0) from {table}").fetchone()
    return hashlib.sha256(f"{rows}:{digest}:{spec_version()}".encode()).hexdigest()[:16]


def day_bounds(day: dt.date) -> tuple[dt.datetime, dt.datetime, dt.datetime]:
    """(history start, day start, day end) as naive UTC: [since, until) is what scoring reads."""
    start = dt.datetime.combine(day, dt.time())
    return start - dt.timedelta(seconds=MAX_WINDOW_SECONDS), start, start + dt.timedelta(days=1)


def day_features(
    con: duckdb.DuckDBPyConnection,
    day: dt.date,
    events: str = EVENTS_TABLE,
    account_history: str = ACCOUNT_HISTORY_TABLE,
) -> pd.DataFrame:
    """Every transaction whose event_timestamp falls on `day`, with its features as of its own time,
    in (event_timestamp, transaction_id) order: what batch scoring scores and feature drift compares.

    The point-in-time SQL runs over the events of [day - 30 days, day + 1) of the accounts that
    transact on the day only, so each row sees exactly the history it would see over the whole
    warehouse; the restriction is a CTE with bound parameters (DuckDB refuses them in a view)."""
    events = checked_identifier(events)
    since, start, until = day_bounds(day)
    plan_asof_as_a_sorted_join(con)
    return con.execute(
        f"""
with scoring_window as (
    select * from {events}
    where event_timestamp >= $since and event_timestamp < $until
      and account_id in (select account_id from {events} where event_timestamp >= $start and event_timestamp < $until)
)
select * from ({point_in_time_features_sql("scoring_window", account_history)})
where event_timestamp >= $start
order by event_timestamp, transaction_id
""",
        {"since": since, "start": start, "until": until},
    ).df()


def read_training_set(con: duckdb.DuckDBPyConnection, table: str = TRAINING_SET_TABLE) -> pd.DataFrame:
    """Every row of the training set in (event_timestamp, transaction_id) order. The table is written by
    parallel threads and row order feeds the seeded subsample and the evaluation's samples: an unordered
    read made retraining irreproducible."""
    table = checked_identifier(table)
    return con.execute(f"select * from {table} order by event_timestamp, transaction_id").df()


def newest_landed_day(con: duckdb.DuckDBPyConnection, events: str = EVENTS_TABLE) -> dt.date | None:
    """The newest landed_date of the transactions in the warehouse; None when there are none."""
    events = checked_identifier(events)
    return con.execute(f"select max(landed_date) from {events}").fetchone()[0]


def newest_event_us(con: duckdb.DuckDBPyConnection, events: str = EVENTS_TABLE) -> int | None:
    """The newest event_timestamp of the transactions in the warehouse, in unix microseconds (the online
    store's watermark unit); None when there are none."""
    events = checked_identifier(events)
    return con.execute(f"select max(epoch_us(event_timestamp)) from {events}").fetchone()[0]
