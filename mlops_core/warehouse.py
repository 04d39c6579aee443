"""DuckDB warehouse layout and the writes ingestion makes. No dagster here.

Raw tables hold every row that passed row-level checks, tagged with its batch's
status: dbt staging reads only `_batch_status = 'accepted'`, so a held batch never
reaches the marts, in this run or any later one. Rejected rows live in
quarantine.rejected_rows with their reason.
"""

from __future__ import annotations

import duckdb

from mlops_core.contracts import SOURCES, SourceContract

_SQL_TYPES = {
    "str": "VARCHAR",
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
