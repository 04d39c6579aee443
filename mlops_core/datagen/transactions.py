"""One day of card transactions, vectorised: legitimate sessions plus fraud bursts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mlops_core.contracts import COUNTRIES, MERCHANT_CATEGORIES
from mlops_core.datagen.behaviour import (
    DAILY_VOLUME_CLIP,
    DAILY_VOLUME_SIGMA,
    LEGIT_HOURS,
    VOLUME_BY_WEEKDAY,
    FraudPattern,
    SpendingProfile,
    hour_p,
)
from mlops_core.datagen.world import (
    CATEGORY_MEDIAN,
    CATEGORY_SIGMA,
    DESTINATION_P,
    SECONDS_PER_DAY,
    World,
)

# Legitimate amounts are capped well below contracts.MAX_AMOUNT so that no scenario's
# scaling can push a clean row out of range.
MAX_GENERATED_AMOUNT = 25_000.0
MIN_GENERATED_AMOUNT = 0.5
# Members of a session or burst spread at most this far from its first transaction.
MAX_CLUSTER_SPAN_S = 12 * 3600


@dataclass(frozen=True)
class DayTransactions:
    """A day's transactions as integer codes, sorted by event time."""

    account: np.ndarray  # int64 index into world.accounts
    merchant: np.ndarray  # int64 index into world.merchants
    amount: np.ndarray  # float64, rounded to cents
    online: np.ndarray  # bool
    event_s: np.ndarray  # int64 epoch seconds
    is_fraud: np.ndarray  # bool, the ground truth

    def __len__(self) -> int:
        return len(self.event_s)


def weekday_of(epoch_s: int) -> int:
    """Monday = 0, like datetime.date.weekday(); 1970-01-01 was a Thursday."""
    return (epoch_s // SECONDS_PER_DAY + 3) % 7


def daily_volume(rng: np.random.Generator, rows_per_day: int, weekday: int) -> int:
    rhythm = VOLUME_BY_WEEKDAY[weekday] / np.mean(VOLUME_BY_WEEKDAY)
    noise = np.clip(rng.normal(0.0, DAILY_VOLUME_SIGMA), -DAILY_VOLUME_CLIP, DAILY_VOLUME_CLIP)
    return max(1, round(rows_per_day * rhythm * float(np.exp(noise))))


def _cluster_sizes(total: int, draw: Callable[[int], np.ndarray]) -> np.ndarray:
    """Sizes of clusters (sessions, bursts) drawn until they add up to exactly total."""
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    sizes = draw(total).astype(np.int64)  # every size >= 1, so total draws are enough
    ends = np.cumsum(sizes)
    n = int(np.searchsorted(ends, total)) + 1
    sizes = sizes[:n]
    sizes[-1] -= int(ends[n - 1]) - total
    return sizes


def _cluster_times(rng: np.random.Generator, sizes: np.ndarray, hours: np.ndarray, gap_minutes: float) -> np.ndarray:
    """Seconds of the day for every member: a start by the hour profile, then exponential gaps.

    A member that would fall after midnight is mirrored before the start, which keeps
    it inside the day and close to its cluster.
    """
    n_clusters = len(sizes)
    start = rng.choice(24, n_clusters, p=hours) * 3600 + rng.integers(0, 3600, n_clusters)
    total = int(sizes.sum())
    gaps = rng.exponential(gap_minutes * 60.0, total)
    first = np.cumsum(sizes) - sizes
    gaps[first] = 0.0
    running = np.cumsum(gaps)
    offset = running - np.repeat(running[first], sizes)
    offset = np.minimum(offset, MAX_CLUSTER_SPAN_S).astype(np.int64)
    start_each = np.repeat(start, sizes)
    t = start_each + offset
    return np.where(t < SECONDS_PER_DAY, t, start_each - offset)


def _merchant_country(rng: np.random.Generator, home: np.ndarray, foreign_p: np.ndarray) -> np.ndarray:
    n = len(home)
    foreign = rng.random(n) < foreign_p
    destination = rng.choice(len(COUNTRIES), n, p=DESTINATION_P).astype(np.int64)
    # A trip "abroad" to the home country goes to a uniformly chosen other country instead.
    other = (home + 1 + rng.integers(0, len(COUNTRIES) - 1, n)) % len(COUNTRIES)
    destination = np.where(destination == home, other, destination)
    return np.where(foreign, destination, home)


def _amounts(base: np.ndarray, log_mu: float, log_sigma: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """base (category median x merchant price level) x LogNormal(log_mu, log_sigma), rounded to cents."""
    raw = base * np.exp(log_mu + log_sigma * rng.standard_normal(len(base)))
    return np.round(np.clip(raw, MIN_GENERATED_AMOUNT, MAX_GENERATED_AMOUNT), 2)


def _fraud_account_weights(age_days: np.ndarray, fraud: FraudPattern) -> np.ndarray:
    weights = 1.0 + fraud.young_boost * np.exp(-age_days / fraud.young_days)
    if fraud.prefer_old:
        weights = weights * np.clip(age_days / 365.0, 0.02, 3.0)
    return weights / weights.sum()


def generate_day(
    world: World,
    day_index: int,
    n_rows: int,
    spending: SpendingProfile,
    fraud: FraudPattern,
    rng: np.random.Generator,
    activity_factor: np.ndarray | None = None,
) -> DayTransactions:
    """n_rows transactions of one day; accounts opened before the day's midnight take part.

    `activity_factor` scales each open account's spending rate (churn: fading and stopped accounts);
    None leaves the rates, and the day, exactly as they were.
    """
    day_s = world.start_s + day_index * SECONDS_PER_DAY
    accounts, merchants = world.accounts, world.merchants
    n_accounts = accounts.n_open_before(day_s)
    age_days = (day_s - accounts.created_s[:n_accounts]) / SECONDS_PER_DAY

    # Fraud: compromised accounts, chosen mostly among young ones, spend in bursts.
    n_fraud = int(rng.binomial(n_rows, fraud.rate))
    burst_sizes = _cluster_sizes(n_fraud, lambda k: 1 + rng.poisson(fraud.burst_extra, k))
    burst_account = rng.choice(n_accounts, len(burst_sizes), p=_fraud_account_weights(age_days, fraud))
    fraud_time = _cluster_times(rng, burst_sizes, fraud.hour_p(), fraud.burst_gap_minutes)
    fraud_account = np.repeat(burst_account, burst_sizes)
    fraud_category = rng.choice(len(MERCHANT_CATEGORIES), n_fraud, p=fraud.category_p())
    fraud_foreign_p = np.full(n_fraud, fraud.foreign_p)
    fraud_online = rng.random(n_fraud) < np.array(fraud.online_p)[fraud_category]

    # Legitimate spending: sessions of one or a few purchases by active accounts.
    n_legit = n_rows - n_fraud
    session_sizes = _cluster_sizes(
        n_legit,
        lambda k: np.where(rng.random(k) < spending.multi_session_p, 1 + rng.geometric(0.5, k), 1),
    )
    activity = accounts.activity[:n_accounts]
    if activity_factor is not None:
        activity = activity * activity_factor
    session_account = rng.choice(n_accounts, len(session_sizes), p=activity / activity.sum())
    legit_time = _cluster_times(rng, session_sizes, hour_p(LEGIT_HOURS), spending.session_gap_minutes)
    legit_account = np.repeat(session_account, session_sizes)
    weekend = weekday_of(day_s) >= 5
    legit_category = rng.choice(len(MERCHANT_CATEGORIES), n_legit, p=spending.category_p(weekend))
    legit_foreign_p = np.array(spending.foreign_p)[legit_category]
    legit_online = rng.random(n_legit) < np.array(spending.online_p)[legit_category]

    account = np.concatenate([legit_account, fraud_account]).astype(np.int64)
    category = np.concatenate([legit_category, fraud_category])
    country = _merchant_country(
        rng, accounts.home_country[account].astype(np.int64), np.concatenate([legit_foreign_p, fraud_foreign_p])
    )
    merchant = merchants.pick(country, category, rng.random(n_rows))
    base = CATEGORY_MEDIAN[category] * merchants.amount_factor[merchant]
    legit_amount = _amounts(base[:n_legit] * spending.amount_factor, 0.0, CATEGORY_SIGMA[category[:n_legit]], rng)
    if fraud.card_testing_range is None:
        fraud_amount = _amounts(base[n_legit:], fraud.amount_log_mu, np.full(n_fraud, fraud.amount_log_sigma), rng)
    else:
        low, high = fraud.card_testing_range
        fraud_amount = np.round(rng.uniform(low, high, n_fraud), 2)

    event_s = day_s + np.concatenate([legit_time, fraud_time]).astype(np.int64)
    order = np.argsort(event_s, kind="stable")
    return DayTransactions(
        account=account[order],
        merchant=merchant[order],
        amount=np.concatenate([legit_amount, fraud_amount])[order],
        online=np.concatenate([legit_online, fraud_online])[order],
        event_s=event_s[order],
        is_fraud=np.concatenate([np.zeros(n_legit, dtype=bool), np.ones(n_fraud, dtype=bool)])[order],
    )
