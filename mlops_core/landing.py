"""Reading landing-zone files into contract-typed frames. No dagster, no warehouse.

A file either yields a frame whose columns are exactly the contract's (values may
still be wrong: that is row-level validation's job) or a list of batch problems
that name the file, the column and expected vs found.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from mlops_core.contracts import STRING, SourceContract

CHECK_FILES_READABLE = "check_files_readable"
CHECK_SCHEMA = "check_schema"
SUPPORTED_SUFFIXES = (".parquet", ".csv")


def partition_dir(landing_dir: Path, source: str, day: date) -> Path:
    return landing_dir / source / f"date={day.isoformat()}"


def list_partition_files(landing_dir: Path, source: str, day: date) -> list[Path]:
    """Every file of a partition, sorted, skipping marker files such as _SUCCESS or .crc."""
    folder = partition_dir(landing_dir, source, day)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(("_", ".")))


def fingerprint(files: list[Path]) -> str:
    """Identifies the landed bytes cheaply (name, size, mtime) to detect re-delivered partitions."""
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


@dataclass
class FileRead:
    """What one landing file gave: a frame with the contract's columns, or problems.

    Whatever could be read of the file is kept as landed, for quarantine: the arrow table
    of a readable file, or the text lines of a CSV that does not parse.
    """

    path: Path
    frame: pd.DataFrame | None = None
    # (check_name, message) pairs; a non-empty list means the file's rows cannot be trusted.
    problems: list[tuple[str, str]] = field(default_factory=list)
    # The file as landed, every column, when it could be read (valid or breaking the schema).
    table: pa.Table | None = None
    # The data lines (header excluded) of a CSV file that could not be parsed, and its header.
    lines: list[str] | None = None
    header: str | None = None
    # False when the file's rows could not even be counted (corrupt parquet, unknown type).
    rows_known: bool = True

    @property
    def n_rows(self) -> int:
        """Rows landed in the file as far as they can be told apart (lines of an unparsed CSV)."""
        if self.table is not None:
            return self.table.num_rows
        return len(self.lines) if self.lines is not None else 0


def _json_value(value: object) -> object:
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    return str(value)


def landed_records(table: pa.Table, rows: Sequence[int] | None = None) -> list[str]:
    """Rows of a landed file as JSON text, every value exactly as it landed.

    Nulls stay null and non-finite floats stay NaN, Infinity and -Infinity (Python's json
    reads them back as such); timestamps are ISO 8601 with their offset.
    """
    if rows is not None:
        table = table.take(pa.array(rows, type=pa.int64()))
    return [
        json.dumps(row, default=_json_value, ensure_ascii=False, separators=(",", ":")) for row in table.to_pylist()
    ]


def _expected_kind(dtype: str) -> str:
    if dtype.startswith("datetime64"):
        return "timestamp"
    return {"float64": "number", "bool": "boolean"}.get(dtype, "string")


def _arrow_kind(arrow_type: pa.DataType) -> str:
    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "string"
    if pa.types.is_floating(arrow_type) or pa.types.is_integer(arrow_type) or pa.types.is_decimal(arrow_type):
        return "number"
    if pa.types.is_boolean(arrow_type):
        return "boolean"
    if pa.types.is_timestamp(arrow_type):
        return "timestamp"
    if pa.types.is_null(arrow_type):
        # An all-null column has no type of its own; row validation reports the nulls.
        return "null"
    return str(arrow_type)


def _column_problems(path: Path, contract: SourceContract, found: list[str]) -> list[tuple[str, str]]:
    expected = contract.columns
    missing = [c for c in expected if c not in found]
    extra = [c for c in found if c not in expected]
    if not missing and not extra:
        return []
    parts = []
    if missing:
        parts.append(f"missing column(s) {missing}")
    if extra:
        parts.append(f"unexpected column(s) {extra}")
    hint = ""
    if len(missing) == 1 and len(extra) == 1:
        hint = f" (was {missing[0]!r} renamed to {extra[0]!r}?)"
    message = f"{path}: {'; '.join(parts)}{hint}; expected columns {expected}, found {found}"
    return [(CHECK_SCHEMA, message)]


# Masked dtypes keep a landed NaN apart from a null: validation rejects the first as not
# finite and the second as missing. Text columns are arrow-backed (see contracts.STRING).
_PANDAS_TYPES = {
    pa.string(): STRING,
    pa.large_string(): STRING,
    pa.float64(): pd.Float64Dtype(),
    pa.float32(): pd.Float64Dtype(),
}


def _read_parquet(path: Path, contract: SourceContract) -> FileRead:
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as err:
        message = f"{path}: unreadable parquet file ({err})"
        try:
            rows = f"; its footer counts {pq.read_metadata(path).num_rows} row(s), none readable"
        except (pa.ArrowException, OSError):
            rows = "; no row can be read or counted"
        return FileRead(path, problems=[(CHECK_FILES_READABLE, message + rows)], rows_known=False)
    found = table.column_names
    problems = _column_problems(path, contract, found)
    for column in contract.columns:
        if column not in found:
            continue
        expected = _expected_kind(contract.dtype_of(column))
        actual = _arrow_kind(table.schema.field(column).type)
        if actual not in (expected, "null"):
            problems.append(
                (
                    CHECK_SCHEMA,
                    f"{path}: column {column!r}: expected {expected} ({contract.dtype_of(column)}), "
                    f"found {actual} ({table.schema.field(column).type})",
                )
            )
    if problems:
        return FileRead(path, problems=problems, table=table)
    frame = table.select(contract.columns).to_pandas(types_mapper=_PANDAS_TYPES.get)
    return FileRead(path, frame=frame, table=table)


def _csv_lines(path: Path) -> tuple[str, list[str]]:
    """The header and data lines of a CSV that does not parse, as text (undecodable bytes escaped)."""
    text = path.read_bytes().decode("utf-8", errors="backslashreplace")
    # Only newlines end a CSV row (str.splitlines would also split at \x1c, \x85, ...).
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    return lines[0], [line for line in lines[1:] if line.strip()]


def line_field(header: str | None, line: str, column: str) -> str | None:
    """The value of `column` in one line of an unparsable CSV, when header and line allow it."""
    if header is None:
        return None
    try:
        (names,), (values,) = csv.reader([header]), csv.reader([line])
    except (csv.Error, ValueError):
        return None
    if column not in names or len(values) != len(names):
        return None
    return values[names.index(column)] or None


def _read_csv(path: Path, contract: SourceContract) -> FileRead:
    # Every column is read as text and contract columns are typed by coercion, so a bad
    # value rejects its row instead of silently changing the column's type, and a
    # quarantined row keeps the text that landed.
    def read(columns: list[str]) -> pa.Table:
        options = pacsv.ConvertOptions(
            column_types={c: pa.string() for c in columns}, strings_can_be_null=True, null_values=[""]
        )
        return pacsv.read_csv(path, convert_options=options)

    try:
        table = read(contract.columns)
        if set(table.column_names) - set(contract.columns):
            table = read(table.column_names)
    except (pa.ArrowException, OSError, UnicodeDecodeError) as err:
        header, lines = _csv_lines(path)
        message = f"{path}: unreadable CSV file ({err}); its {len(lines)} data line(s) are kept in quarantine"
        return FileRead(path, problems=[(CHECK_FILES_READABLE, message)], lines=lines, header=header)
    found = table.column_names
    if not set(found) & set(contract.columns):
        _, lines = _csv_lines(path)
        message = (
            f"{path}: unreadable as a {contract.name} CSV: its header has none of the expected columns "
            f"{contract.columns} (found {found[:5]}); its {len(lines)} data line(s) are kept in quarantine"
        )
        return FileRead(path, problems=[(CHECK_FILES_READABLE, message)], lines=lines)
    problems = _column_problems(path, contract, found)
    if problems:
        return FileRead(path, problems=problems, table=table)
    frame = table.select(contract.columns).to_pandas(types_mapper=_PANDAS_TYPES.get)
    return FileRead(path, frame=frame, table=table)


def read_landing_file(path: Path, contract: SourceContract) -> FileRead:
    """Read one landing file. Never raises for bad content: problems are returned."""
    if path.suffix not in SUPPORTED_SUFFIXES:
        message = f"{path}: unsupported file type {path.suffix!r}; expected one of {list(SUPPORTED_SUFFIXES)}"
        return FileRead(path, problems=[(CHECK_FILES_READABLE, message)], rows_known=False)
    if path.stat().st_size == 0:
        return FileRead(path, problems=[(CHECK_FILES_READABLE, f"{path}: empty file (0 bytes)")])
    if path.suffix == ".parquet":
        return _read_parquet(path, contract)
    return _read_csv(path, contract)
