"""How card holders spend and how fraudsters act, as plain parameters.

Per-category tuples follow contracts.MERCHANT_CATEGORIES: grocery, restaurants,
gas_transport, retail, pharmacy, entertainment, utilities, travel, electronics,
digital_goods, jewelry, gambling. Scenarios derive their variants from these.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlops_core.contracts import MERCHANT_CATEGORIES

# Mean daily volume relative to rows_per_day, Monday first: busier towards the weekend.
VOLUME_BY_WEEKDAY = (0.92, 0.94, 0.97, 1.00, 1.07, 1.12, 0.98)
# Day-to-day noise on top of the weekly rhythm, clipped so a clean day stays within
# about +-20% of rows_per_day (a volume gate at 0.5x..2x never fires on clean data).
DAILY_VOLUME_SIGMA = 0.04
DAILY_VOLUME_CLIP = 0.08

# Transactions by hour of day (UTC stands in for the card holder's local time):
# quiet at night, a lunch peak and a larger evening peak.
LEGIT_HOURS = (
    0.6, 0.35, 0.25, 0.2, 0.2, 0.35, 0.9, 1.8, 2.8, 3.4, 3.8, 4.4,
    5.6, 5.4, 4.4, 4.2, 4.5, 5.2, 6.2, 6.4, 5.4, 4.0, 2.6, 1.4,
)  # fmt: skip
NIGHT_HOURS = tuple(1.0 if h < 6 else 0.0 for h in range(24))


@dataclass(frozen=True)
class SpendingProfile:
    """Legitimate spending: what, where, how and how much."""

    category_weights: tuple[float, ...]
    # Multiplier on a category's weight on Saturdays and Sundays.
    weekend_factor: tuple[float, ...]
    online_p: tuple[float, ...]
    # Chance that a purchase is with a merchant outside the card holder's home country.
    foreign_p: tuple[float, ...]
    amount_factor: float = 1.0
    # Card holders often buy a few things in a row: a session is 1 purchase with
    # probability 1 - multi_session_p, else 2 + Geometric(p=0.5) - 1 purchases.
    multi_session_p: float = 0.12
    session_gap_minutes: float = 35.0

    def category_p(self, weekend: bool) -> np.ndarray:
        weights = np.array(self.category_weights)
        if weekend:
            weights = weights * np.array(self.weekend_factor)
        return weights / weights.sum()


@dataclass(frozen=True)
class FraudPattern:
    """How fraud happens: compromised accounts spend in bursts."""

    rate: float
    category_weights: tuple[float, ...]
    online_p: tuple[float, ...]
    foreign_p: float
    hour_weights: tuple[float, ...]
    # Amount = category median x merchant price level x LogNormal(mu, sigma) ...
    amount_log_mu: float
    amount_log_sigma: float
    # ... unless a card-testing range (low, high) is set: then Uniform(low, high).
    card_testing_range: tuple[float, float] | None = None
    # Chance of an account being compromised ~ 1 + young_boost * exp(-age / young_days),
    # times (age / 365) capped at 3 when prefer_old (established cards are the target).
    young_boost: float = 40.0
    young_days: float = 45.0
    prefer_old: bool = False
    # A burst is 1 + Poisson(burst_extra) transactions with Exponential(gap) minutes between.
    burst_extra: float = 2.5
    burst_gap_minutes: float = 12.0

    def category_p(self) -> np.ndarray:
        weights = np.array(self.category_weights)
        return weights / weights.sum()

    def hour_p(self) -> np.ndarray:
        return hour_p(self.hour_weights)


def hour_p(weights: tuple[float, ...]) -> np.ndarray:
    values = np.array(weights)
    return values / values.sum()


def _mix_hours(night_share: float) -> tuple[float, ...]:
    legit, night = hour_p(LEGIT_HOURS), hour_p(NIGHT_HOURS)
    return tuple(float(x) for x in (1 - night_share) * legit + night_share * night)


assert len(MERCHANT_CATEGORIES) == 12, "per-category tuples below assume the 12 contract categories"

BASELINE_SPENDING = SpendingProfile(
    category_weights=(0.22, 0.17, 0.12, 0.14, 0.06, 0.06, 0.05, 0.03, 0.04, 0.07, 0.01, 0.03),
    weekend_factor=(1.1, 1.4, 0.9, 1.4, 0.8, 1.5, 0.4, 1.0, 1.2, 1.1, 1.2, 1.3),
    online_p=(0.04, 0.08, 0.03, 0.30, 0.10, 0.35, 0.70, 0.65, 0.45, 1.00, 0.20, 0.60),
    foreign_p=(0.01, 0.02, 0.01, 0.02, 0.005, 0.03, 0.0, 0.35, 0.05, 0.25, 0.03, 0.10),
)

BASELINE_FRAUD = FraudPattern(
    rate=0.011,
    category_weights=(0.05, 0.04, 0.03, 0.10, 0.02, 0.05, 0.01, 0.12, 0.22, 0.18, 0.07, 0.11),
    online_p=(0.30, 0.30, 0.25, 0.65, 0.40, 0.65, 0.80, 0.85, 0.75, 1.00, 0.50, 0.85),
    foreign_p=0.30,
    hour_weights=_mix_hours(night_share=0.35),
    amount_log_mu=0.7,
    amount_log_sigma=0.6,
)
