"""The one definition of every model feature.

Each feature is declared once below with its name, dtype, description and the value an
unknown entity gets. The offline SQL (`offline.py`) and the online computation
(`online.py`) are both generated from these declarations; nothing else in the project
defines a feature.

Three kinds:
- windowed aggregates over an account's earlier transactions in a trailing window
  [t - window, t): events at or after the entity's own timestamp never count;
- account features from the account's snapshot known strictly before t;
- request-time features computed from the transaction itself (and, where they say so,
  from the account features and windowed aggregates above).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Literal

from mlops_core.vocabulary import AGE_BANDS, MERCHANT_CATEGORIES

ENTITY = "account_id"
# Where the offline computation reads events and account snapshots (dbt marts).
EVENTS_TABLE = "marts.transactions_enriched"
ACCOUNT_HISTORY_TABLE = "marts.account_history"
LABEL_EVENTS_TABLE = "marts.label_events"

# Columns of an event the windowed aggregates may read, with their dtypes. The online
# store keeps exactly these per recorded transaction.
EVENT_COLUMNS: dict[str, str] = {
    "transaction_id": "string",
    "event_timestamp": "timestamp",
    "amount_usd": "float64",
    "merchant_id": "string",
    "country": "string",
}

WINDOWS: dict[str, int] = {"1h": 3_600, "24h": 86_400, "7d": 7 * 86_400, "30d": 30 * 86_400}

Aggregation = Literal["count", "sum", "mean", "max", "distinct_count", "seconds_since_last"]
Dtype = Literal["int64", "float64", "category"]


@dataclass(frozen=True)
class WindowedFeature:
    """An aggregation of one event column over the account's events in [t - window, t)."""

    name: str
    aggregation: Aggregation
    column: str | None
    window: str
    description: str

    kind = "windowed"

    @property
    def window_seconds(self) -> int:
        return WINDOWS[self.window]

    @property
    def dtype(self) -> Dtype:
        return "int64" if self.aggregation in ("count", "distinct_count") else "float64"

    @property
    def default(self) -> float | int:
        """Value when the account has no event in the window (or is unknown)."""
        if self.aggregation == "seconds_since_last":
            # "Not within the window": the window length, so the feature stays monotone.
            return float(self.window_seconds)
        return 0 if self.dtype == "int64" else 0.0


@dataclass(frozen=True)
class AccountFeature:
    """An attribute of the account's snapshot known strictly before t."""

    name: str
    column: str
    dtype: Dtype
    description: str
    default: str | float
    categories: tuple[str, ...] = ()

    kind = "account"


Transform = Literal[
    "identity", "log1p", "hour_of_day", "day_of_week", "is_weekend", "equals", "differs", "age_days", "ratio"
]


@dataclass(frozen=True)
class RequestFeature:
    """A function of the transaction being scored, computed the same way offline and online.

    `inputs` name transaction fields (event columns plus channel and merchant_category),
    account features or windowed features; `transform` picks the formula, whose SQL and
    Python forms live side by side in offline.py and online.py and are tested equal.
    """

    name: str
    transform: Transform
    inputs: tuple[str, ...]
    dtype: Dtype
    description: str
    default: float | str
    argument: str | None = None
    categories: tuple[str, ...] = ()

    kind = "request"


Feature = WindowedFeature | AccountFeature | RequestFeature

# Transaction fields a request must carry (beyond what the account and event history give).
REQUEST_FIELDS: tuple[str, ...] = (
    "transaction_id",
    "account_id",
    "event_timestamp",
    "amount_usd",
    "merchant_id",
    "merchant_category",
    "channel",
    "country",
)


def _windowed() -> list[WindowedFeature]:
    features: list[WindowedFeature] = []
    for window in ("1h", "24h", "7d", "30d"):
        features.append(
            WindowedFeature(
                f"txn_count_{window}", "count", None, window, f"Transactions of the account in the previous {window}."
            )
        )
        features.append(
            WindowedFeature(
                f"amount_sum_{window}",
                "sum",
                "amount_usd",
                window,
                f"Total USD spent by the account in the previous {window}.",
            )
        )
    for window in ("24h", "7d", "30d"):
        features.append(
            WindowedFeature(
                f"amount_mean_{window}",
                "mean",
                "amount_usd",
                window,
                f"Mean USD amount of the account's transactions in the previous {window}.",
            )
        )
        features.append(
            WindowedFeature(
                f"amount_max_{window}",
                "max",
                "amount_usd",
                window,
                f"Largest USD amount of the account in the previous {window}.",
            )
        )
        features.append(
            WindowedFeature(
                f"merchant_distinct_{window}",
                "distinct_count",
                "merchant_id",
                window,
                f"Distinct merchants the account paid in the previous {window}.",
            )
        )
    for window in ("24h", "7d"):
        features.append(
            WindowedFeature(
                f"country_distinct_{window}",
                "distinct_count",
                "country",
                window,
                f"Distinct merchant countries of the account in the previous {window}.",
            )
        )
    features.append(
        WindowedFeature(
            "seconds_since_last_txn",
            "seconds_since_last",
            "event_timestamp",
            "30d",
            "Seconds since the account's previous transaction, capped at 30 days.",
        )
    )
    return features


WINDOWED_FEATURES: tuple[WindowedFeature, ...] = tuple(_windowed())

ACCOUNT_FEATURES: tuple[AccountFeature, ...] = (
    AccountFeature(
        "age_band",
        "age_band",
        "category",
        "Card holder's age band; 'unknown' for an account not yet known.",
        "unknown",
        AGE_BANDS + ("unknown",),
    ),
)

REQUEST_FEATURES: tuple[RequestFeature, ...] = (
    RequestFeature("amount_usd", "identity", ("amount_usd",), "float64", "Transaction amount in USD.", 0.0),
    RequestFeature("log_amount_usd", "log1p", ("amount_usd",), "float64", "ln(1 + amount in USD).", 0.0),
    RequestFeature(
        "hour_of_day", "hour_of_day", ("event_timestamp",), "int64", "Hour of the transaction, UTC (0-23).", 0
    ),
    RequestFeature("day_of_week", "day_of_week", ("event_timestamp",), "int64", "Day of the week, 0 = Monday.", 0),
    RequestFeature("is_weekend", "is_weekend", ("event_timestamp",), "int64", "1 on Saturday and Sunday.", 0),
    RequestFeature(
        "is_online",
        "equals",
        ("channel",),
        "int64",
        "1 for a card-not-present (online) transaction.",
        0,
        argument="online",
    ),
    RequestFeature(
        "is_foreign",
        "differs",
        ("country", "home_country"),
        "int64",
        "1 when the merchant country differs from the card holder's; 0 for an unknown account.",
        0,
    ),
    RequestFeature(
        "account_age_days",
        "age_days",
        ("event_timestamp", "created_at"),
        "float64",
        "Complete days since the account opened; -1 for an unknown account.",
        -1.0,
    ),
    RequestFeature(
        "amount_to_mean_30d",
        "ratio",
        ("amount_usd", "amount_mean_30d"),
        "float64",
        "Amount over the account's 30-day mean amount; 1 without history.",
        1.0,
    ),
    RequestFeature(
        "merchant_category",
        "identity",
        ("merchant_category",),
        "category",
        "Merchant category.",
        "unknown",
        categories=MERCHANT_CATEGORIES + ("unknown",),
    ),
)

FEATURES: tuple[Feature, ...] = (*WINDOWED_FEATURES, *ACCOUNT_FEATURES, *REQUEST_FEATURES)
FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
BY_NAME: dict[str, Feature] = {f.name: f for f in FEATURES}
# Account snapshot columns the account features and request transforms read.
ACCOUNT_COLUMNS: tuple[str, ...] = ("created_at", "home_country", "age_band")
MAX_WINDOW_SECONDS = max(WINDOWS.values())


def numeric_features() -> list[str]:
    return [f.name for f in FEATURES if f.dtype != "category"]


def categorical_features() -> dict[str, tuple[str, ...]]:
    return {f.name: f.categories for f in FEATURES if f.dtype == "category"}


def spec_version() -> str:
    """A short hash of the whole spec: online state and models record which spec made them."""
    payload = json.dumps([{"kind": f.kind, **asdict(f)} for f in FEATURES], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def describe() -> list[dict[str, object]]:
    """The spec as rows, for README, metadata and the UI."""
    rows = []
    for f in FEATURES:
        if isinstance(f, WindowedFeature):
            how = f"{f.aggregation}({f.column or '*'}) over {f.window}"
        elif isinstance(f, AccountFeature):
            how = f"account snapshot `{f.column}`"
        else:
            how = f"{f.transform}({', '.join(f.inputs)})" + (f" = {f.argument!r}" if f.argument else "")
        rows.append(
            {
                "name": f.name,
                "kind": f.kind,
                "dtype": f.dtype,
                "definition": how,
                "default": f.default,
                "description": f.description,
            }
        )
    return rows


def _validate() -> None:
    names = [f.name for f in FEATURES]
    if len(names) != len(set(names)):
        raise ValueError(f"duplicate feature names in the spec: {sorted(n for n in names if names.count(n) > 1)}")
    known_inputs = set(REQUEST_FIELDS) | set(ACCOUNT_COLUMNS) | {f.name for f in WINDOWED_FEATURES}
    for f in REQUEST_FEATURES:
        missing = [i for i in f.inputs if i not in known_inputs]
        if missing:
            raise ValueError(f"request feature {f.name!r} reads unknown inputs {missing}")
    for f in WINDOWED_FEATURES:
        if f.column is not None and f.column not in EVENT_COLUMNS:
            raise ValueError(
                f"windowed feature {f.name!r} aggregates {f.column!r}, not an event column {sorted(EVENT_COLUMNS)}"
            )
        if f.window not in WINDOWS:
            raise ValueError(f"windowed feature {f.name!r} has window {f.window!r}, expected one of {sorted(WINDOWS)}")


_validate()
