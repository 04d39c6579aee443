"""Snapshot projects: one row per entity every N days, features as of the snapshot, a label over a horizon after it.

A snapshot project (churn is the first) brings two things: its declaration and one SQL file, `snapshots.sql`.
The SQL says who is in the population at each snapshot and what happened to them afterwards (the label): it is
a SELECT over the shared marts and `snapshot_calendar` (one `snapshot_date` per row, made here) returning the
entity key, `snapshot_date` and the label column. The platform does the rest, the same way for every project:

- the calendar: every `snapshot_days` days (aligned on Mondays for weekly snapshots), from the first day whose
  longest feature window is full of history to the midnight after the last landed day;
- the features, from the declared windowed aggregates, over `marts.transactions_enriched`, using only events
  strictly before the snapshot's midnight (point in time: a snapshot sees nothing of its own day or later);
- the label's lateness: a snapshot whose horizon has not fully passed by the end of the landed data keeps a NULL
  label, whatever the SQL computed, so a model never trains on an outcome that is not known yet.

No dagster here; DuckDB SQL generated from the declaration and run on a connection the caller gives.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import duckdb
    import pandas as pd

    from mlops_core.projects.declaration import ModelProject, WindowedAggregate

SNAPSHOT_SQL = "snapshots.sql"
EVENTS_MART = "marts.transactions_enriched"
SNAPSHOT_DATE = "snapshot_date"
LABEL = "label"
LABEL_KNOWN = "label_known"
# Weekly snapshots fall on Mondays: days are counted from Monday 1970-01-05.
CALENDAR_ANCHOR = dt.date(1970, 1, 5)

# Columns of the events mart an aggregate may read, and whether they are numbers (sum, mean, max need one).
EVENT_COLUMNS: dict[str, bool] = {
    "amount_usd": True,
    "is_online": True,
    "is_foreign": True,
    "merchant_id": False,
    "merchant_category": False,
    "country": False,
}
NUMERIC_AGGREGATIONS = ("sum", "mean", "max")
# Aggregations over the events themselves, not a column (fraud's declaration names event_timestamp for the
# recency one, which is accepted and means the same).
COLUMNLESS = ("count", "seconds_since_last")
WINDOW = re.compile(r"^([1-9][0-9]{0,2})d$")


def checked_identifier(name: str) -> str:
    """mlops_core.warehouse.checked_identifier, imported when SQL is built: validating a declaration (which
    imports this module for the feature names) loads no DuckDB."""
    from mlops_core.warehouse import checked_identifier as check

    return check(name)


class SnapshotError(ValueError):
    """A project's SQL or data that cannot make snapshots; the message names the file and the problem."""


def window_days(window: str) -> int:
    match = WINDOW.fullmatch(window)
    if match is None:
        raise ValueError(f"window {window!r} is not a number of days such as '30d' (1d to 999d)")
    return int(match.group(1))


def feature_name(aggregation: str, column: str | None, window: str) -> str:
    if aggregation in COLUMNLESS:
        return f"{aggregation}_{window}"
    return f"{aggregation}_{column}_{window}"


def check_aggregate(aggregation: str, column: str | None, window: str) -> None:
    """ValueError naming what is wrong with one declared aggregate of a snapshot project."""
    window_days(window)
    if aggregation in COLUMNLESS:
        if column not in (None, "event_timestamp"):
            raise ValueError(f"{aggregation} counts events and takes no column (found {column!r})")
        return
    if column is None:
        raise ValueError(f"{aggregation} needs a column; allowed: {list(EVENT_COLUMNS)}")
    if column not in EVENT_COLUMNS:
        raise ValueError(f"{aggregation}({column}): no such column in {EVENTS_MART}; allowed: {list(EVENT_COLUMNS)}")
    if aggregation in NUMERIC_AGGREGATIONS and not EVENT_COLUMNS[column]:
        numeric = [c for c, is_number in EVENT_COLUMNS.items() if is_number]
        raise ValueError(f"{aggregation}({column}): {column} is not a number; {aggregation} takes one of {numeric}")


def feature_names(windowed: list[WindowedAggregate]) -> list[str]:
    return [feature_name(a.aggregation, a.column, w) for a in windowed for w in a.windows]


def longest_window_days(windowed: list[WindowedAggregate]) -> int:
    return max(window_days(w) for a in windowed for w in a.windows)


def _aggregate_sql(aggregation: str, column: str | None, days: int) -> str:
    """One feature over the events in [snapshot - days, snapshot); an empty window gives 0 (no purchases,
    nothing spent), except recency, which is then the whole window."""
    inside = f"e.event_timestamp >= p.{SNAPSHOT_DATE}::TIMESTAMP - INTERVAL ({days}) DAY"
    value = f"CAST(e.{column} AS DOUBLE)" if column in EVENT_COLUMNS and EVENT_COLUMNS[column] else f"e.{column}"
    if aggregation == "count":
        return f"count(e.event_timestamp) FILTER (WHERE {inside})"
    if aggregation == "distinct_count":
        return f"count(DISTINCT e.{column}) FILTER (WHERE {inside})"
    if aggregation == "seconds_since_last":
        last = f"max(e.event_timestamp) FILTER (WHERE {inside})"
        # Microseconds, an exact integer difference, before dividing: epoch() in seconds rounds near 1.7e9.
        return f"coalesce((epoch_us(p.{SNAPSHOT_DATE}::TIMESTAMP) - epoch_us({last})) / 1e6, {days * 86400})"
    function = {"sum": "sum", "mean": "avg", "max": "max"}[aggregation]
    return f"coalesce({function}({value}) FILTER (WHERE {inside}), 0)"


def snapshot_features_sql(windowed: list[WindowedAggregate]) -> str:
    """The SELECT list of the declared features, each `<aggregate> AS <feature name>`: built from the
    declaration's validated aggregations, EVENT_COLUMNS and whole-day windows only (each re-checked here:
    ValueError for anything else)."""
    for aggregate in windowed:
        for window in aggregate.windows:
            check_aggregate(aggregate.aggregation, aggregate.column, window)
    return ",\n  ".join(
        f"{_aggregate_sql(a.aggregation, a.column, window_days(w))} AS {feature_name(a.aggregation, a.column, w)}"
        for a in windowed
        for w in a.windows
    )


@dataclass(frozen=True)
class SnapshotTable:
    """What a build wrote: the table, its rows, labelled rows and positives, and the snapshot dates."""

    table: str
    rows: int
    labelled_rows: int
    positives: int
    first_snapshot: dt.date
    last_snapshot: dt.date
    data_end: dt.date
    labelled_dates: int


def project_schema(project: ModelProject) -> str:
    """Each project's tables live in their own schema; the shared layer's schemas stay the platform's."""
    return f"project_{project.name}"


def snapshot_table(project: ModelProject) -> str:
    return f"{project_schema(project)}.snapshots"


def calendar(first_event_day: dt.date, last_event_day: dt.date, every_days: int, warm_days: int) -> list[dt.date]:
    """Snapshot midnights: aligned on CALENDAR_ANCHOR every `every_days`, from `warm_days` after the first
    event day (the longest window is full) to the midnight after the last landed day."""
    start = first_event_day + dt.timedelta(days=warm_days)
    end = last_event_day + dt.timedelta(days=1)
    offset = (start - CALENDAR_ANCHOR).days % every_days
    day = start + dt.timedelta(days=(every_days - offset) % every_days)
    days = []
    while day <= end:
        days.append(day)
        day += dt.timedelta(days=every_days)
    return days


def read_sql(folder: Path) -> str:
    path = Path(folder) / SNAPSHOT_SQL
    if not path.is_file():
        raise SnapshotError(f"{path}: missing: a snapshot project defines its population and label in {SNAPSHOT_SQL}")
    text = path.read_text().strip().rstrip(";").strip()
    if not text:
        raise SnapshotError(f"{path}: empty: expected a SELECT returning the key, {SNAPSHOT_DATE} and the label")
    return text


def build_snapshots(con: duckdb.DuckDBPyConnection, project: ModelProject, folder: Path) -> SnapshotTable:
    """(Re)build the project's snapshot table from its SQL and its declared features, in one transaction:
    a failure leaves the previous table as it was."""
    sql_path = Path(folder) / SNAPSHOT_SQL
    sql = read_sql(folder)
    key, label_column = checked_identifier(project.entity.key), checked_identifier(project.label.column)
    label, horizon = project.label, int(project.label.horizon_days)
    windowed = project.features.windowed
    bounds = con.execute(f"SELECT min(event_date), max(event_date) FROM {EVENTS_MART}").fetchone()
    if bounds is None or bounds[0] is None:
        raise SnapshotError(f"{EVENTS_MART} is empty: land and transform transactions before building snapshots")
    first_day, last_day = bounds
    data_end = last_day + dt.timedelta(days=1)
    days = calendar(first_day, last_day, project.entity.snapshot_days or 1, longest_window_days(windowed))
    if not days:
        raise SnapshotError(
            f"no snapshot fits: events span {first_day}..{last_day}, and the longest feature window needs "
            f"{longest_window_days(windowed)} days of history before the first snapshot"
        )
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE snapshot_calendar AS SELECT unnest(?::DATE[]) AS {SNAPSHOT_DATE}", [days]
        )
        try:
            con.execute(f"CREATE OR REPLACE TEMP TABLE project_rows AS {sql}")
        except Exception as error:  # the project's own SQL: say whose it is
            raise SnapshotError(f"{sql_path}: the query failed: {error}") from error
        _check_rows(con, sql_path, key, label_column)
        features = snapshot_features_sql(windowed)
        longest = int(longest_window_days(windowed))
        positive = label.positive_class
        schema = checked_identifier(project_schema(project))
        table = checked_identifier(snapshot_table(project))
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        con.execute(
            f"""
            CREATE OR REPLACE TABLE {table} AS
            WITH population AS (
                SELECT CAST({key} AS VARCHAR) AS {key}, CAST({SNAPSHOT_DATE} AS DATE) AS {SNAPSHOT_DATE},
                       CAST({label_column} AS VARCHAR) = CAST(? AS VARCHAR) AS outcome
                FROM project_rows
            ),
            features AS (
                SELECT p.{key}, p.{SNAPSHOT_DATE},
                  {features}
                FROM population p
                LEFT JOIN {EVENTS_MART} e
                  ON e.{key} = p.{key}
                 AND e.event_timestamp < p.{SNAPSHOT_DATE}::TIMESTAMP
                 AND e.event_timestamp >= p.{SNAPSHOT_DATE}::TIMESTAMP - INTERVAL ({longest}) DAY
                GROUP BY p.{key}, p.{SNAPSHOT_DATE}
            )
            SELECT f.*,
                   p.{SNAPSHOT_DATE} + INTERVAL ({horizon}) DAY <= ?::DATE AS {LABEL_KNOWN},
                   CASE WHEN p.{SNAPSHOT_DATE} + INTERVAL ({horizon}) DAY <= ?::DATE
                        THEN p.outcome END AS {LABEL}
            FROM features f JOIN population p USING ({key}, {SNAPSHOT_DATE})
            ORDER BY {SNAPSHOT_DATE}, {key}
            """,
            [str(positive).lower() if isinstance(positive, bool) else str(positive), data_end, data_end],
        )
        rows, labelled, positives, first, last, labelled_dates = con.execute(
            f"SELECT count(*), count({LABEL}), count(*) FILTER (WHERE {LABEL}), min({SNAPSHOT_DATE}), "
            f"max({SNAPSHOT_DATE}), count(DISTINCT {SNAPSHOT_DATE}) FILTER (WHERE {LABEL} IS NOT NULL) FROM {table}"
        ).fetchone()
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    if rows == 0:
        raise SnapshotError(f"{sql_path}: the query returned no rows for the {len(days)} snapshot dates")
    return SnapshotTable(table, rows, labelled, positives, first, last, data_end, labelled_dates)


def _check_rows(con: duckdb.DuckDBPyConnection, sql_path: Path, key_name: str, label_name: str) -> None:
    key, label_column = checked_identifier(key_name), checked_identifier(label_name)
    columns = [row[0] for row in con.execute("DESCRIBE project_rows").fetchall()]
    missing = [c for c in (key, SNAPSHOT_DATE, label_column) if c not in columns]
    if missing:
        raise SnapshotError(
            f"{sql_path}: the query must return {[key, SNAPSHOT_DATE, label_column]}; missing {missing} "
            f"(found columns {columns})"
        )
    doubled = con.execute(
        f"SELECT {key}, {SNAPSHOT_DATE}, count(*) AS n FROM project_rows GROUP BY ALL HAVING n > 1 "
        f"ORDER BY {SNAPSHOT_DATE}, {key} LIMIT 3"
    ).fetchall()
    if doubled:
        raise SnapshotError(
            f"{sql_path}: one row per ({key}, {SNAPSHOT_DATE}) expected; found duplicates such as {doubled[0][0]!r} "
            f"on {doubled[0][1]} ({doubled[0][2]} rows)"
        )
    off_calendar = con.execute(
        f"SELECT {SNAPSHOT_DATE} FROM project_rows WHERE CAST({SNAPSHOT_DATE} AS DATE) NOT IN "
        f"(SELECT {SNAPSHOT_DATE} FROM snapshot_calendar) OR {SNAPSHOT_DATE} IS NULL LIMIT 1"
    ).fetchone()
    if off_calendar:
        raise SnapshotError(
            f"{sql_path}: {SNAPSHOT_DATE} {off_calendar[0]} is not a snapshot date; take the dates from snapshot_calendar"
        )
    nulls = con.execute(f"SELECT count(*) FROM project_rows WHERE {key} IS NULL").fetchone()[0]
    if nulls:
        raise SnapshotError(f"{sql_path}: {nulls} rows have no {key}")


def read_snapshots(con: duckdb.DuckDBPyConnection, project: ModelProject) -> pd.DataFrame:
    """The project's snapshot table in a fixed row order (date, key)."""
    table, key = checked_identifier(snapshot_table(project)), checked_identifier(project.entity.key)
    return con.execute(f"SELECT * FROM {table} ORDER BY {SNAPSHOT_DATE}, {key}").df()


def data_version(con: duckdb.DuckDBPyConnection, project: ModelProject) -> str:
    """A content hash of the snapshot table: order-independent, changes with any value or row (a sum, not an
    xor, of the row hashes: two equal rows must not cancel out)."""
    columns = [checked_identifier(c) for c in (project.entity.key, SNAPSHOT_DATE, LABEL, *project.feature_names())]
    table = checked_identifier(snapshot_table(project))
    rows, digest = con.execute(
        f"SELECT count(*), coalesce(sum(hash({', '.join(columns)})::HUGEINT), 0) FROM {table}"
    ).fetchone()
    return hashlib.sha256(f"{rows}:{digest}:{','.join(columns)}".encode()).hexdigest()[:16]


def scores_table(project: ModelProject) -> str:
    return f"{project_schema(project)}.scores"


SCORE_COLUMNS = ("score", "decision", "model_version")


def write_scores(con: duckdb.DuckDBPyConnection, project: ModelProject, scored: pd.DataFrame) -> tuple[int, int]:
    """Replace the scores of the frame's snapshot date (one date per call) in one transaction; returns
    (rows, distinct keys) now stored for that date. Re-running a date replaces it, never doubles it."""
    key = checked_identifier(project.entity.key)
    dates = scored[SNAPSHOT_DATE].unique()
    if len(dates) != 1:
        raise ValueError(f"write_scores takes one snapshot date at a time, got {len(dates)}")
    table, schema = checked_identifier(scores_table(project)), checked_identifier(project_schema(project))
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    con.execute(
        f"CREATE TABLE IF NOT EXISTS {table} ({key} VARCHAR, {SNAPSHOT_DATE} DATE, score DOUBLE, "
        "decision BOOLEAN, model_version VARCHAR)"
    )
    rows = scored[[project.entity.key, SNAPSHOT_DATE, *SCORE_COLUMNS]]
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(f"DELETE FROM {table} WHERE {SNAPSHOT_DATE} = ?", [dates[0]])
        con.register("scored_rows", rows)
        con.execute(f"INSERT INTO {table} SELECT * FROM scored_rows")
        con.unregister("scored_rows")
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return con.execute(
        f"SELECT count(*), count(DISTINCT {key}) FROM {table} WHERE {SNAPSHOT_DATE} = ?", [dates[0]]
    ).fetchone()
