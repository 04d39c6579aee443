"""Named scenarios: what changes from the drift day on (behaviour, or a bad-data fault)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from mlops_core.datagen import corruption
from mlops_core.datagen.behaviour import (
    BASELINE_FRAUD,
    BASELINE_SPENDING,
    LEGIT_HOURS,
    FraudPattern,
    SpendingProfile,
)

# More travel and electronics, more online and abroad, bigger tickets; fraud unchanged.
_TRAVEL_BOOM = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 3.0, 2.5, 1.5, 1.5, 1.0)
COVARIATE_SPENDING = replace(
    BASELINE_SPENDING,
    category_weights=tuple(w * f for w, f in zip(BASELINE_SPENDING.category_weights, _TRAVEL_BOOM, strict=True)),
    online_p=tuple(1 - (1 - p) * 0.6 for p in BASELINE_SPENDING.online_p),
    foreign_p=tuple(min(0.9, p * 2.5) for p in BASELINE_SPENDING.foreign_p),
    amount_factor=1.4,
)

# Card testing: small daytime purchases at everyday domestic merchants, mostly at the
# till, on established accounts, spread over hours. Rate stays as before.
CARD_TESTING_FRAUD = replace(
    BASELINE_FRAUD,
    category_weights=(0.40, 0.28, 0.27, 0.0, 0.05, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0),
    online_p=(0.15, 0.15, 0.10, 0.3, 0.15, 0.3, 0.5, 0.5, 0.5, 1.0, 0.3, 0.5),
    foreign_p=0.01,
    hour_weights=tuple(w if 8 <= h < 20 else 0.0 for h, w in enumerate(LEGIT_HOURS)),
    card_testing_range=(1.0, 12.0),
    young_boost=0.0,
    prefer_old=True,
    burst_extra=1.5,
    burst_gap_minutes=120.0,
)


@dataclass(frozen=True)
class Scenario:
    """What applies from the drift day on; before it every scenario is the baseline."""

    name: str
    description: str
    spending: SpendingProfile = BASELINE_SPENDING
    fraud: FraudPattern = BASELINE_FRAUD
    transactions_fault: corruption.Fault | None = None
    labels_fault: corruption.Fault | None = None

    @property
    def changes_anything(self) -> bool:
        return self.name != "baseline"


_ALL = (
    Scenario("baseline", "Steady spending and fraud; clean files every day."),
    Scenario(
        "covariate_drift",
        "Spending shifts: more travel/electronics, online and abroad, amounts +40%; fraud unchanged.",
        spending=COVARIATE_SPENDING,
    ),
    Scenario(
        "concept_drift",
        "Fraud turns into small daytime in-store card testing at grocery/gas/restaurants on older accounts.",
        fraud=CARD_TESTING_FRAUD,
    ),
    Scenario(
        "bad_missing_column",
        "Transactions files lack the merchant_category column.",
        transactions_fault=corruption.missing_column,
    ),
    Scenario(
        "bad_renamed_column",
        "Transactions column amount is renamed to amt.",
        transactions_fault=corruption.renamed_column,
    ),
    Scenario(
        "bad_extra_column",
        "Transactions files carry an extra promo_code column.",
        transactions_fault=corruption.extra_column,
    ),
    Scenario(
        "bad_wrong_type",
        'Transactions amount is text: "12.50" in parquet, "12.50 USD" in CSV.',
        transactions_fault=corruption.wrong_type,
    ),
    Scenario(
        "bad_out_of_range",
        "5% of transactions have a negative amount or 10,000,000.",
        transactions_fault=corruption.out_of_range,
    ),
    Scenario(
        "bad_allowed_values",
        '5% of transactions have channel "mobile" or currency "XXX".',
        transactions_fault=corruption.allowed_values,
    ),
    Scenario(
        "bad_nulls",
        "5% of transactions have a null account_id or merchant_id.",
        transactions_fault=corruption.nulls,
    ),
    Scenario(
        "bad_duplicate_ids",
        "5% of transactions repeat an earlier row's transaction_id (half exact copies, half another amount).",
        transactions_fault=corruption.duplicate_ids,
    ),
    Scenario(
        "bad_unknown_accounts",
        "5% of transactions reference account ids that exist in no accounts partition.",
        transactions_fault=corruption.unknown_accounts,
    ),
    Scenario(
        "bad_unknown_transactions",
        "5% of labels reference transaction ids that were never generated.",
        labels_fault=corruption.unknown_transactions,
    ),
    Scenario(
        "bad_volume_drop",
        "Only 10% of the day's transactions land.",
        transactions_fault=corruption.volume_drop,
    ),
    Scenario(
        "bad_volume_spike",
        "5x the day's transactions land (replayed rows with fresh ids).",
        transactions_fault=corruption.volume_spike,
    ),
    Scenario(
        "bad_missing_partition",
        "The day's transactions partition directory is absent.",
        transactions_fault=corruption.missing_partition,
    ),
    Scenario(
        "bad_timestamps",
        "5% of transactions are stamped outside the partition day (previous day or year 2099).",
        transactions_fault=corruption.bad_timestamps,
    ),
    Scenario(
        "bad_empty_file",
        "The day's transactions file is zero bytes.",
        transactions_fault=corruption.empty_file,
    ),
    Scenario(
        "bad_unreadable_file",
        "The day's transactions file is corrupt (truncated parquet; cut-off CSV with binary junk).",
        transactions_fault=corruption.unreadable_file,
    ),
)

SCENARIO_DEFINITIONS: dict[str, Scenario] = {s.name: s for s in _ALL}
SCENARIOS: dict[str, str] = {s.name: s.description for s in _ALL}


def get_scenario(name: str) -> Scenario:
    if name not in SCENARIO_DEFINITIONS:
        raise ValueError(f"unknown scenario {name!r}; valid scenarios: {', '.join(SCENARIO_DEFINITIONS)}")
    return SCENARIO_DEFINITIONS[name]
