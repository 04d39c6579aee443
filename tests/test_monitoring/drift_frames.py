"""Feature frames shaped like the feature spec's, with a knob for drift.

A plainly named module rather than conftest, so tests can import it without clashing with
the other test folders' conftest modules."""

import numpy as np
import pandas as pd

from mlops_core.features import spec

NUMERIC = [
    "amount_usd",  # continuous, heavy-tailed
    "account_age_days",  # continuous, with nulls
    "hour_of_day",  # 24 values
    "txn_count_24h",  # counts: from a few values to many
    "country_distinct_24h",  # 1-3 values: a numeric the rule treats like a category
    "is_online",  # binary
]
CATEGORICAL = ["merchant_category", "age_band"]
MERCHANT_CATEGORIES = [c for c in spec.categorical_features()["merchant_category"] if c != "unknown"]
AGE_BANDS = spec.categorical_features()["age_band"]
RISKY = ("digital_goods", "jewelry", "gambling")


def feature_frame(rng: np.random.Generator, n: int, shift: float = 0.0) -> pd.DataFrame:
    """n rows; `shift` 0 is the reference population and 1 a clearly drifted one (larger and
    more online amounts, more night hours, more risky merchants, younger card holders)."""
    hour_weights = np.r_[np.full(6, 0.2 + shift), np.ones(18)]
    merchant_weights = np.array([3.0 if c not in RISKY else 0.5 + 2.0 * shift for c in MERCHANT_CATEGORIES])
    age_weights = np.array([1.0 + shift, 2.0, 2.0, 1.5, 1.0, 0.8 - 0.5 * shift, 0.0])
    account_age = rng.gamma(2.0, 300.0, n)
    account_age[rng.random(n) < 0.03] = np.nan
    return pd.DataFrame(
        {
            "amount_usd": rng.lognormal(3.5 + 0.5 * shift, 1.0, n),
            "account_age_days": account_age,
            "hour_of_day": rng.choice(24, n, p=hour_weights / hour_weights.sum()),
            "txn_count_24h": rng.poisson(1.5 + 1.5 * shift, n),
            "country_distinct_24h": np.minimum(1 + rng.poisson(0.3 + 0.5 * shift, n), 3),
            "is_online": (rng.random(n) < 0.35 + 0.15 * shift).astype(np.int64),
            "merchant_category": rng.choice(MERCHANT_CATEGORIES, n, p=merchant_weights / merchant_weights.sum()),
            "age_band": pd.Categorical.from_codes(
                rng.choice(len(AGE_BANDS), n, p=age_weights / age_weights.sum()), categories=list(AGE_BANDS)
            ),
        }
    )
