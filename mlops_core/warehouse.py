"""DuckDB warehouse layout and the writes ingestion makes. No dagster here.

Raw tables hold every row that passed row-level checks, tagged with its batch's
status: dbt staging reads only `_batch_status = 'accepted'`, so a held batch never
reaches the marts, in this run or any later one. Rejected rows live in
quarantine.rejected_rows with their reason.
"""

from __future__ import annotations

import re

import duckdb
import pandas as pd

from mlops_core.contracts import SOURCES, SourceContract

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
    record VARCHAR,               -- the row as landed, JSON
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


def _registered(con: duckdb.DuckDBPyConnection, name: str, frame: pd.DataFrame) -> str:
    con.register(name, frame)
    return name


def unknown_references(con: duckdb.DuckDBPyConnection, frame, contract: SourceContract):
    """For each reference of the contract, the frame rows whose id is not in the
    accepted rows of the referenced source. Returns (index label, column, value) rows."""
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
                WHERE _batch_status = 'accepted' AND {id_column} IN (SELECT ref_id FROM {view})
            )
            SELECT k.row_label, k.ref_id FROM {view} k ANTI JOIN known ON k.ref_id = known.id
            """
        ).df()
        con.unregister(view)
        missing["column"] = ref.column
        missing["source"] = ref.source
        found.append(missing)
    if not found:
        return pd.DataFrame(columns=["row_label", "ref_id", "column", "source"])
    return pd.concat(found, ignore_index=True)


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
        "SELECT partition_date, status, n_landed, failed_checks, fingerprint FROM raw.load_log "
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
                "INSERT INTO quarantine.rejected_rows SELECT $source, partition_date, source_file, row_number, "
                "check_name, reason, record, run_id, quarantined_at FROM _rejected_rows",
                {"source": contract.name},
            )
            con.unregister("_rejected_rows")
        con.register("_load_log_rows", load_log)
        con.execute(
            "INSERT INTO raw.load_log SELECT $source, partition_date, status, n_landed, n_accepted, n_rejected, "
            "failed_checks, fingerprint, run_id, loaded_at FROM _load_log_rows",
            {"source": contract.name},
        )
        con.unregister("_load_log_rows")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


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
        con.execute("begin").fetchall()
        try:
            con.execute(f"delete from {table} where day = $day", {"day": day}).fetchall()
            con.execute(f"insert into {table} by name select * from _day_rows").fetchall()
            con.execute("commit").fetchall()
        except Exception:
            con.execute("rollback").fetchall()
            raise
    finally:
        con.unregister("_day_rows")
