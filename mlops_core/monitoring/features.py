"""The two sides feature drift compares, read from the warehouse: the day's transactions with their
features as of their own time (the point-in-time SQL batch scoring reads too), and a sample of the
training set's rows whose windowed features were warm. No dagster here."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import duckdb
import pandas as pd

from mlops_core.features.offline import TRAINING_SET_TABLE, checked_identifier, day_features
from mlops_core.features.spec import EVENTS_TABLE, MAX_WINDOW_SECONDS

# Seed of the reservoir sample: the same training set gives the same reference every day.
REFERENCE_SEED = 7


def current_features(con: duckdb.DuckDBPyConnection, day: dt.date) -> pd.DataFrame:
    """Every transaction of event day `day` with its features as of its own time, in (event_timestamp,
    transaction_id) order: the current side of feature drift. Empty on a day without transactions."""
    return day_features(con, day)


def first_event(con: duckdb.DuckDBPyConnection) -> dt.datetime | None:
    """The first landed transaction's timestamp (None on an empty warehouse): where every window starts
    filling up (monitoring/drift_scope.py)."""
    return con.execute(f"select min(event_timestamp) from {EVENTS_TABLE}").fetchall()[0][0]


def warm_from(con: duckdb.DuckDBPyConnection) -> dt.datetime | None:
    """The first instant whose windowed features are warm: the longest feature window after the first
    transaction in the warehouse. Before it, 30-day counts and sums are still filling up. None on an
    empty warehouse."""
    return con.execute(
        f"select min(event_timestamp) + to_seconds($window) from {EVENTS_TABLE}", {"window": MAX_WINDOW_SECONDS}
    ).fetchall()[0][0]


def reference_features(
    con: duckdb.DuckDBPyConnection, features: Sequence[str], rows: int, min_warm_rows: int
) -> tuple[pd.DataFrame, str]:
    """The reference side of feature drift: the columns `features` of at most `rows` training-set rows from
    `warm_from` on, and a note saying which rows they are. Compared with warm-up rows, every later day would
    look drifted; with fewer than `min_warm_rows` warm rows, the rows are drawn from the whole training set
    instead (and the note says so).

    The rows are those with the smallest seeded hash of their transaction_id, in that order: the same training
    set gives the same reference on any machine and thread count. (DuckDB's `USING SAMPLE ... REPEATABLE` is
    repeatable only single-threaded: under load, two runs of the same demo day drew different references and
    told different drift shares.)"""
    columns = ", ".join(checked_identifier(name) for name in features)
    start = warm_from(con)
    # rows is an int: formatting it into LIMIT is safe.
    chosen = f"order by hash(transaction_id, {REFERENCE_SEED}), transaction_id limit {int(rows)}"
    warm = con.execute(
        f"select {columns} from {TRAINING_SET_TABLE} where event_timestamp >= $warm_from {chosen}", {"warm_from": start}
    ).df()
    if len(warm) >= min_warm_rows:
        return warm, f"training-set rows from {start:%Y-%m-%d %H:%M} on (windowed features warm)"
    every = con.execute(f"select {columns} from {TRAINING_SET_TABLE} {chosen}").df()
    return every, f"every training-set row: only {len(warm)} are past the {MAX_WINDOW_SECONDS // 86400}-day warm-up"
