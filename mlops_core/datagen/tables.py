"""Arrow tables in the contract's shape, from the simulation's integer codes.

Ids: transactions "t<YYYYMMDD>-<7-digit sequence of the day>", accounts "a<7 digits>",
merchants "m<5 digits>", all numbered from 1.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mlops_core.contracts import (
    ACCOUNTS,
    AGE_BANDS,
    CHANNELS,
    COUNTRIES,
    CURRENCIES,
    MERCHANT_CATEGORIES,
    TRANSACTIONS,
)
from mlops_core.datagen.labels import TIMESTAMP
from mlops_core.datagen.transactions import DayTransactions
from mlops_core.datagen.world import COUNTRY_CURRENCY_INDEX, World

TRANSACTION_ID_DIGITS = 7
ACCOUNT_ID_DIGITS = 7
MERCHANT_ID_DIGITS = 5


def _ids(prefix: str, numbers: np.ndarray, digits: int) -> pa.Array:
    text = pc.utf8_lpad(pc.cast(pa.array(numbers, pa.int64()), pa.string()), digits, "0")
    return pc.binary_join_element_wise(prefix, text, "")


def transaction_id_maker(day: dt.date) -> Callable[[np.ndarray], pa.Array]:
    prefix = f"t{day:%Y%m%d}-"
    return lambda sequence: _ids(prefix, sequence, TRANSACTION_ID_DIGITS)


def _strings(values: tuple[str, ...], codes: np.ndarray) -> pa.Array:
    return pa.array(values, pa.string()).take(pa.array(codes))


class ContractTables:
    """Turns the world's integer codes into contract-shaped Arrow tables."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.account_digits = max(ACCOUNT_ID_DIGITS, len(str(len(world.accounts))))
        self.account_ids = _ids("a", np.arange(1, len(world.accounts) + 1), self.account_digits)
        self.merchant_ids = _ids("m", np.arange(1, len(world.merchants) + 1), MERCHANT_ID_DIGITS)

    def transactions(self, day: dt.date, txs: DayTransactions) -> pa.Table:
        merchants = self.world.merchants
        country = merchants.country[txs.merchant]
        columns = {
            "transaction_id": transaction_id_maker(day)(np.arange(1, len(txs) + 1)),
            "account_id": self.account_ids.take(pa.array(txs.account)),
            "merchant_id": self.merchant_ids.take(pa.array(txs.merchant)),
            "merchant_category": _strings(MERCHANT_CATEGORIES, merchants.category[txs.merchant]),
            "amount": pa.array(txs.amount, pa.float64()),
            "currency": _strings(CURRENCIES, COUNTRY_CURRENCY_INDEX[country]),
            "channel": _strings(CHANNELS, np.where(txs.online, CHANNELS.index("online"), CHANNELS.index("in_store"))),
            "country": _strings(COUNTRIES, country),
            "event_timestamp": pa.array(txs.event_s * 1_000_000_000, TIMESTAMP),
        }
        return pa.table({name: columns[name] for name in TRANSACTIONS.columns})

    def accounts(self, first: int, stop: int) -> pa.Table:
        accounts = self.world.accounts
        columns = {
            "account_id": self.account_ids[first:stop],
            "created_at": pa.array(accounts.created_s[first:stop] * 1_000_000_000, TIMESTAMP),
            "home_country": _strings(COUNTRIES, accounts.home_country[first:stop]),
            "age_band": _strings(AGE_BANDS, accounts.age_band[first:stop]),
        }
        return pa.table({name: columns[name] for name in ACCOUNTS.columns})
