"""What monitoring reads from the warehouse: the decisions logged by the endpoint (serving.prediction_log)
joined with their transactions, and the labels known on them. No dagster here.

Every function takes an open DuckDB connection and returns plain values or a frame; values go in as
bound parameters. A caller first checks `warehouse_log_exists`: before the first copy of the log there
is no serving.prediction_log to read.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import duckdb
import pandas as pd

from mlops_core.features.spec import EVENTS_TABLE, LABEL_EVENTS_TABLE
from mlops_core.serving.prediction_log import WAREHOUSE_TABLE, warehouse_log_exists

__all__ = [
    "LabelCounts",
    "ab_answers",
    "newest_event_day",
    "day_predictions",
    "first_served_day",
    "label_counts_between",
    "label_counts_landed_on",
    "latest_labels",
    "served_decisions",
    "warehouse_log_exists",
]

# The decisions a version served (not shadow scores), once per transaction, with the event time.
_SERVED_SQL = f"""
select p.transaction_id, t.account_id, p.score, p.decision, p.model_version, p.variant, p.served, t.event_timestamp,
       t.event_date
from {WAREHOUSE_TABLE} as p
join {EVENTS_TABLE} as t using (transaction_id)
where p.status = 'ok' and p.served and p.model_version = $version and t.event_date between $first and $last
qualify row_number() over (partition by p.transaction_id order by p.id) = 1
"""

# The answers served to the transactions of [first, last] by either version of an A/B test: the first served
# answer per transaction (a replay answers again, and the first answer is the one the customer met).
_AB_ANSWERS_SQL = f"""
select p.transaction_id, t.account_id, p.decision, p.model_version, p.variant, p.features, t.event_date
from {WAREHOUSE_TABLE} as p
join {EVENTS_TABLE} as t using (transaction_id)
where p.status = 'ok' and p.served and t.event_date between $first and $last
qualify row_number() over (partition by p.transaction_id order by p.id) = 1
"""

_FIRST_SERVED_SQL = f"""
select min(t.event_date) from {WAREHOUSE_TABLE} p join {EVENTS_TABLE} t using (transaction_id)
where p.status = 'ok' and p.served and p.model_version = $version
"""

# Each scored transaction of the day (served answers and shadow scores), its channel and country.
_DAY_PREDICTIONS_SQL = f"""
select p.transaction_id, p.score, p.decision, p.model_version, p.variant, p.served, p.features,
       t.channel, t.country, t.event_timestamp
from {WAREHOUSE_TABLE} as p
join {EVENTS_TABLE} as t using (transaction_id)
where p.status = 'ok' and t.event_date = $day
-- A transaction replayed or rescored by the same model counts once.
qualify row_number() over (partition by p.transaction_id, p.model_version, p.variant order by p.id) = 1
"""

# The newest verdict on each transaction of _labelled (a later revision wins), among every label known
# now or (LANDED_BY) among the labels landed by the end of a day: labels land late.
_LATEST_LABELS_SQL = f"""
select transaction_id, is_fraud from {LABEL_EVENTS_TABLE}
where transaction_id in (select transaction_id from _labelled)
qualify row_number() over (partition by transaction_id order by labeled_at desc) = 1
"""
_LATEST_LABELS_LANDED_BY_SQL = f"""
select transaction_id, is_fraud from {LABEL_EVENTS_TABLE}
where transaction_id in (select transaction_id from _labelled) and landed_date <= $day
qualify row_number() over (partition by transaction_id order by labeled_at desc) = 1
"""


def served_decisions(con: duckdb.DuckDBPyConnection, version: str, first: dt.date, last: dt.date) -> pd.DataFrame:
    """The answers registry version `version` served (status ok, served, not shadow scores) on transactions
    whose event_date is in [first, last], the first logged answer per transaction. Columns transaction_id,
    account_id, score, decision, model_version, variant, served, event_timestamp, event_date."""
    return con.execute(_SERVED_SQL, {"version": version, "first": first, "last": last}).df()


def ab_answers(con: duckdb.DuckDBPyConnection, first: dt.date, last: dt.date) -> pd.DataFrame:
    """The first served answer on each transaction whose event_date is in [first, last], whichever version gave
    it. Columns transaction_id, account_id, decision, model_version, variant, features, event_date."""
    return con.execute(_AB_ANSWERS_SQL, {"first": first, "last": last}).df()


def newest_event_day(con: duckdb.DuckDBPyConnection) -> dt.date | None:
    """The newest event_date in the warehouse's transactions; None when it holds none."""
    return con.execute(f"select max(event_date) from {EVENTS_TABLE}").fetchall()[0][0]


def first_served_day(con: duckdb.DuckDBPyConnection, version: str) -> dt.date | None:
    """The earliest event_date of a transaction `version` served an answer on; None if it never served."""
    return con.execute(_FIRST_SERVED_SQL, {"version": version}).fetchall()[0][0]


def day_predictions(con: duckdb.DuckDBPyConnection, day: dt.date) -> pd.DataFrame:
    """Every successful score logged on a transaction of event day `day`, served answers and shadow scores,
    once per (transaction, model version, variant) (a replay scores again), with the transaction's channel,
    country and event_timestamp. Columns transaction_id, score, decision, model_version, variant, served,
    features, channel, country, event_timestamp."""
    return con.execute(_DAY_PREDICTIONS_SQL, {"day": day}).df()


def latest_labels(
    con: duckdb.DuckDBPyConnection, transactions: pd.DataFrame, landed_by: dt.date | None = None
) -> pd.DataFrame:
    """The newest label (by labeled_at) on each transaction of `transactions` (a frame with a transaction_id
    column), among the labels landed by the end of `landed_by` if given, else every label known now.
    Columns transaction_id, is_fraud; a transaction without a label has no row."""
    con.register("_labelled", transactions[["transaction_id"]])
    try:
        if landed_by is None:
            return con.execute(_LATEST_LABELS_SQL).df()
        return con.execute(_LATEST_LABELS_LANDED_BY_SQL, {"day": landed_by}).df()
    finally:
        con.unregister("_labelled")


@dataclass(frozen=True)
class LabelCounts:
    """Label events and, among them, fraud verdicts."""

    labels: int
    frauds: int


def label_counts_landed_on(con: duckdb.DuckDBPyConnection, day: dt.date) -> LabelCounts:
    """Label events whose landed_date is `day`."""
    labels, frauds = con.execute(
        f"select count(*), count(*) filter (is_fraud) from {LABEL_EVENTS_TABLE} where landed_date = $day",
        {"day": day},
    ).fetchall()[0]
    return LabelCounts(int(labels), int(frauds))


def label_counts_between(con: duckdb.DuckDBPyConnection, since: dt.datetime, until: dt.datetime) -> LabelCounts:
    """Label events with since < labeled_at < until (naive UTC, as the marts store it)."""
    labels, frauds = con.execute(
        f"select count(*), count(*) filter (is_fraud) from {LABEL_EVENTS_TABLE} "
        "where labeled_at > $since and labeled_at < $until",
        {"since": since, "until": until},
    ).fetchall()[0]
    return LabelCounts(int(labels), int(frauds))
