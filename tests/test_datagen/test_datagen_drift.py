"""Covariate and concept drift change what they should, from the drift day on only."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from mlops_core.datagen.generator import DemoSpec, simulate

START = dt.date(2024, 3, 1)
DRIFT_DAY = 6
EVERYDAY = ["grocery", "gas_transport", "restaurants"]


def truth(spec: DemoSpec) -> pd.DataFrame:
    frames = []
    for day in simulate(spec):
        frame = day.clean_transactions.to_pandas()
        frame["is_fraud"] = day.is_fraud
        frame["after"] = day.index >= spec.first_affected_day
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def baseline():
    return truth(DemoSpec(START, days=12, rows_per_day=1500, drift_day=DRIFT_DAY))


def test_covariate_drift_files_equal_baseline_before_the_drift_day(make_landing):
    days = DemoSpec(START, days=4, rows_per_day=200, drift_day=2).dates
    _, base = make_landing(DemoSpec(START, days=4, rows_per_day=200, drift_day=2))
    _, drift = make_landing(DemoSpec(START, days=4, rows_per_day=200, drift_day=2, scenario="covariate_drift"))
    for index, day in enumerate(days):
        landed = base.partition("transactions", day).path.read_bytes()
        assert (landed == drift.partition("transactions", day).path.read_bytes()) == (index < 2), day


def test_covariate_drift_shifts_amounts_mix_and_channels_after_the_drift_day(baseline):
    drifted = truth(DemoSpec(START, days=12, rows_per_day=1500, drift_day=DRIFT_DAY, scenario="covariate_drift"))
    before, after = ~drifted["after"], drifted["after"]
    pd.testing.assert_frame_equal(drifted[before], baseline[before])
    legit, base_legit = drifted[~drifted["is_fraud"] & after], baseline[~baseline["is_fraud"] & after]
    assert legit["amount"].median() > 1.25 * base_legit["amount"].median()
    assert (legit["channel"] == "online").mean() > (base_legit["channel"] == "online").mean() + 0.1
    travel_tech = ["travel", "electronics"]
    share = legit["merchant_category"].isin(travel_tech).mean()
    assert share > 1.5 * base_legit["merchant_category"].isin(travel_tech).mean()
    assert (legit["country"] != "US").mean() > (base_legit["country"] != "US").mean()
    # The fraud mechanism is unchanged: same rate and the same category mix.
    fraud, base_fraud = drifted[drifted["is_fraud"] & after], baseline[baseline["is_fraud"] & after]
    assert 0.005 <= drifted.loc[after, "is_fraud"].mean() <= 0.02
    everyday, base_everyday = fraud["merchant_category"].isin(EVERYDAY), base_fraud["merchant_category"].isin(EVERYDAY)
    assert abs(everyday.mean() - base_everyday.mean()) < 0.1


def test_concept_drift_turns_fraud_into_small_everyday_daytime_in_store_purchases(baseline):
    drifted = truth(DemoSpec(START, days=12, rows_per_day=1500, drift_day=DRIFT_DAY, scenario="concept_drift"))
    before, after = ~drifted["after"], drifted["after"]
    pd.testing.assert_frame_equal(drifted[before], baseline[before])
    old = drifted[drifted["is_fraud"] & before]
    new = drifted[drifted["is_fraud"] & after]
    assert old["merchant_category"].isin(EVERYDAY).mean() < 0.25
    assert new["merchant_category"].isin(EVERYDAY).mean() > 0.8
    assert old["amount"].median() > 50
    assert new["amount"].median() < 15
    assert (new["channel"] == "in_store").mean() > 0.7 > (old["channel"] == "in_store").mean()
    night = lambda frame: frame["event_timestamp"].dt.hour.isin(range(6)).mean()  # noqa: E731
    assert night(new) < 0.05 < night(old)
    assert 0.005 <= drifted.loc[after, "is_fraud"].mean() <= 0.02
    # Legitimate spending does not change.
    legit_after = drifted[~drifted["is_fraud"] & after]["amount"].median()
    base_after = baseline[~baseline["is_fraud"] & baseline["after"]]["amount"].median()
    assert legit_after == pytest.approx(base_after, rel=0.1)
