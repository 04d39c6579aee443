"""The drift share that asks for a retraining leaves out calendar features and windows still filling up:
an ordinary day against a multi-week reference is not drift, a real shift on the same day still is."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from mlops_core.features.spec import numeric_features
from mlops_core.monitoring.drift import compute_drift
from mlops_core.monitoring.drift_scope import (
    CALENDAR_REASON,
    barely_used,
    importance_by_feature,
    left_out_of_share,
    warm_day,
    window_seconds,
)

FIRST = dt.datetime(2026, 1, 1, 10, 0)


def _day(rng, day: dt.date, rows: int, amount_scale: float = 1.0) -> pd.DataFrame:
    seconds = rng.integers(0, 86400, rows)
    stamps = pd.Timestamp(day) + pd.to_timedelta(seconds, unit="s")
    return pd.DataFrame(
        {
            "amount_usd": rng.lognormal(3.5, 1.0, rows) * amount_scale,
            "hour_of_day": np.asarray(stamps.hour),
            "day_of_week": np.asarray(stamps.dayofweek),
            "is_weekend": (np.asarray(stamps.dayofweek) >= 5).astype(int),
        }
    )


@pytest.fixture(scope="module")
def four_weeks():
    rng = np.random.default_rng(11)
    days = [dt.date(2026, 3, 2) + dt.timedelta(days=i) for i in range(28)]
    return pd.concat([_day(rng, d, 500) for d in days], ignore_index=True)


def _scoped(day: dt.date, columns) -> dict[str, str]:
    return {k: v for k, v in left_out_of_share(day, FIRST).items() if k in columns}


def test_an_ordinary_sunday_against_four_weeks_is_not_drift_but_a_real_shift_on_it_is(four_weeks):
    sunday = dt.date(2026, 4, 5)
    assert sunday.weekday() == 6
    current = _day(np.random.default_rng(12), sunday, 2000)
    columns = list(current.columns)
    # Evidently's share (nothing left out): the weekday alone makes half the features drift, a false alarm.
    plain = compute_drift(four_weeks, current, columns, [])
    assert set(plain.drifted_features) == {"day_of_week", "is_weekend"} and plain.dataset_drift
    scoped = compute_drift(four_weeks, current, columns, [], left_out=_scoped(sunday, columns))
    assert scoped.drifted_features == [] and scoped.share_drifted == 0.0 and not scoped.dataset_drift
    # Still compared and shown, with the reason, and the statistics are the same as Evidently's.
    assert scoped.as_frame().equals(plain.as_frame())
    assert f"- day_of_week (drifted): {CALENDAR_REASON}" in scoped.markdown()
    assert "0 of 2 counted features drifted" in scoped.markdown()
    # The same Sunday with amounts 1.5x larger: the counted share sees it (1 of 2, the default 50%).
    shifted = _day(np.random.default_rng(12), sunday, 2000, amount_scale=1.5)
    report = compute_drift(four_weeks, shifted, columns, [], left_out=_scoped(sunday, columns))
    assert report.drifted_features == ["amount_usd"] and report.dataset_drift


def test_a_window_counts_from_the_first_day_it_lies_wholly_after_the_first_transaction():
    # The first transaction at 10:00: a 30-day window is full at 10:00 thirty days later, so the day after.
    assert warm_day(FIRST, 30 * 86400) == dt.date(2026, 2, 1)
    assert warm_day(dt.datetime(2026, 1, 1), 30 * 86400) == dt.date(2026, 1, 31)  # at midnight: that day
    assert warm_day(FIRST, 3600) == dt.date(2026, 1, 2)
    on_31st = left_out_of_share(dt.date(2026, 1, 31), FIRST)
    on_1st = left_out_of_share(dt.date(2026, 2, 1), FIRST)
    thirty_day = {name for name, seconds in window_seconds().items() if seconds == 30 * 86400}
    assert {"txn_count_30d", "amount_to_mean_30d", "seconds_since_last_txn"} <= thirty_day <= set(on_31st)
    assert "counted from 2026-02-01" in on_31st["txn_count_30d"]
    assert set(on_1st) == {"day_of_week", "is_weekend"}
    assert "txn_count_7d" not in on_31st and "txn_count_7d" in left_out_of_share(dt.date(2026, 1, 8), FIRST)
    # Every listed name is a feature the drift compares; nothing is warm on an empty warehouse.
    assert set(left_out_of_share(dt.date(2026, 1, 2), None)) <= set(numeric_features())


def test_left_out_must_name_compared_features(four_weeks):
    with pytest.raises(ValueError, match=r"not compared: \['txn_count_30dd'\]"):
        compute_drift(four_weeks, four_weeks, ["amount_usd"], [], left_out={"txn_count_30dd": "typo"})


def test_one_hot_importance_is_summed_to_its_feature_and_shared_out():
    shares = importance_by_feature(
        {"merchant_category=grocery": 0.2, "merchant_category=unknown": 0.1, "amount_usd": 0.6, "hour_of_day": 0.1}
    )
    assert shares == pytest.approx({"merchant_category": 0.3, "amount_usd": 0.6, "hour_of_day": 0.1})
    assert importance_by_feature({}) == {}
    assert importance_by_feature({"a": 0.0}) == {}


def test_only_features_under_half_an_even_share_of_the_champions_importance_are_left_out():
    """Four features: an even share is 25%, the floor 12.5%. 12.4% is out, 12.6% counts, a feature the
    model never used (absent from its importance) is out, and a one-hot feature counts by its sum."""
    features = ["amount_usd", "hour_of_day", "merchant_category", "txn_count_1h"]
    importance = {
        "amount_usd": 0.624,
        "hour_of_day": 0.124,
        "merchant_category=grocery": 0.07,
        "merchant_category=travel": 0.056,
        "merchant_category=unknown": 0.0,
        "day_of_week": 0.126,
    }
    out = barely_used(importance, features, "the champion (version 3)")
    assert sorted(out) == ["hour_of_day", "txn_count_1h"]
    assert "12.4% of its importance, under 12.5%" in out["hour_of_day"]
    assert "the champion (version 3)" in out["txn_count_1h"] and "0.0%" in out["txn_count_1h"]
    # No importance known (no champion, or one that logged none): every feature counts.
    assert barely_used({}, features, "the champion") == {}


def test_a_shift_only_in_features_the_champion_barely_uses_is_not_drift():
    """Half the features shift, but the champion leans on the other half: the share counts only those."""
    rng = np.random.default_rng(3)
    names = [f"f{i}" for i in range(4)]
    reference = pd.DataFrame({n: rng.normal(size=5000) for n in names})
    current = pd.DataFrame({n: rng.normal(loc=2.0 if n in ("f2", "f3") else 0.0, size=2000) for n in names})
    left_out = barely_used({"f0": 0.5, "f1": 0.45, "f2": 0.03, "f3": 0.02}, names, "the champion")
    report = compute_drift(reference, current, names, [], drift_share=0.5, left_out=left_out)
    assert sorted(dict(report.left_out)) == ["f2", "f3"]
    assert report.share_drifted == 0.0 and not report.dataset_drift
    everything = compute_drift(reference, current, names, [], drift_share=0.5)
    assert everything.share_drifted == 0.5 and everything.dataset_drift
