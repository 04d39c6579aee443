"""Reading landing-zone files into contract-typed frames. No dagster, no warehouse.

A file either yields a frame whose columns are exactly the contract's (values may
still be wrong: that is row-level validation's job) or a list of batch problems
that name the file, the column and expected vs found.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import date
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
    """What one landing file gave: a frame with the contract's columns, or problems."""

    path: Path
    frame: pd.DataFrame | None = None
    # (check_name, message) pairs; a non-empty list means the file's rows cannot be trusted.
    problems: list[tuple[str, str]] = field(default_factory=list)
    # Rows of a file that is readable but breaks the schema, kept for quarantine.
    unusable_rows: pd.DataFrame | None = None


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


def _read_parquet(path: Path, contract: SourceContract) -> FileRead:
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as err:
        return FileRead(path, problems=[(CHECK_FILES_READABLE, f"{path}: unreadable parquet file ({err})")])
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
    frame = table.to_pandas(types_mapper={pa.string(): STRING, pa.large_string(): STRING}.get)
    if problems:
        return FileRead(path, problems=problems, unusable_rows=frame)
    return FileRead(path, frame=frame[contract.columns])


def _read_csv(path: Path, contract: SourceContract) -> FileRead:
    # Every contract column is read as text and typed by coercion, so a bad value
    # rejects its row instead of silently changing the column's type.
    options = pacsv.ConvertOptions(
        column_types={c: pa.string() for c in contract.columns},
        strings_can_be_null=True,
        null_values=[""],
    )
    try:
        table = pacsv.read_csv(path, convert_options=options)
    except (pa.ArrowException, OSError, UnicodeDecodeError) as err:
        return FileRead(path, problems=[(CHECK_FILES_READABLE, f"{path}: unreadable CSV file ({err})")])
    found = table.column_names
    if not set(found) & set(contract.columns):
        message = (
            f"{path}: unreadable as a {contract.name} CSV: its header has none of the expected columns "
            f"{contract.columns} (found {found[:5]})"
        )
        return FileRead(path, problems=[(CHECK_FILES_READABLE, message)])
    frame = table.to_pandas(types_mapper={pa.string(): STRING, pa.large_string(): STRING}.get)
    problems = _column_problems(path, contract, found)
    if problems:
        return FileRead(path, problems=problems, unusable_rows=frame)
    return FileRead(path, frame=frame[contract.columns])


def read_landing_file(path: Path, contract: SourceContract) -> FileRead:
    """Read one landing file. Never raises for bad content: problems are returned."""
    if path.suffix not in SUPPORTED_SUFFIXES:
        message = f"{path}: unsupported file type {path.suffix!r}; expected one of {list(SUPPORTED_SUFFIXES)}"
        return FileRead(path, problems=[(CHECK_FILES_READABLE, message)])
    if path.stat().st_size == 0:
        return FileRead(path, problems=[(CHECK_FILES_READABLE, f"{path}: empty file (0 bytes)")])
    if path.suffix == ".parquet":
        return _read_parquet(path, contract)
    return _read_csv(path, contract)
