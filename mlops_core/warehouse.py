"""DuckDB warehouse layout and the writes ingestion makes. No dagster here.

Raw tables hold every row that passed row-level checks, tagged with its batch's
status: dbt staging reads only `_batch_status = 'accepted'`, so a held batch never
reaches the marts, in this run or any later one. Rejected rows live in
quarantine.rejected_rows with their reason.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import duckdb
import pandas as pd

from mlops_core.contracts import SOURCES, Reference, SourceContract

_SQL_TYPES = {
    "string[pyarrow]": "VARCHAR",
    "float64": "DOUBLE",
    "bool": "BOOLEAN",
    # Stored as naive TIMESTAMP holding UTC, so no session time zone can shift it.
    "datetime64[ns, UTC]": "TIMESTAMP",
}

LINEAGE_COLUMNS = {
    "_partition_date": "DATE NOT NULL",
    "_source_file": "VARCHAR NOT NULL",
    "_row_number": "BIGINT NOT NULL",
    "_batch_status": "VARCHAR NOT NULL",
    "_run_id": "VARCHAR NOT NULL",
    "_loaded_at": "TIMESTAMP NOT NULL",
}

QUARANTINE_DDL = """
CREATE TABLE IF NOT EXISTS quarantine.rejected_rows (
    source VARCHAR NOT NULL,
    partition_date DATE NOT NULL,
    source_file VARCHAR NOT NULL,
    row_number BIGINT,            -- 0-based row in source_file; NULL when the file is unreadable
    check_name VARCHAR NOT NULL,  -- the asset check this rejection counts against
    reason VARCHAR NOT NULL,
    record VARCHAR,               -- the row as landed, JSON (NaN and Infinity kept, as Python's json writes them)
    record_id VARCHAR,            -- the row's id as landed (the source's id column), if it has one
    run_id VARCHAR NOT NULL,
    quarantined_at TIMESTAMP NOT NULL
)
"""

LOAD_LOG_DDL = """
CREATE TABLE IF NOT EXISTS raw.load_log (
    source VARCHAR NOT NULL,
    partition_date DATE NOT NULL,
    status VARCHAR NOT NULL,        -- accepted | held
    n_landed BIGINT NOT NULL,       -- rows read from the landing files
    n_accepted BIGINT NOT NULL,
    n_rejected BIGINT NOT NULL,
    failed_checks VARCHAR NOT NULL, -- JSON list of check names that failed for this partition
    reasons VARCHAR NOT NULL DEFAULT '{}', -- JSON object: each failed check's messages (file, column, expected vs found)
    fingerprint VARCHAR NOT NULL,   -- landing files (name, size, mtime) at load time
    run_id VARCHAR NOT NULL,
    loaded_at TIMESTAMP NOT NULL,
    PRIMARY KEY (source, partition_date)
)
"""


_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)?$")


def checked_identifier(name: str) -> str:
    """A [schema.]name fit to splice into SQL text, or ValueError naming it.

    SQL values always go in as parameters; identifiers cannot, so every table or column
    name formatted into SQL passes through here first (tests/test_security checks that).
    """
    if not _IDENTIFIER.match(name):
        raise ValueError(f"not a plain [schema.]table identifier: {name!r}")
    return name


def raw_table(source: str) -> str:
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; expected one of {sorted(SOURCES)}")
    return f"raw.{source}"


def raw_table_ddl(contract: SourceContract) -> str:
    columns = [f"{name} {_SQL_TYPES[contract.dtype_of(name)]}" for name in contract.columns]
    columns += [f"{name} {sql_type}" for name, sql_type in LINEAGE_COLUMNS.items()]
    return f"CREATE TABLE IF NOT EXISTS {raw_table(contract.name)} (\n    " + ",\n    ".join(columns) + "\n)"


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create the raw and quarantine schemas and tables if they do not exist."""
    con.execute("CREATE SCHEMA IF NOT EXISTS raw")
    con.execute("CREATE SCHEMA IF NOT EXISTS quarantine")
    for contract in SOURCES.values():
        con.execute(raw_table_ddl(contract))
    con.execute(QUARANTINE_DDL)
    con.execute(LOAD_LOG_DDL)
    # Warehouses created before held days kept their reasons and quarantined rows their ids.
    con.execute("ALTER TABLE raw.load_log ADD COLUMN IF NOT EXISTS reasons VARCHAR DEFAULT '{}'")
    con.execute("ALTER TABLE quarantine.rejected_rows ADD COLUMN IF NOT EXISTS record_id VARCHAR")


def _registered(con: duckdb.DuckDBPyConnection, name: str, frame: pd.DataFrame) -> str:
    con.register(name, frame)
    return name


def _statuses(ref: Reference) -> list[str]:
    return ["accepted", "held"] if ref.held_counts else ["accepted"]


def unknown_references(con: duckdb.DuckDBPyConnection, frame, contract: SourceContract):
    """For each reference of the contract, the frame rows whose id is not in the rows of
    the referenced source that may satisfy it (accepted, or also held where the reference
    allows). Returns (row_label, ref_id, held_in, column, source) rows; held_in is the first
    held day holding the id, if any."""
    found = []
    for ref in contract.references:
        keys = pd.DataFrame({"row_label": frame.index.to_numpy(), "ref_id": frame[ref.column].to_numpy()})
        view = checked_identifier(_registered(con, "_refs_to_check", keys))
        id_column = checked_identifier(SOURCES[ref.source].id_column)
        # Probe the referenced table with the batch's ids (IN builds its hash on the
        # batch side) instead of de-duplicating the whole table per chunk: 6x faster
        # against 10M transactions.
        missing = con.execute(
            f"""
            WITH known AS (
                SELECT DISTINCT {id_column} AS id FROM {raw_table(ref.source)}
                WHERE _batch_status IN (SELECT unnest($statuses::VARCHAR[])) AND {id_column} IN (SELECT ref_id FROM {view})
                -- Where held rows count, so do the rows of a held day that could not be read:
                -- they landed, and wait in quarantine for the day's file to be fixed.
                UNION
                SELECT q.record_id FROM quarantine.rejected_rows q
                JOIN raw.load_log l ON l.source = q.source AND l.partition_date = q.partition_date AND l.status = 'held'
                WHERE $held_counts AND q.source = $source AND q.record_id IN (SELECT ref_id FROM {view})
            ),
            missing AS (
                SELECT k.row_label, k.ref_id FROM {view} k ANTI JOIN known ON k.ref_id = known.id
            ),
            -- Where a missing id waits in a held batch, so the reason can say which day to fix.
            held AS (
                SELECT {id_column} AS id, min(_partition_date) AS held_in FROM {raw_table(ref.source)}
                WHERE _batch_status = 'held' AND {id_column} IN (SELECT ref_id FROM missing)
                GROUP BY {id_column}
            )
            SELECT m.row_label, m.ref_id, h.held_in FROM missing m LEFT JOIN held h ON m.ref_id = h.id
            """,
            {"statuses": _statuses(ref), "held_counts": ref.held_counts, "source": ref.source},
        ).df()
        con.unregister(view)
        missing["column"] = ref.column
        missing["source"] = ref.source
        found.append(missing)
    if not found:
        return pd.DataFrame(columns=["row_label", "ref_id", "held_in", "column", "source"])
    return pd.concat(found, ignore_index=True)


TIME_ORDER_COLUMNS = [
    "row_label",
    "column",
    "stamp",
    "relation",
    "other_column",
    "other_stamp",
    "other_source",
    "other_id",
]


def _naive_utc(values: pd.Series) -> pd.Series:
    return values.dt.tz_convert(None) if getattr(values.dt, "tz", None) is not None else values


def time_order_violations(con: duckdb.DuckDBPyConnection, frame, contract: SourceContract) -> pd.DataFrame:
    """Rows whose timestamp breaks a contract's TimeOrder against rows already loaded.

    Both sides are checked, whichever lands second: a row earlier than the referenced row
    dbt will join (the latest snapshot among the statuses the reference allows), and a
    referenced row later than an accepted row that refers to it. One row per violation,
    columns TIME_ORDER_COLUMNS; relation is 'before' or 'after'.
    """
    found = []
    for order in contract.time_orders:
        ref = contract.reference(order.via)
        target = SOURCES[ref.source]
        keys = pd.DataFrame(
            {
                "row_label": frame.index.to_numpy(),
                "ref_id": frame[order.via].to_numpy(),
                "stamp": _naive_utc(frame[order.column]).to_numpy(),
            }
        )
        view = checked_identifier(_registered(con, "_orders_to_check", keys))
        id_column = checked_identifier(target.id_column)
        not_before = checked_identifier(order.not_before)
        rows = con.execute(
            f"""
            WITH referenced AS (
                SELECT {id_column} AS id, {not_before} AS other_stamp FROM {raw_table(target.name)}
                WHERE _batch_status IN (SELECT unnest($statuses::VARCHAR[])) AND {id_column} IN (SELECT ref_id FROM {view})
                QUALIFY row_number() OVER (
                    PARTITION BY {id_column} ORDER BY _partition_date DESC, _loaded_at DESC, _row_number DESC
                ) = 1
            )
            SELECT k.row_label, k.stamp, r.other_stamp, k.ref_id AS other_id
            FROM {view} k JOIN referenced r ON k.ref_id = r.id
            WHERE k.stamp < r.other_stamp
            """,
            {"statuses": _statuses(ref)},
        ).df()
        con.unregister(view)
        found.append(
            rows.assign(column=order.column, relation="before", other_column=order.not_before, other_source=target.name)
        )
    for other in SOURCES.values():
        for order in other.time_orders:
            if other.reference(order.via).source != contract.name:
                continue
            keys = pd.DataFrame(
                {
                    "row_label": frame.index.to_numpy(),
                    "id": frame[contract.id_column].to_numpy(),
                    "stamp": _naive_utc(frame[order.not_before]).to_numpy(),
                }
            )
            view = checked_identifier(_registered(con, "_orders_to_check", keys))
            via, column, other_id = (checked_identifier(c) for c in (order.via, order.column, other.id_column))
            rows = con.execute(
                f"""
                WITH referring AS (
                    SELECT {via} AS id, min({column}) AS other_stamp, arg_min({other_id}, {column}) AS other_id
                    FROM {raw_table(other.name)}
                    WHERE _batch_status = 'accepted' AND {via} IN (SELECT id FROM {view})
                    GROUP BY {via}
                )
                SELECT k.row_label, k.stamp, r.other_stamp, r.other_id
                FROM {view} k JOIN referring r ON k.id = r.id
                WHERE k.stamp > r.other_stamp
                """
            ).df()
            con.unregister(view)
            found.append(
                rows.assign(
                    column=order.not_before, relation="after", other_column=order.column, other_source=other.name
                )
            )
    if not found:
        return pd.DataFrame(columns=TIME_ORDER_COLUMNS)
    return pd.concat(found, ignore_index=True)[TIME_ORDER_COLUMNS]


def ids_loaded_in_other_partitions(con: duckdb.DuckDBPyConnection, frame, contract: SourceContract, partitions: list):
    """Rows whose id already exists in a partition outside this run (events only)."""
    keys = pd.DataFrame({"row_label": frame.index.to_numpy(), "id": frame[contract.id_column].to_numpy()})
    view = checked_identifier(_registered(con, "_ids_to_check", keys))
    id_column = checked_identifier(contract.id_column)
    clash = con.execute(
        f"""
        SELECT k.row_label, k.id, min(t._partition_date) AS other_partition
        FROM {view} k JOIN {raw_table(contract.name)} t ON k.id = t.{id_column}
        WHERE t._partition_date NOT IN (SELECT unnest($partitions::DATE[]))
        GROUP BY ALL
        """,
        {"partitions": partitions},
    ).df()
    con.unregister(view)
    return clash


def load_history(con: duckdb.DuckDBPyConnection, source: str):
    """The load log of a source: one row per partition ever loaded, oldest first."""
    return con.execute(
        "SELECT partition_date, status, n_landed, failed_checks, reasons, fingerprint FROM raw.load_log "
        "WHERE source = ? ORDER BY partition_date",
        [source],
    ).df()


def replace_partitions(
    con: duckdb.DuckDBPyConnection,
    contract: SourceContract,
    partitions: list,
    accepted,
    rejected,
    load_log,
) -> None:
    """Atomically replace the given partitions' raw rows, quarantined rows and load log.

    Re-materializing a day therefore replaces it and never duplicates it.
    """
    table = raw_table(contract.name)
    columns = [checked_identifier(c) for c in contract.columns + list(LINEAGE_COLUMNS)]
    con.execute("BEGIN TRANSACTION")
    try:
        params = {"partitions": partitions}
        con.execute(f"DELETE FROM {table} WHERE _partition_date IN (SELECT unnest($partitions::DATE[]))", params)
        con.execute(
            "DELETE FROM quarantine.rejected_rows WHERE source = $source "
            "AND partition_date IN (SELECT unnest($partitions::DATE[]))",
            {**params, "source": contract.name},
        )
        con.execute(
            "DELETE FROM raw.load_log WHERE source = $source AND partition_date IN (SELECT unnest($partitions::DATE[]))",
            {**params, "source": contract.name},
        )
        if len(accepted):
            con.register("_accepted_rows", accepted)
            con.execute(f"INSERT INTO {table} ({', '.join(columns)}) SELECT {', '.join(columns)} FROM _accepted_rows")
            con.unregister("_accepted_rows")
        if len(rejected):
            con.register("_rejected_rows", rejected)
            con.execute(
                "INSERT INTO quarantine.rejected_rows BY NAME SELECT $source AS source, partition_date, source_file, "
                "row_number, check_name, reason, record, record_id, run_id, quarantined_at FROM _rejected_rows",
                {"source": contract.name},
            )
            con.unregister("_rejected_rows")
        con.register("_load_log_rows", load_log)
        con.execute(
            "INSERT INTO raw.load_log BY NAME SELECT $source AS source, partition_date, status, n_landed, n_accepted, "
            "n_rejected, failed_checks, reasons, fingerprint, run_id, loaded_at FROM _load_log_rows",
            {"source": contract.name},
        )
        con.unregister("_load_log_rows")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """The block's statements in one transaction: committed when it ends, rolled back (and the error raised)
    when it or the commit fails, so a failed write leaves what was there."""
    con.execute("begin transaction").fetchall()
    try:
        yield con
        con.execute("commit").fetchall()
    except Exception:
        con.execute("rollback").fetchall()
        raise


@contextmanager
def memory_limit(con: duckdb.DuckDBPyConnection, limit: str | None) -> Iterator[duckdb.DuckDBPyConnection]:
    """DuckDB's memory limit for the block (for example "2GB"), the previous one restored after it; None leaves it.

    DuckDB's default is 80% of the machine, and it keeps every block it scanned cached up to it, so a build over
    a large history grows to the machine's size though its operators could spill. With a limit, sorts, joins,
    aggregates and windows spill to the database's temp directory instead. The limit is the database
    instance's, not the connection's: every connection to it shares it while the block runs."""
    if limit is None:
        yield con
        return
    previous = con.execute("select current_setting('memory_limit')").fetchone()[0]
    con.execute("set memory_limit = $limit", {"limit": limit}).fetchall()
    try:
        yield con
    finally:
        # DuckDB gives the limit back only as printed, truncated to a tenth ("2.7 GiB" for 3GB), and setting that
        # print back would print one tenth lower. The default comes back exactly by a reset; a limit someone set
        # comes back as the middle of its printed tenth, which prints the same.
        con.execute("reset memory_limit").fetchall()
        if con.execute("select current_setting('memory_limit')").fetchone()[0] != previous:
            con.execute("set memory_limit = $limit", {"limit": _middle_of_printed_tenth(previous)}).fetchall()


def _middle_of_printed_tenth(printed: str) -> str:
    number, _, unit = printed.partition(" ")
    try:
        return f"{float(number) + 0.05} {unit}" if unit else printed
    except ValueError:
        return printed


def replace_day(con: duckdb.DuckDBPyConnection, table: str, ddl: str, day, rows: pd.DataFrame) -> None:
    """Replace the rows of `day` (column `day`) in `table` with `rows`, in one transaction.

    `ddl` creates the table if missing. Re-materializing a day partition replaces it, and a
    failed write leaves the previous rows. The frame is registered outside the transaction:
    unregistering inside an aborted one would fail and hide the error that aborted it.
    """
    table = checked_identifier(table)
    for statement in ddl.split(";"):
        if statement.strip():
            con.execute(statement).fetchall()
    con.register("_day_rows", rows)
    try:
        with transaction(con):
            con.execute(f"delete from {table} where day = $day", {"day": day}).fetchall()
            con.execute(f"insert into {table} by name select * from _day_rows").fetchall()
    finally:
        con.unregister("_day_rows")
