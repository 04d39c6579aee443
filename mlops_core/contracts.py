"""The landing-zone contract: columns, types, ranges and allowed values of every source.

Defined once here as pandera models. Ingestion validates against them, the data
generator writes to them, README lists them, and dbt's accepted_values tests are
checked against them by a unit test.
"""

from __future__ import annotations

import atexit
from dataclasses import dataclass
from typing import Literal

import pandas as pd
import pandera.pandas as pa
import pandera.typing
from pandera.typing.pandas import Series

# The vocabularies live where modules that must not load pandas can read them.
from mlops_core.vocabulary import (  # noqa: E402
    AGE_BANDS,
    CHANNELS,
    COUNTRIES,
    CURRENCIES,
    LABEL_SOURCES,
    MAX_AMOUNT,
    MERCHANT_CATEGORIES,
)


def _empty_pandera_type_caches() -> None:
    """pandera keeps the series and index types it knows in lru caches, dask.dataframe's among them (dask is
    installed for xgboost.dask). Left to interpreter finalization, what they hold outlives DuckDB 2.0's
    nanobind module, which then prints ~40 lines of `nanobind: leaked ... instances/types/functions` as
    every command that ran a validating job exits (`make demo` ended on them). Emptied at exit, it is freed
    in order. Found by bisecting the caches alive at exit: emptying the series and index ones is what stops it."""
    for cached in (pandera.typing.get_series_types, pandera.typing.get_index_types, pandera.typing.get_dataframe_types):
        cached.cache_clear()


atexit.register(_empty_pandera_type_caches)

ID_LENGTH = {"min_value": 1, "max_value": 64}
# Control characters (C0, DEL, C1) never belong in an id: a NUL or an escape in a key
# passes every length and reference rule, then splits or hides rows downstream.
CONTROL_CHARACTERS = r"[\x00-\x1f\x7f-\x9f]"
ID_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*$"
UTC_TIMESTAMP = pd.DatetimeTZDtype(unit="ns", tz="UTC")
# Arrow-backed strings: pandera checks their dtype in O(1) instead of per element
# (13x faster validation on 800k rows here) and they take a sixth of the memory.
STRING = pd.StringDtype("pyarrow")


class TransactionsContract(pa.DataFrameModel):
    """One card transaction, as authorised."""

    transaction_id: Series[STRING] = pa.Field(
        str_length=ID_LENGTH, str_matches=ID_PATTERN, description="Unique id of the transaction."
    )
    account_id: Series[STRING] = pa.Field(
        str_length=ID_LENGTH, str_matches=ID_PATTERN, description="Card account; must exist in accounts."
    )
    merchant_id: Series[STRING] = pa.Field(str_length=ID_LENGTH, str_matches=ID_PATTERN, description="Merchant id.")
    merchant_category: Series[STRING] = pa.Field(isin=MERCHANT_CATEGORIES, description="Merchant category.")
    amount: Series[float] = pa.Field(gt=0, le=MAX_AMOUNT, description="Amount in `currency`, > 0 and <= 50,000.")
    currency: Series[STRING] = pa.Field(isin=CURRENCIES, description="ISO 4217 currency of `amount`.")
    channel: Series[STRING] = pa.Field(isin=CHANNELS, description="in_store or online.")
    country: Series[STRING] = pa.Field(isin=COUNTRIES, description="ISO 3166 alpha-2 country of the merchant.")
    event_timestamp: Series[UTC_TIMESTAMP] = pa.Field(description="Authorisation time, UTC, inside the partition day.")

    class Config:
        strict = True
        coerce = False


class LabelsContract(pa.DataFrameModel):
    """A fraud verdict for an earlier transaction, landed on the day it became known."""

    transaction_id: Series[STRING] = pa.Field(
        str_length=ID_LENGTH, str_matches=ID_PATTERN, description="Transaction the label is about."
    )
    is_fraud: Series[bool] = pa.Field(description="True: confirmed fraud. False: matured without a dispute.")
    labeled_at: Series[UTC_TIMESTAMP] = pa.Field(
        description="When the verdict became known, UTC, inside the partition day."
    )
    label_source: Series[STRING] = pa.Field(isin=LABEL_SOURCES, description="chargeback, customer_report or maturity.")

    class Config:
        strict = True
        coerce = False


class AccountsContract(pa.DataFrameModel):
    """A snapshot row of a card account; the row from the latest partition wins."""

    account_id: Series[STRING] = pa.Field(
        str_length=ID_LENGTH, str_matches=ID_PATTERN, description="Unique id of the account."
    )
    created_at: Series[UTC_TIMESTAMP] = pa.Field(description="Account opening time, UTC, not after the partition day.")
    home_country: Series[STRING] = pa.Field(isin=COUNTRIES, description="Country of the card holder's address.")
    age_band: Series[STRING] = pa.Field(isin=AGE_BANDS, description="Card holder's age band.")

    class Config:
        strict = True
        coerce = False


@dataclass(frozen=True)
class Reference:
    """A foreign key from a column of one source to the id column of another."""

    column: str
    source: str
    # Whether a row of a held batch of `source` satisfies the key. Only where the marts
    # inner-join the referenced rows: the referencing row then waits in raw, out of the
    # marts, until the held batch is fixed and accepted.
    held_counts: bool = False


@dataclass(frozen=True)
class TimeOrder:
    """A timestamp that must not precede a timestamp of the row it refers to.

    dbt derives a duration from the pair (account age, label delay) and tests it is not
    negative; ingestion rejects the row first, from whichever side lands second.
    """

    column: str
    # The referencing column, one of the contract's references.
    via: str
    # The referenced source's timestamp that `column` must not be earlier than.
    not_before: str


@dataclass(frozen=True)
class SourceContract:
    """How a landing source is keyed, partitioned and linked to the others."""

    name: str
    model: type[pa.DataFrameModel]
    id_column: str
    # The timestamp that decides which day's partition a row belongs in.
    partition_time_column: str
    # "within": the timestamp must fall inside the partition day (events).
    # "not_after": it may be any time up to the end of the partition day (snapshots).
    partition_time_rule: Literal["within", "not_after"]
    references: tuple[Reference, ...] = ()
    time_orders: tuple[TimeOrder, ...] = ()
    # Events have globally unique ids; snapshot rows and label revisions repeat ids across days.
    unique_across_partitions: bool = False
    # Daily volume is compared with the trailing days only where it should be steady:
    # label volume ramps up over the first maturity window, account snapshots are lumpy.
    expect_steady_volume: bool = False

    @property
    def schema(self) -> pa.DataFrameSchema:
        return self.model.to_schema()

    @property
    def columns(self) -> list[str]:
        return list(self.schema.columns)

    def dtype_of(self, column: str) -> str:
        """The contract's dtype of a column as a pandas dtype string, e.g. 'float64'."""
        return str(self.schema.columns[column].dtype)

    def reference(self, column: str) -> Reference:
        """The reference made by `column`; KeyError if it makes none."""
        return {ref.column: ref for ref in self.references}[column]


ACCOUNTS = SourceContract("accounts", AccountsContract, "account_id", "created_at", "not_after")
TRANSACTIONS = SourceContract(
    "transactions",
    TransactionsContract,
    "transaction_id",
    "event_timestamp",
    "within",
    references=(Reference("account_id", "accounts"),),
    # transactions_enriched.account_age_days: an account's latest snapshot is the one dbt joins.
    time_orders=(TimeOrder("event_timestamp", via="account_id", not_before="created_at"),),
    unique_across_partitions=True,
    expect_steady_volume=True,
)
LABELS = SourceContract(
    "labels",
    LabelsContract,
    "transaction_id",
    "labeled_at",
    "within",
    # transaction_labels and label_events inner-join accepted transactions, so a label about
    # a held transaction is kept in raw and joins once that day is fixed and accepted.
    references=(Reference("transaction_id", "transactions", held_counts=True),),
    # transaction_labels.label_delay_days: a verdict can not precede its transaction.
    time_orders=(TimeOrder("labeled_at", via="transaction_id", not_before="event_timestamp"),),
)

# Ingestion order matters: references point to sources loaded earlier.
SOURCES: dict[str, SourceContract] = {s.name: s for s in (ACCOUNTS, TRANSACTIONS, LABELS)}
