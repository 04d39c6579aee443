"""The simulated world has the statistical shape the models and monitors rely on."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from mlops_core.datagen.generator import DemoSpec, simulate

START = dt.date(2024, 3, 4)  # a Monday
NIGHT = range(0, 6)


def previous_count(account: np.ndarray, seconds: np.ndarray, window_s: int) -> np.ndarray:
    """Per row: transactions of the same account in the window_s seconds before it."""
    codes = pd.factorize(account)[0].astype(np.int64)
    key = codes * 10**11 + seconds.astype(np.int64)
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    counts = np.arange(len(key)) - np.searchsorted(sorted_key, sorted_key - window_s, side="left")
    result = np.empty(len(key), dtype=np.int64)
    result[order] = counts
    return result


@pytest.fixture(scope="module")
def world():
    """28 days x 1000 rows of ground truth, with account ages and velocity."""
    spec = DemoSpec(START, days=28, rows_per_day=1000, seed=5)
    frames, accounts = [], []
    for day in simulate(spec):
        frame = day.clean_transactions.to_pandas()
        frame["is_fraud"] = day.is_fraud
        frame["day"] = day.date
        frames.append(frame)
        accounts.append(day.accounts.table.to_pandas())
    txs = pd.concat(frames, ignore_index=True)
    book = pd.concat(accounts).set_index("account_id")
    txs["age_days"] = (txs["event_timestamp"] - txs["account_id"].map(book["created_at"])).dt.total_seconds() / 86400
    txs["foreign"] = txs["country"] != txs["account_id"].map(book["home_country"])
    txs["hour"] = txs["event_timestamp"].dt.hour
    seconds = txs["event_timestamp"].astype("int64").to_numpy() // 10**9
    txs["n_1h"] = previous_count(txs["account_id"].to_numpy(), seconds, 3600)
    return spec, txs, book


def test_fraud_rate_is_between_half_and_two_percent(world):
    _, txs, _ = world
    assert 0.005 <= txs["is_fraud"].mean() <= 0.02


def test_daily_volume_has_a_weekly_rhythm_within_25_percent(world):
    spec, txs, _ = world
    per_day = txs.groupby("day").size()
    assert len(per_day) == spec.days
    assert (per_day.between(0.75 * spec.rows_per_day, 1.25 * spec.rows_per_day)).all()
    weekday = pd.Series([d.weekday() for d in per_day.index], index=per_day.index)
    assert per_day[weekday >= 4].mean() > 1.05 * per_day[weekday <= 1].mean()
    assert per_day.std() > 0.02 * spec.rows_per_day


def test_hours_are_quiet_at_night_and_fraud_is_more_nocturnal(world):
    _, txs, _ = world
    legit, fraud = txs[~txs["is_fraud"]], txs[txs["is_fraud"]]
    by_hour = legit["hour"].value_counts(normalize=True)
    assert by_hour.loc[list(NIGHT)].max() < 0.5 * by_hour.loc[[12, 18, 19]].min()
    assert fraud["hour"].isin(NIGHT).mean() > 3 * legit["hour"].isin(NIGHT).mean()


def test_fraud_signals_amount_category_channel_foreign_and_young_accounts(world):
    _, txs, _ = world
    legit, fraud = txs[~txs["is_fraud"]], txs[txs["is_fraud"]]
    risky = ["electronics", "digital_goods", "jewelry", "gambling", "travel"]
    assert fraud["merchant_category"].isin(risky).mean() > 2 * legit["merchant_category"].isin(risky).mean()
    assert fraud["amount"].median() > 1.5 * legit["amount"].median()
    assert (fraud["channel"] == "online").mean() > 1.5 * (legit["channel"] == "online").mean()
    assert fraud["foreign"].mean() > 3 * legit["foreign"].mean()
    young = txs["age_days"] < 60
    assert txs.loc[young, "is_fraud"].mean() > 5 * txs.loc[~young, "is_fraud"].mean()
    # Signals overlap: plenty of fraud is on old accounts and in everyday categories.
    assert (fraud["age_days"] > 365).mean() > 0.1
    assert fraud["merchant_category"].isin(risky).mean() < 0.95


def test_velocity_is_informative_but_not_perfect(world):
    _, txs, _ = world
    legit, fraud = txs[~txs["is_fraud"]], txs[txs["is_fraud"]]
    assert fraud["n_1h"].mean() > 2 * legit["n_1h"].mean()
    assert 0.05 < (legit["n_1h"] > 0).mean() < 0.5
    assert 0.3 < (fraud["n_1h"] > 0).mean() < 0.95


def test_accounts_live_mostly_in_the_us_and_mostly_shop_at_home(world):
    _, txs, book = world
    assert 0.5 < (book["home_country"] == "US").mean() < 0.95
    assert book["home_country"].nunique() >= 8
    legit = txs[~txs["is_fraud"]]
    assert 0.01 < legit["foreign"].mean() < 0.1
    travel = legit["merchant_category"] == "travel"
    assert legit.loc[travel, "foreign"].mean() > 5 * legit.loc[~travel, "foreign"].mean()
