"""Row-level validation of landed rows against the contract. No dagster, no warehouse.

Each rejected row gets the name of the check it counts against and a reason that
names the column, what was expected and what was found.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pandera.pandas as pa

from mlops_core.contracts import CONTROL_CHARACTERS, STRING, SourceContract

CHECK_VALUES = "check_values"
CHECK_UNIQUE_IDS = "check_unique_ids"
CHECK_TIMESTAMPS = "check_timestamps"
CHECK_REFERENCES = "check_references"

# Lineage columns ingestion adds to every landed row.
PARTITION = "_partition_date"
SOURCE_FILE = "_source_file"
ROW_NUMBER = "_row_number"

_TRUE = {"true", "t", "1", "yes"}
_FALSE = {"false", "f", "0", "no"}


@dataclass
class RowRejections:
    """Reasons keyed by the frame's index, all counting against one check."""

    check_name: str
    reasons: pd.Series  # index: row label in the validated frame; value: reason text

    def __len__(self) -> int:
        return len(self.reasons)


def _join_reasons(index: pd.Index, reasons: pd.Series) -> pd.Series:
    """One reason string per row when several columns of the row fail."""
    if reasons.empty:
        return pd.Series([], index=pd.Index([], dtype=index.dtype), dtype=object)
    return reasons.groupby(level=0, sort=True).agg("; ".join)


def coerce_to_contract(frame: pd.DataFrame, contract: SourceContract) -> tuple[pd.DataFrame, RowRejections]:
    """Cast each column to the contract dtype; values that cannot be cast reject their row.

    Parquet columns already have the right physical type (checked per file); CSV
    columns arrive as text.
    """
    typed = {}
    failures = []
    for column in contract.columns:
        values = frame[column]
        dtype = contract.dtype_of(column)
        if dtype == "float64":
            if pd.api.types.is_numeric_dtype(values):
                cast = pd.Series(values.to_numpy(dtype="float64", na_value=np.nan), index=values.index)
            else:
                cast = pd.to_numeric(values.astype(object), errors="coerce").astype("float64")
            # NaN and infinities are numbers to pandas but amounts to nobody; a landed NaN
            # (parquet keeps it apart from a null) is rejected as such, not as a null.
            infinite = values.notna() & cast.notna() & ~np.isfinite(cast)
            landed_nan = values.notna() & cast.isna() & pd.api.types.is_numeric_dtype(values)
            not_finite = infinite | landed_nan
            if not_finite.any():
                failures.append(
                    pd.Series(
                        [f"{column}: expected a finite number, found {v!r}" for v in values[not_finite].astype(object)],
                        index=values.index[not_finite],
                    )
                )
                cast = cast.mask(not_finite)
            typed[column] = cast
            bad = values.notna() & cast.isna() & ~not_finite
            if bad.any():
                failures.append(
                    pd.Series(
                        [f"{column}: expected a number, found {v!r}" for v in values[bad]], index=values.index[bad]
                    )
                )
            continue
        elif dtype == "bool":
            if pd.api.types.is_bool_dtype(values) and not values.isna().any():
                cast = values.astype(bool)
            else:
                lowered = values.astype(object).map(lambda v: v.strip().lower() if isinstance(v, str) else v)
                mapped = lowered.map(
                    lambda v: True if v in _TRUE or v is True else False if v in _FALSE or v is False else None
                )
                # numpy bools cannot hold a null, so null flags are rejected here rather
                # than by pandera; the rejected rows are dropped before anything reads them.
                nulls = values.isna()
                if nulls.any():
                    failures.append(pd.Series(f"{column}: null not allowed", index=values.index[nulls], dtype=object))
                unparsed = values.notna() & mapped.isna()
                if unparsed.any():
                    failures.append(
                        pd.Series(
                            [f"{column}: expected true or false, found {v!r}" for v in values[unparsed]],
                            index=values.index[unparsed],
                        )
                    )
                typed[column] = mapped.eq(True)
                continue
        elif dtype.startswith("datetime64"):
            if pd.api.types.is_datetime64_any_dtype(values):
                cast = values.dt.tz_localize("UTC") if values.dt.tz is None else values.dt.tz_convert("UTC")
            else:
                cast = pd.to_datetime(values.astype(object), utc=True, errors="coerce", format="ISO8601")
            cast = cast.astype(dtype)
            expected = "an ISO 8601 timestamp"
        else:
            cast = values.astype(STRING)
            expected = "text"
        bad = values.notna() & cast.isna()
        if bad.any():
            failures.append(
                pd.Series(
                    [f"{column}: expected {expected}, found {v!r}" for v in values[bad]],
                    index=values.index[bad],
                )
            )
        typed[column] = cast
    coerced = pd.DataFrame(typed, index=frame.index)
    reasons = _join_reasons(frame.index, pd.concat(failures) if failures else pd.Series([], dtype=object))
    return coerced, RowRejections(CHECK_VALUES, reasons)


def _describe_failure(column: str, check: str, failure_case: object, row: object = None) -> str:
    if check == "not_nullable":
        return f"{column}: null not allowed"
    if check.startswith("str_matches") and isinstance(failure_case, str):
        found = re.search(CONTROL_CHARACTERS, failure_case)
        if found:
            where = f" in row {row}" if row is not None else ""
            return (
                f"{column}: control character {found.group()!r} at position {found.start()}{where} "
                f"not allowed in an id, found {failure_case!r}"
            )
    return f"{column}: failed {check}, found {failure_case!r}"


def contract_violations(frame: pd.DataFrame, contract: SourceContract) -> RowRejections:
    """Ranges, allowed values, lengths, control characters in ids and nulls, as the pandera
    model defines them. A frame carrying the row-number lineage column gets it named in the
    reasons that point at one character of a value."""
    if frame.empty:
        return RowRejections(CHECK_VALUES, pd.Series([], dtype=object))
    rows = frame[ROW_NUMBER] if ROW_NUMBER in frame.columns else None
    frame = frame[contract.columns]
    try:
        contract.schema.validate(frame, lazy=True)
        cases = pd.DataFrame(columns=["column", "check", "failure_case", "index"])
    except pa.errors.SchemaErrors as err:
        cases = err.failure_cases
    row_cases = cases[cases["index"].notna()]
    frame_level = cases[cases["index"].isna()]
    if not frame_level.empty:
        # Per-file reading guarantees columns and types; reaching here is a bug, not bad data.
        raise RuntimeError(
            f"unexpected frame-level contract failure for {contract.name}: {frame_level.to_dict('records')}"
        )
    labels = pd.Index(row_cases["index"].to_numpy(), dtype=frame.index.dtype)
    row_numbers = rows.reindex(labels).tolist() if rows is not None else [None] * len(labels)
    described = pd.Series(
        [
            _describe_failure(c, k, f, r)
            for c, k, f, r in zip(row_cases["column"], row_cases["check"], row_cases["failure_case"], row_numbers)
        ],
        index=labels,
        dtype=object,
    )
    return RowRejections(CHECK_VALUES, _join_reasons(frame.index, described))


def timestamp_violations(frame: pd.DataFrame, contract: SourceContract, now: pd.Timestamp) -> RowRejections:
    """Rows whose partition timestamp is in the future or outside their partition day."""
    column = contract.partition_time_column
    stamps = frame[column]
    day_start = pd.to_datetime(frame[PARTITION]).dt.tz_localize("UTC")
    day_end = day_start + pd.Timedelta(days=1)
    future = stamps > now
    if contract.partition_time_rule == "within":
        outside = ~future & ((stamps < day_start) | (stamps >= day_end))
        outside_text = "is outside partition day"
    else:
        outside = ~future & (stamps >= day_end)
        outside_text = "is after partition day"
    reasons = pd.concat(
        [
            pd.Series(
                [f"{column}: {s.isoformat()} is in the future (now {now.isoformat()})" for s in stamps[future]],
                index=frame.index[future],
                dtype=object,
            ),
            pd.Series(
                [
                    f"{column}: {s.isoformat()} {outside_text} {d}"
                    for s, d in zip(stamps[outside], frame.loc[outside, PARTITION])
                ],
                index=frame.index[outside],
                dtype=object,
            ),
        ]
    )
    return RowRejections(CHECK_TIMESTAMPS, reasons.sort_index())


def duplicate_ids(frame: pd.DataFrame, contract: SourceContract) -> RowRejections:
    """Repeated ids: the first occurrence is kept, later ones rejected with a pointer to it.

    Event ids must be unique across the whole run; snapshot and label ids only within a day.
    """
    key = [contract.id_column] if contract.unique_across_partitions else [contract.id_column, PARTITION]
    repeated = frame.duplicated(subset=key, keep="first")
    if not repeated.any():
        return RowRejections(CHECK_UNIQUE_IDS, pd.Series([], dtype=object))
    firsts = frame.loc[~repeated & frame.duplicated(subset=key, keep=False), key + [SOURCE_FILE, ROW_NUMBER]]
    pointer = frame.loc[repeated, key].merge(firsts, on=key, how="left")
    reasons = pd.Series(
        [
            f"{contract.id_column}: duplicate {i!r}, first seen in {f} row {r}"
            for i, f, r in zip(pointer[contract.id_column], pointer[SOURCE_FILE], pointer[ROW_NUMBER])
        ],
        index=frame.index[repeated],
        dtype=object,
    )
    return RowRejections(CHECK_UNIQUE_IDS, reasons)


def drop_rejected(frame: pd.DataFrame, *rejections: RowRejections) -> pd.DataFrame:
    rejected = np.zeros(len(frame), dtype=bool)
    for rejection in rejections:
        rejected |= frame.index.isin(rejection.reasons.index)
    return frame[~rejected]
