"""The drift share that asks for a retraining leaves out calendar features and windows still filling up:
an ordinary day against a multi-week reference is not drift, a real shift on the same day still is."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from mlops_core.features.spec import numeric_features
from mlops_core.monitoring.drift import compute_drift
from mlops_core.monitoring.drift_scope import CALENDAR_REASON, left_out_of_share, warm_day, window_seconds

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
