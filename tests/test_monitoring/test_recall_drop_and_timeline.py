"""The recall-drop test of concept_drift, and the simulation's timeline record and plot."""

import math

import numpy as np
import pytest
from PIL import Image

from mlops_core.monitoring.performance import recall_drop
from mlops_core.monitoring.timeline import (
    DayRecord,
    DayScores,
    format_line,
    plot_timeline,
    pooled_auc_pr,
    recall,
    recovery_day,
    summarize,
    write_timeline,
)


def test_a_recall_collapse_is_significant_and_a_small_dip_is_not():
    collapsed = recall_drop(caught=4, frauds=40, reference_recall=0.8)
    assert collapsed["drop"] and collapsed["recall"] == 0.1 and collapsed["p_value"] < 1e-10
    dip = recall_drop(caught=28, frauds=40, reference_recall=0.8)
    assert not dip["drop"] and dip["p_value"] > 0.05


def test_too_few_frauds_never_alarm():
    assert not recall_drop(caught=0, frauds=4, reference_recall=0.9)["drop"]
    nothing = recall_drop(caught=0, frauds=0, reference_recall=0.9)
    assert not nothing["drop"] and math.isnan(nothing["recall"])


def test_false_alarm_rate_at_the_reference_is_below_one_percent():
    rng = np.random.default_rng(3)
    alarms = sum(recall_drop(int(rng.binomial(50, 0.75)), 50, 0.75)["drop"] for _ in range(2000))
    assert alarms / 2000 < 0.01


def test_a_reference_measured_on_few_frauds_is_tested_two_sample_and_keeps_false_alarms_under_one_percent():
    """The reference recall is itself measured on the test split's frauds. Taken as exact (one-sample), a
    stationary world alarms about twice as often as the confidence allows; two-sample it does not."""
    rng = np.random.default_rng(11)
    one_sample = two_sample = 0
    runs = 3000
    for _ in range(runs):
        reference_frauds, recent_frauds = 170, 80
        reference_recall = rng.binomial(reference_frauds, 0.78) / reference_frauds
        caught = int(rng.binomial(recent_frauds, 0.78))
        one_sample += recall_drop(caught, recent_frauds, reference_recall)["drop"]
        two_sample += recall_drop(caught, recent_frauds, reference_recall, reference_frauds=reference_frauds)["drop"]
    assert two_sample / runs < 0.01 < 0.015 < one_sample / runs


def test_the_two_sample_recall_test_is_fishers_exact_and_still_sees_a_collapse():
    from scipy.stats import fisher_exact

    # The plain-history case that used to trigger: 53 of 81 recent frauds caught, 0.787 measured on 174.
    plain = recall_drop(53, 81, 137 / 174, reference_frauds=174)
    expected = fisher_exact([[53, 28], [137, 37]], alternative="less").pvalue
    assert plain["p_value"] == pytest.approx(expected, rel=1e-12) and 0.01 < plain["p_value"] < 0.05
    assert not plain["drop"] and plain["test"] == "fisher_two_sample" and plain["reference_frauds"] == 174
    one_sample = recall_drop(53, 81, 137 / 174)
    assert one_sample["drop"] and one_sample["test"] == "binomial_one_sample" and one_sample["p_value"] < 0.005
    # A new fraud pattern the champion misses: recall 0.15 on 40 frauds is a drop either way.
    collapsed = recall_drop(6, 40, 0.8, reference_frauds=120)
    assert collapsed["drop"] and collapsed["p_value"] < 1e-8


@pytest.mark.parametrize("caught, frauds", [(-1, 3), (4, 3)])
def test_impossible_counts_are_refused(caught, frauds):
    with pytest.raises(ValueError, match="caught"):
        recall_drop(caught, frauds, 0.5)


def _day(rng, n=500, signal=3.0):
    y = rng.random(n) < 0.05
    served = 1 / (1 + np.exp(-(signal * y + rng.normal(size=n) - 3)))
    frozen = rng.random(n)
    return DayScores(y, served, served > 0.5, frozen, frozen > 0.5)


def test_pooled_auc_pr_separates_a_good_model_from_noise_and_recall_counts_frauds():
    rng = np.random.default_rng(0)
    days = [_day(rng) for _ in range(7)]
    assert pooled_auc_pr(days, "served") > 0.6 > 0.2 > pooled_auc_pr(days, "frozen")
    # The oracle did not score these days: nothing to pool, not a zero.
    assert math.isnan(pooled_auc_pr(days, "oracle"))
    with pytest.raises(ValueError, match="unknown model"):
        pooled_auc_pr(days, "champion")
    assert recall(np.array([1, 1, 0, 1]), np.array([1, 0, 1, 1])) == pytest.approx(2 / 3)
    assert math.isnan(recall(np.array([0, 0]), np.array([1, 0])))


def test_timeline_files_and_plot(tmp_path):
    records = [
        DayRecord(
            f"2026-01-{i + 1:02d}",
            i,
            i >= 3,
            "2" if i >= 5 else "1",
            2000,
            30,
            0.8,
            0.8 if i < 3 else 0.2,
            0.7,
            0.7 if i < 3 else 0.3,
            "ok",
            0.1,
            0.02,
            0.8,
            triggers=["performance_sensor: recall dropped"] if i == 4 else [],
            retraining="retraining abc succeeded" if i == 4 else "",
            promoted="2" if i == 4 else None,
            seconds=12.0,
            landing_to_champion_seconds=55.0 if i == 4 else None,
        )
        for i in range(8)
    ]
    line = format_line(records[4])
    assert "PROMOTED v2 (55 s from landing)" in line and "trigger: performance_sensor" in line
    as_json, as_csv = write_timeline(records, tmp_path)
    assert as_csv.read_text().count("\n") == 9 and '"promoted": "2"' in as_json.read_text()
    png = plot_timeline(records, tmp_path / "plot.png", "test")
    with Image.open(png) as image:
        assert image.size[0] > 800 and image.size[1] > 500


def _record(index, served7, oracle7, frozen7=0.3, daily=(0.4, 0.3, 0.5), **kw):
    return DayRecord(
        day=f"d{index}",
        index=index,
        affected=index >= 30,
        champion="1",
        transactions=100,
        frauds=2,
        served_recall=0.5,
        frozen_recall=0.5,
        served_auc_pr_7d=served7,
        frozen_auc_pr_7d=frozen7,
        data_layer="ok",
        drift_share=0.1,
        prediction_psi=0.01,
        recent_recall=0.5,
        oracle_auc_pr_7d=oracle7,
        served_auc_pr=daily[0],
        frozen_auc_pr=daily[1],
        oracle_auc_pr=daily[2],
        **kw,
    )


def test_the_summary_counts_only_the_window_from_the_drift_and_recovery_follows_a_loss():
    records = [
        # Before the window: a promotion and a gate stop that must not be counted.
        _record(29, 0.6, 0.6, promoted="2", retraining="retraining aaaa stopped by gate_fairness_age_band"),
        _record(30, 0.30, 0.31),  # both blind to the new pattern: within 10%, not a recovery
        _record(31, 0.30, 0.40, retraining="retraining bbbb stopped by gate_no_regression_vs_champion"),
        _record(32, 0.30, 0.50, retraining="retraining cccc stopped by check_canary_score_shift"),
        _record(33, 0.44, 0.50),  # 0.88 of the oracle: still out
        _record(34, 0.451, 0.50, promoted="3", retraining="retraining dddd succeeded"),  # 0.902: back
        *[_record(i, 0.5, 0.52, frozen7=0.2) for i in range(35, 41)],
        _record(41, 0.5, 0.52, frozen7=0.49),  # the first 7-day window wholly after the promotion
        _record(42, 0.5, 0.52, frozen7=0.55),
    ]
    summary = summarize(records, first_day=30, window=13)
    assert summary.recovered_on == 34 and summary.days_to_recover == 4
    assert summary.first_promotion == 34 and summary.promoted == 1
    assert summary.triggers == 3
    assert summary.stopped_by_gate == {"gate_no_regression_vs_champion": 1}
    assert summary.rolled_back == 1
    # Only the windows from day 41 on hold no day served before the promotion; day 42 is the worst.
    assert summary.worst_7d_vs_frozen == pytest.approx(0.5 - 0.55)
    assert summary.mean_auc_pr == pytest.approx({"served": 0.4, "frozen": 0.3, "oracle": 0.5})
    assert summary.gap_to_oracle == pytest.approx(0.2)
    assert summary.last_day == 42
    assert any("gap to the oracle 20.0%" in line for line in summary.lines())


def test_recovery_is_the_first_day_the_platform_stays_within_the_band_and_none_when_it_ends_outside():
    assert recovery_day([_record(30, 0.5, 0.52), _record(31, 0.5, 0.5)]) == 30
    assert recovery_day([_record(30, 0.5, 0.52), _record(31, 0.3, 0.5), _record(32, 0.44, 0.5)]) is None
    # A day the oracle did not score says nothing either way.
    assert recovery_day([_record(30, 0.3, None), _record(31, 0.2, 0.5), _record(32, 0.46, 0.5)]) == 32
    # Both blind after the drift: the windows meet near zero (day 33), then the oracle learns first and the
    # platform falls out again (day 34, 0.0899 is 0.1% short of 90% of 0.1); it recovers on day 35 for good.
    blind_then_learning = [
        _record(31, 0.2, 0.3),
        _record(32, 0.05, 0.1),
        _record(33, 0.01, 0.01),
        _record(34, 0.0899, 0.1),
        _record(35, 0.0901, 0.1),
        _record(36, 0.3, 0.2),
    ]
    assert recovery_day(blind_then_learning) == 35
    # Out on the last day: not recovered, however long it was in the band before.
    assert recovery_day([*blind_then_learning, _record(37, 0.2, 0.3)]) is None
    with pytest.raises(ValueError, match="no simulated day"):
        summarize([_record(3, 0.5, 0.5)], first_day=30)


def test_the_checks_that_stopped_a_run_are_read_from_its_outcome_with_their_measurements():
    outcome = (
        "retraining 5b99dfc3 stopped by gate_minimum_quality (AUC-PR 0.0083 (min 0.2), recall 0.0000 (min 0.3)), "
        "gate_calibration (ECE 0.2 (max 0.1)); retraining 47b10108 stopped by canary_healthy (flag rate 0.061 "
        "outside [0.000, 0.039] around the champion's 0.010); retraining aaaa0000 succeeded"
    )
    summary = summarize([_record(30, 0.3, 0.3, retraining=outcome)], first_day=30)
    assert summary.stopped_by_gate == {"gate_minimum_quality": 1, "gate_calibration": 1}
    assert summary.rolled_back == 1 and summary.triggers == 3


def test_a_canary_rolled_back_on_its_ab_verdict_counts_as_rolled_back_not_as_a_trigger():
    outcome = "retraining 11111111 succeeded; canary rollback 22222222 succeeded; promote 33333333 succeeded"
    summary = summarize([_record(30, 0.3, 0.3, retraining=outcome)], first_day=30)
    assert (summary.rolled_back, summary.triggers, summary.stopped_by_gate) == (1, 1, {})
