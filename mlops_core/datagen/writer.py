"""Writing one landing partition: `<landing>/<source>/date=YYYY-MM-DD/part-0.<format>`.

Bytes depend only on the table: pyarrow writes no wall-clock time into parquet or CSV.
"""

from __future__ import annotations

import datetime as dt
import io
import shutil
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from mlops_core.datagen.corruption import FileFault

FileFormat = Literal["parquet", "csv"]
PART_NAME = "part-0"
CSV_TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S+00:00"
# Appended to a cut-off CSV: NUL and invalid UTF-8 make it unreadable for any CSV parser.
CSV_JUNK = b"\x00\x9c\xff\xfe\x00garbage\x00"


def partition_dir(landing_dir: Path, source: str, day: dt.date) -> Path:
    return landing_dir / source / f"date={day.isoformat()}"


def _parquet_bytes(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd", version="2.6")
    return buffer.getvalue()


def _csv_bytes(table: pa.Table) -> bytes:
    # ISO 8601 with an explicit +00:00 offset; timestamps are whole seconds.
    for i, field in enumerate(table.schema):
        if pa.types.is_timestamp(field.type):
            seconds = table.column(i).cast(pa.timestamp("s", tz="UTC"))
            table = table.set_column(i, field.name, pc.strftime(seconds, format=CSV_TIMESTAMP_FORMAT))
    buffer = io.BytesIO()
    pacsv.write_csv(table, buffer)
    return buffer.getvalue()


def _truncated(data: bytes, file_format: FileFormat) -> bytes:
    """A corrupt copy. Parquet is cut in half and loses its footer. CSV is cut after the
    first field of a row in the second half and followed by binary junk, so the last row
    has too few columns and the file is not valid UTF-8."""
    if file_format == "parquet":
        return data[: len(data) // 2]
    row_start = data.find(b"\n", len(data) // 2) + 1
    if row_start == 0 or row_start >= len(data):
        row_start = data.rfind(b"\n", 0, len(data) - 1) + 1
    return data[: data.find(b",", row_start) + 1] + CSV_JUNK


def write_partition(
    landing_dir: Path,
    source: str,
    day: dt.date,
    table: pa.Table | None,
    file_format: FileFormat,
    fault: FileFault | None = None,
) -> Path | None:
    """Write (or, for a missing partition, remove) one partition; returns the file written.

    Part files left by an earlier run in the same partition are removed first, so a
    partition never mixes two runs or two formats.
    """
    folder = partition_dir(landing_dir, source, day)
    if fault == "missing":
        if folder.exists():
            shutil.rmtree(folder)
        return None
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob(f"{PART_NAME}.*"):
        old.unlink()
    path = folder / f"{PART_NAME}.{file_format}"
    if fault == "empty":
        data = b""
    else:
        assert table is not None, "only a missing partition has no table"
        data = _parquet_bytes(table) if file_format == "parquet" else _csv_bytes(table)
        if fault == "truncated":
            data = _truncated(data, file_format)
    path.write_bytes(data)
    return path
