"""Bad-data faults that a day's landing file can carry, for testing ingestion's gates.

Each fault takes the clean table of a day and returns what lands instead. A day
whose transactions carry a fault gets no labels later (see generator.simulate).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlops_core.datagen.world import SECONDS_PER_DAY

# Share of a file's rows a row-level fault touches: well above a 2% reject threshold.
BAD_ROW_FRACTION = 0.05
VOLUME_DROP_KEEP = 0.10
VOLUME_SPIKE_FACTOR = 5
ABSURD_AMOUNT = 10_000_000.0
FUTURE_YEAR = 2099
PROMO_CODES = ("SPRING10", "WELCOME5", "FREESHIP", "VIP20")

FileFault = Literal["missing", "empty", "truncated"]


@dataclass(frozen=True)
class DayContext:
    """What a fault needs to know about the day it corrupts."""

    date: dt.date
    day_s: int
    file_format: Literal["parquet", "csv"]
    account_id_digits: int
    make_transaction_ids: Callable[[np.ndarray], pa.Array]  # sequence numbers -> ids of this day


@dataclass(frozen=True)
class Landed:
    """What lands for a day: a table, possibly with a fault of the file itself."""

    table: pa.Table | None  # None: nothing lands
    file_fault: FileFault | None = None


Fault = Callable[[pa.Table, np.random.Generator, DayContext], Landed]


def _bad_rows(rng: np.random.Generator, n: int, low: int = 0) -> np.ndarray:
    """Sorted indices of about BAD_ROW_FRACTION of rows low..n-1 (at least one row)."""
    if n - low <= 0:
        return np.zeros(0, dtype=np.int64)
    k = min(n - low, max(1, round(BAD_ROW_FRACTION * n)))
    return np.sort(rng.choice(np.arange(low, n), k, replace=False))


def _halves(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    half = (len(rows) + 1) // 2
    return rows[:half], rows[half:]


def _mask(n: int, rows: np.ndarray) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    mask[rows] = True
    return mask


def _set_column(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, values)


def _replace(table: pa.Table, name: str, rows: np.ndarray, value: pa.Scalar | pa.Array) -> pa.Table:
    """Column `name` with `rows` set to value (a scalar, or an array aligned with rows)."""
    column = table[name].combine_chunks()
    if isinstance(value, pa.Scalar):
        replaced = pc.if_else(pa.array(_mask(table.num_rows, rows)), value, column)
    else:
        positions = np.full(table.num_rows, -1, dtype=np.int64)
        positions[rows] = np.arange(len(rows))
        taken = value.take(pa.array(np.maximum(positions, 0)))
        replaced = pc.if_else(pa.array(positions >= 0), taken, column)
    return _set_column(table, name, replaced)


def missing_column(table: pa.Table, rng: np.random.Generator, ctx: DayContext) -> Landed:
    return Landed(table.drop_columns(["merchant_category"]))


def renamed_column(table: pa.Table, rng: np.random.Generator, ctx: DayContext) -> Landed:
    names = ["amt" if name == "amount" else name for name in table.column_names]
    return Landed(table.rename_columns(names))


def extra_column(table: pa.Table, rng: np.random.Generator, ctx: DayContext) -> Landed:
    codes = rng.integers(0, len(PROMO_CODES), table.num_rows)
    has_code = rng.random(table.num_rows) < 0.1
    promo = pa.array(np.array(PROMO_CODES, dtype=object)[codes], pa.string())
    promo = pc.if_else(pa.array(has_code), promo, pa.scalar(None, pa.string()))
    return Landed(table.append_column("promo_code", promo))


def wrong_type(table: pa.Table, rng: np.random.Generator, ctx: DayContext) -> Landed:
    # Parquet: a string column of numbers ("12.50"). CSV is untyped, so there the
    # analogue is text that no longer parses as a number ("12.50 USD").
    text = np.char.mod("%.2f", table["amount"].to_numpy())
    if ctx.file_format == "csv":
        text = np.char.add(np.char.add(text, " "), table["currency"].to_numpy(zero_copy_only=False).astype(str))
    return Landed(_set_column(table, "amount", pa.array(text.tolist(), pa.string())))


def out_of_range(table: pa.Table, rng: np.random.Generator, ctx: DayContext) -> Landed:
    rows = _bad_rows(rng, table.num_rows)
    negative, absurd = _halves(rows)
    amount = table["amount"].to_numpy().copy()
    amount[negative] = -amount[negative]
    amount[absurd] = ABSURD_AMOUNT
    return Landed(_set_column(table, "amount", pa.array(amount)))


def allowed_values(table: pa.Table, rng: np.random.Generator, ctx: DayContext) -> Landed:
    rows = _bad_rows(rng, table.num_rows)
    channel_rows, currency_rows = _halves(rows)
    table = _replace(table, "channel", channel_rows, pa.scalar("mobile"))
    table = _replace(table, "currency", currency_rows, pa.scalar("XXX"))
    return Landed(table)


def nulls(table: pa.Table, rng: np.random.Generator, ctx: DayContext) -> Landed:
    rows = _bad_rows(rng, table.num_rows)
    account_rows, merchant_rows = _halves(rows)
    table = _replace(table, "account_id", account_rows, pa.scalar(None, pa.string()))
    table = _replace(table, "merchant_id", merchant_rows, pa.scalar(None, pa.string()))
    return Landed(table)


def duplicate_ids(table: pa.Table, rng: np.random.Generator, ctx: DayContext) -> Landed:
    """Bad rows become copies of an earlier clean row: half exact, half with another amount."""
    n = table.num_rows
    rows = _bad_rows(rng, n, low=1)
    clean = np.flatnonzero(~_mask(n, rows))  # starts with row 0
    earlier = clean[(rng.random(len(rows)) * np.searchsorted(clean, rows)).astype(np.int64)]
    source = np.arange(n)
    source[rows] = earlier
    copied = table.take(pa.array(source))
    _, changed = _halves(rows)
    amount = copied["amount"].to_numpy().copy()
    amount[changed] = np.round(amount[changed] * rng.uniform(1.1, 3.0, len(changed)), 2)
    copied = _set_column(copied, "amount", pa.array(amount))
    return Landed(copied)


def unknown_accounts(table: pa.Table, rng: np.random.Generator, ctx: DayContext) -> Landed:
    rows = _bad_rows(rng, table.num_rows)
    # One digit longer than any real account id, so it can never match one.
    digits = ctx.account_id_digits + 1
    numbers = rng.integers(9 * 10 ** (digits - 1), 10**digits, len(rows))
    ids = pa.array([f"a{x}" for x in numbers.tolist()], pa.string())
    return Landed(_replace(table, "account_id", rows, ids))


def volume_drop(table: pa.Table, rng: np.random.Generator, ctx: DayContext) -> Landed:
    n = table.num_rows
    keep = np.sort(rng.choice(n, max(1, round(VOLUME_DROP_KEEP * n)), replace=False))
    return Landed(table.take(pa.array(keep)))


def volume_spike(table: pa.Table, rng: np.random.Generator, ctx: DayContext) -> Landed:
    """The day's rows plus (factor - 1) x as many replayed rows with fresh ids and times."""
    n = table.num_rows
    n_extra = (VOLUME_SPIKE_FACTOR - 1) * n
    extra = table.take(pa.array(rng.integers(0, n, n_extra)))
    extra = _set_column(extra, "transaction_id", ctx.make_transaction_ids(np.arange(n + 1, n + 1 + n_extra)))
    extra_s = ctx.day_s + rng.integers(0, SECONDS_PER_DAY, n_extra)
    extra = _set_column(extra, "event_timestamp", pa.array(extra_s * 1_000_000_000, table["event_timestamp"].type))
    combined = pa.concat_tables([table, extra])
    order = pc.sort_indices(combined, [("event_timestamp", "ascending")])
    return Landed(combined.take(order))


def missing_partition(table: pa.Table, rng: np.random.Generator, ctx: DayContext) -> Landed:
    return Landed(None, file_fault="missing")


def bad_timestamps(table: pa.Table, rng: np.random.Generator, ctx: DayContext) -> Landed:
    """Two thirds of the bad rows fall on the previous day, one third in FUTURE_YEAR."""
    rows = _bad_rows(rng, table.num_rows)
    split = (2 * len(rows) + 2) // 3
    previous, future = rows[:split], rows[split:]
    ns = table["event_timestamp"].cast(pa.int64()).to_numpy().copy()
    ns[previous] -= SECONDS_PER_DAY * 1_000_000_000
    same_day_2099 = dt.date(FUTURE_YEAR, ctx.date.month, min(ctx.date.day, 28))
    shift_days = (same_day_2099 - ctx.date).days
    ns[future] += shift_days * SECONDS_PER_DAY * 1_000_000_000
    stamped = pa.array(ns, table["event_timestamp"].type)
    return Landed(_set_column(table, "event_timestamp", stamped))


def empty_file(table: pa.Table, rng: np.random.Generator, ctx: DayContext) -> Landed:
    return Landed(table, file_fault="empty")


def unreadable_file(table: pa.Table, rng: np.random.Generator, ctx: DayContext) -> Landed:
    return Landed(table, file_fault="truncated")


def unknown_transactions(table: pa.Table, rng: np.random.Generator, ctx: DayContext) -> Landed:
    """Labels whose transaction ids look real but were never generated (sequence >= 8,000,000)."""
    rows = _bad_rows(rng, table.num_rows)
    ids = ctx.make_transaction_ids(rng.integers(8_000_000, 10_000_000, len(rows)))
    return Landed(_replace(table, "transaction_id", rows, ids))
