"""The static world of the demo: card accounts and merchants, built once per seed.

Everything here is indexed by small integers (category, country, account, merchant);
ids and strings are only made when a day's files are written.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from mlops_core.contracts import AGE_BANDS, COUNTRIES, CURRENCIES, MERCHANT_CATEGORIES

SECONDS_PER_DAY = 86_400
N_MERCHANTS = 3_000
# A card makes about 1.2 purchases a day on average, which sets the number of accounts.
TRANSACTIONS_PER_ACCOUNT_PER_DAY = 1.2
MIN_ACCOUNTS = 20
ACCOUNT_HISTORY_YEARS = 5
# Accounts opened during the window, as a yearly fraction of the starting portfolio.
ANNUAL_ACCOUNT_GROWTH = 0.25

COUNTRY_CURRENCY: dict[str, str] = {
    "US": "USD",
    "CA": "CAD",
    "MX": "MXN",
    "GB": "GBP",
    "DE": "EUR",
    "FR": "EUR",
    "ES": "EUR",
    "IT": "EUR",
    "NL": "EUR",
    "BR": "BRL",
    "IN": "INR",
    "NG": "NGN",
    "JP": "JPY",
}
# Index into contracts.CURRENCIES of each contract country's currency.
COUNTRY_CURRENCY_INDEX = np.array([CURRENCIES.index(COUNTRY_CURRENCY[c]) for c in COUNTRIES], dtype=np.int8)

# Where card holders live (mostly US) and, for trips abroad, where they go.
HOME_COUNTRY_WEIGHTS = {
    "US": 0.72, "CA": 0.05, "MX": 0.04, "GB": 0.04, "DE": 0.03, "FR": 0.025, "ES": 0.015,
    "IT": 0.015, "NL": 0.01, "BR": 0.02, "IN": 0.025, "NG": 0.01, "JP": 0.02,
}  # fmt: skip
DESTINATION_WEIGHTS = {
    "US": 0.20, "CA": 0.08, "MX": 0.12, "GB": 0.12, "DE": 0.06, "FR": 0.10, "ES": 0.08,
    "IT": 0.08, "NL": 0.03, "BR": 0.03, "IN": 0.03, "NG": 0.02, "JP": 0.05,
}  # fmt: skip
AGE_BAND_WEIGHTS = (0.12, 0.22, 0.20, 0.18, 0.15, 0.13)

# Typical ticket per category: median amount and lognormal sigma. Amounts are on one
# nominal scale in every currency (no FX conversion), so one contract maximum fits all.
CATEGORY_AMOUNT = {
    "grocery": (45.0, 0.7),
    "restaurants": (30.0, 0.6),
    "gas_transport": (40.0, 0.5),
    "retail": (55.0, 0.9),
    "pharmacy": (25.0, 0.7),
    "entertainment": (35.0, 0.8),
    "utilities": (90.0, 0.5),
    "travel": (280.0, 0.9),
    "electronics": (180.0, 1.0),
    "digital_goods": (15.0, 0.9),
    "jewelry": (250.0, 1.0),
    "gambling": (60.0, 1.0),
}
CATEGORY_MEDIAN = np.array([CATEGORY_AMOUNT[c][0] for c in MERCHANT_CATEGORIES])
CATEGORY_SIGMA = np.array([CATEGORY_AMOUNT[c][1] for c in MERCHANT_CATEGORIES])
# How the merchant base splits over categories (contract order).
MERCHANT_CATEGORY_WEIGHTS = np.array([0.16, 0.18, 0.08, 0.16, 0.06, 0.07, 0.04, 0.06, 0.06, 0.05, 0.04, 0.04])


def _normalised(weights: dict[str, float]) -> np.ndarray:
    values = np.array([weights[c] for c in COUNTRIES], dtype=float)
    return values / values.sum()


HOME_COUNTRY_P = _normalised(HOME_COUNTRY_WEIGHTS)
DESTINATION_P = _normalised(DESTINATION_WEIGHTS)


@dataclass(frozen=True)
class Accounts:
    """Every account that exists at some point of the window, sorted by opening time."""

    created_s: np.ndarray  # int64 epoch seconds
    home_country: np.ndarray  # int8 index into COUNTRIES
    age_band: np.ndarray  # int8 index into AGE_BANDS
    activity: np.ndarray  # float64 relative spending frequency

    def __len__(self) -> int:
        return len(self.created_s)

    def n_open_before(self, epoch_s: int) -> int:
        """How many accounts were opened strictly before epoch_s (they are a prefix)."""
        return int(np.searchsorted(self.created_s, epoch_s, side="left"))


@dataclass(frozen=True)
class Merchants:
    """Merchants grouped by (country, category) cell for vectorised lookup."""

    category: np.ndarray  # int8
    country: np.ndarray  # int8
    amount_factor: np.ndarray  # float64 merchant-specific price level
    # cell + cumulative popularity within the cell, strictly increasing; see pick().
    cell_key: np.ndarray

    def __len__(self) -> int:
        return len(self.category)

    def pick(self, country: np.ndarray, category: np.ndarray, u: np.ndarray) -> np.ndarray:
        """A merchant per row in the row's (country, category) cell, by popularity; u ~ U[0, 1)."""
        query = cell_of(country, category) + u
        return np.searchsorted(self.cell_key, query, side="right")


@dataclass(frozen=True)
class World:
    start_s: int  # epoch seconds of the first day's midnight UTC
    accounts: Accounts
    merchants: Merchants


def cell_of(country: np.ndarray, category: np.ndarray) -> np.ndarray:
    return country.astype(np.int64) * len(MERCHANT_CATEGORIES) + category.astype(np.int64)


def epoch_seconds(day: dt.date) -> int:
    return int((day - dt.date(1970, 1, 1)).days) * SECONDS_PER_DAY


def n_starting_accounts(rows_per_day: int) -> int:
    return max(MIN_ACCOUNTS, round(rows_per_day / TRANSACTIONS_PER_ACCOUNT_PER_DAY))


def _build_accounts(rng: np.random.Generator, start_s: int, days: int, rows_per_day: int) -> Accounts:
    n_start = n_starting_accounts(rows_per_day)
    history_s = ACCOUNT_HISTORY_YEARS * 365 * SECONDS_PER_DAY
    # Portfolio growth makes recent openings a little more frequent than old ones.
    before = start_s - (history_s * rng.random(n_start) ** 1.3).astype(np.int64) - 1
    per_day = rng.poisson(n_start * ANNUAL_ACCOUNT_GROWTH / 365, days)
    day_of_new = np.repeat(np.arange(days, dtype=np.int64), per_day)
    during = start_s + day_of_new * SECONDS_PER_DAY + rng.integers(0, SECONDS_PER_DAY, len(day_of_new))
    created = np.sort(np.concatenate([before, during]))
    n = len(created)
    return Accounts(
        created_s=created,
        home_country=rng.choice(len(COUNTRIES), n, p=HOME_COUNTRY_P).astype(np.int8),
        age_band=rng.choice(len(AGE_BANDS), n, p=AGE_BAND_WEIGHTS).astype(np.int8),
        activity=rng.gamma(1.5, 1.0, n),
    )


def _build_merchants(rng: np.random.Generator) -> Merchants:
    n_cat, n_country = len(MERCHANT_CATEGORIES), len(COUNTRIES)
    # Merchants per country follow where spending happens: residents plus visitors.
    country_p = 0.85 * HOME_COUNTRY_P + 0.15 * DESTINATION_P
    cat_p = MERCHANT_CATEGORY_WEIGHTS / MERCHANT_CATEGORY_WEIGHTS.sum()
    cell_p = np.outer(country_p, cat_p).ravel()
    # One merchant in every cell so any (country, category) can be served.
    counts = 1 + rng.multinomial(N_MERCHANTS - n_cat * n_country, cell_p)
    cells = np.repeat(np.arange(n_cat * n_country), counts)
    popularity = rng.lognormal(0.0, 1.0, len(cells))
    ends = np.cumsum(counts)
    starts = ends - counts
    running = np.cumsum(popularity)
    totals_before = np.where(starts > 0, running[starts - 1], 0.0)
    cum = (running - np.repeat(totals_before, counts)) / np.repeat(running[ends - 1] - totals_before, counts)
    cum[ends - 1] = 1.0
    return Merchants(
        category=(cells % n_cat).astype(np.int8),
        country=(cells // n_cat).astype(np.int8),
        amount_factor=rng.lognormal(0.0, 0.35, len(cells)),
        cell_key=cells + cum,
    )


def build_world(seed: int, start: dt.date, days: int, rows_per_day: int) -> World:
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0]))
    start_s = epoch_seconds(start)
    return World(
        start_s=start_s,
        accounts=_build_accounts(rng, start_s, days, rows_per_day),
        merchants=_build_merchants(rng),
    )
