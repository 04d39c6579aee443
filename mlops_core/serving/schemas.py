"""The HTTP contract of the scoring endpoint: raw transaction fields in, a decision out.

The request mirrors the landing contract (mlops_core.contracts.TransactionsContract), so a
transaction the data gates would reject is refused here too, with a 422 naming the field.
The event time is also bounded by the service's clock (limits.EventTimeBounds).
"""

import datetime as dt
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mlops_core.vocabulary import CHANNELS, COUNTRIES, CURRENCIES, MAX_AMOUNT, MERCHANT_CATEGORIES

MAX_BATCH = 1000

Identifier = Annotated[str, Field(min_length=1, max_length=64)]


class Transaction(BaseModel):
    """One card transaction as authorised (the raw fields of the landing contract)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    transaction_id: Identifier
    account_id: Identifier
    merchant_id: Identifier
    merchant_category: Literal[MERCHANT_CATEGORIES]  # type: ignore[valid-type]
    # strict: "12.5" as a string is a client bug, not an amount.
    amount: Annotated[float, Field(gt=0, le=MAX_AMOUNT, strict=True)]
    currency: Literal[CURRENCIES]  # type: ignore[valid-type]
    channel: Literal[CHANNELS]  # type: ignore[valid-type]
    country: Literal[COUNTRIES]  # type: ignore[valid-type]
    event_timestamp: dt.datetime = Field(description="ISO-8601; naive times are UTC.")

    @field_validator("event_timestamp")
    @classmethod
    def _utc(cls, value: dt.datetime) -> dt.datetime:
        try:
            return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
        except OverflowError:  # e.g. 0001-01-01T00:00+01:00: in UTC it falls before year 1
            raise ValueError(f"{value.isoformat()} is outside years 1-9999 once converted to UTC") from None


class Prediction(BaseModel):
    transaction_id: str
    fraud_probability: float
    is_fraud: bool
    model_version: str
    variant: Literal["champion", "canary"]
    request_id: str


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    transactions: Annotated[list[Transaction], Field(min_length=1, max_length=MAX_BATCH)]


class BatchResponse(BaseModel):
    predictions: list[Prediction]


class SegmentRuleModel(BaseModel):
    """A segment kept on the champion: requests whose online feature `feature` is at least `at_least`."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=100)]
    feature: Annotated[str, Field(min_length=1, max_length=100)]
    at_least: float


class TrafficRequest(BaseModel):
    """A new traffic plan. Versions are registry versions of the model; None clears a slot."""

    model_config = ConfigDict(extra="forbid")

    champion_version: str | None = Field(default=None, description="Load this version as champion (default: keep).")
    canary_version: str | None = Field(default=None, description="Version receiving `canary_share` of accounts.")
    canary_share: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    shadow_version: str | None = Field(default=None, description="Version scoring every request silently.")
    reason: Annotated[str, Field(min_length=1, max_length=500)] = "traffic change"
    canary_excluded: list[SegmentRuleModel] = Field(
        default_factory=list, description="Segments the canary never answers: they stay on the champion."
    )


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Annotated[str, Field(min_length=1, max_length=500)]
