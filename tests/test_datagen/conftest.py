"""Shared fixtures for the data-generator tests: small specs and a contract-typed reader."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from mlops_core.contracts import SOURCES, STRING
from mlops_core.datagen.generator import DemoSpec, GenerationSummary, generate_landing

START = dt.date(2024, 3, 1)


@dataclass
class Partition:
    """What a landing partition holds: status 'ok', 'missing', 'empty' or 'unreadable'."""

    status: str
    path: Path | None = None
    table: pa.Table | None = None  # as landed; CSV columns are all strings

    @cached_property
    def frame(self) -> pd.DataFrame | None:
        return None if self.table is None else self.table.to_pandas(types_mapper=_STRINGS.get)


_STRINGS = {pa.string(): STRING}


class LandingReader:
    """Reads the generator's output independently of ingestion code."""

    def __init__(self, landing_dir: Path) -> None:
        self.landing_dir = landing_dir
        # The generated files do not change after generation, so reads are cached.
        self._partitions: dict[tuple[str, dt.date], Partition] = {}
        self._ids: dict[tuple[str, str], pa.Array] = {}

    def partition(self, source: str, day: dt.date) -> Partition:
        if (source, day) not in self._partitions:
            self._partitions[source, day] = self._read(source, day)
        return self._partitions[source, day]

    def ids(self, source: str, column: str) -> pa.Array:
        """Every distinct non-null value of a column over all readable partitions of a source."""
        if (source, column) not in self._ids:
            values = []
            for folder in sorted((self.landing_dir / source).glob("date=*")):
                table = self.partition(source, dt.date.fromisoformat(folder.name.removeprefix("date="))).table
                if table is not None and column in table.column_names:
                    values.append(table[column].cast(pa.string()))
            self._ids[source, column] = pc.unique(pa.chunked_array(values, pa.string()).drop_null())
        return self._ids[source, column]

    def known(self, values: pd.Series, source: str, column: str) -> pd.Series:
        """Whether each value occurs in `column` of `source` (pyarrow: pandas' isin is slow here)."""
        found = pc.is_in(pa.array(values, pa.string()), value_set=self.ids(source, column))
        return pd.Series(found.to_numpy(zero_copy_only=False), index=values.index)

    def _read(self, source: str, day: dt.date) -> Partition:
        folder = self.landing_dir / source / f"date={day.isoformat()}"
        files = sorted(folder.glob("part-0.*")) if folder.is_dir() else []
        if not files:
            return Partition("missing")
        path = files[0]
        if path.stat().st_size == 0:
            return Partition("empty", path)
        try:
            if path.suffix == ".parquet":
                table = pq.read_table(path)
            else:
                frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
                schema = pa.schema([(column, pa.string()) for column in frame.columns])
                table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
        except (pa.ArrowException, OSError, UnicodeDecodeError, pd.errors.ParserError):
            return Partition("unreadable", path)
        return Partition("ok", path, table)

    def typed(self, source: str, day: dt.date) -> pd.DataFrame:
        """The partition with the contract's dtypes (CSV text converted), for pandera."""
        frame = self.partition(source, day).frame
        assert frame is not None, f"{source} {day} is not readable"
        return _typed(frame, source)

    def concat(self, source: str, days: list[dt.date]) -> pd.DataFrame:
        """The readable partitions of `days`, typed, with their partition date in `_date`."""
        parts = [(d, self.partition(source, d)) for d in days if self.partition(source, d).status == "ok"]
        tables = [p.table.append_column("_date", pa.array([d] * p.table.num_rows, pa.date32())) for d, p in parts]
        # _date comes back as datetime.date objects.
        frame = pa.concat_tables(tables, promote_options="default").to_pandas(types_mapper=_STRINGS.get)
        return _typed(frame, source)


def _typed(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    contract = SOURCES[source]
    frame = frame.copy()
    for column in frame.columns:
        if column not in contract.columns or frame[column].dtype != STRING:
            continue
        dtype = contract.dtype_of(column)
        if dtype.startswith("datetime64"):
            frame[column] = pd.to_datetime(frame[column].astype(str), format="ISO8601", utc=True)
        elif dtype == "float64":
            frame[column] = frame[column].astype(str).astype(float)
        elif dtype == "bool":
            frame[column] = frame[column].map({"true": True, "false": False}).astype(bool)
    return frame


@pytest.fixture(scope="session")
def make_landing(
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[[DemoSpec], tuple[GenerationSummary, LandingReader]]:
    """Generates a spec into its own folder once per test session; returns summary and reader."""
    cache: dict[DemoSpec, tuple[GenerationSummary, LandingReader]] = {}

    def make(spec: DemoSpec) -> tuple[GenerationSummary, LandingReader]:
        if spec not in cache:
            landing = tmp_path_factory.mktemp(f"{spec.scenario}_{spec.file_format}")
            cache[spec] = (generate_landing(spec, landing), LandingReader(landing))
        return cache[spec]

    return make


@pytest.fixture(scope="session")
def baseline_small(make_landing) -> tuple[DemoSpec, GenerationSummary, LandingReader]:
    spec = DemoSpec(START, days=6, rows_per_day=300)
    return (spec, *make_landing(spec))


@pytest.fixture(scope="session")
def baseline_long(make_landing) -> tuple[DemoSpec, GenerationSummary, LandingReader]:
    """Longer than the maturity window, so maturity labels land in its last days."""
    spec = DemoSpec(START, days=56, rows_per_day=250, seed=3)
    return (spec, *make_landing(spec))
