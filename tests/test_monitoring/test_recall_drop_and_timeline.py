"""The recall-drop test of concept_drift, and the simulation's timeline record and plot."""

import math

import numpy as np
import pytest
from PIL import Image

from mlops_core.monitoring.performance import calibration_drift, design_effect, recall_drop
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


def test_the_design_effect_is_the_cluster_size_when_a_card_is_caught_whole_and_one_when_independent():
    rng = np.random.default_rng(5)
    independent = rng.random(3000) < 0.3
    assert design_effect(independent, np.arange(3000)) == pytest.approx(1.0)
    # Independent values in arbitrary groups of three: close to 1 (sampling noise only).
    assert design_effect(independent, np.arange(3000) // 3) < 1.15
    # Three transactions per card, caught or missed together: three times the variance.
    cards = np.repeat(np.arange(1000), 3)
    whole = np.repeat(rng.random(1000) < 0.3, 3)
    assert design_effect(whole, cards) == pytest.approx(3.0, rel=0.01)
    # Card ids as text, in any order: the same answer.
    order = rng.permutation(3000)
    assert design_effect(whole[order], np.char.add("a", cards.astype(str))[order]) == pytest.approx(
        design_effect(whole, cards)
    )
    # Nothing to estimate: one card, or one value everywhere.
    assert design_effect(whole, np.zeros(3000)) == design_effect(np.ones(3000), cards) == 1.0
    with pytest.raises(ValueError, match="length"):
        design_effect(whole, cards[:-1])
    with pytest.raises(ValueError, match="1 NaN"):
        design_effect(np.r_[whole[:-1].astype(float), np.nan], cards)
    # Cards without an id form one cluster, not a crash.
    unknown = np.where(cards < 2, None, cards).astype(object)
    assert design_effect(whole, unknown) == pytest.approx(design_effect(whole, np.where(cards < 2, -1, cards)))


def test_frauds_clustered_by_card_keep_the_recall_tests_false_alarms_at_its_level_only_with_the_design_effect():
    """A stationary world where each compromised card brings 3 frauds that the model catches or misses together
    (per-card recall 0.78). Counted as transactions, the test alarms several times as often as its 1% allows;
    divided by the design effect measured on the recent window's cards, it stays at its level. A drop of the
    size a new fraud pattern brings is still seen."""
    rng = np.random.default_rng(17)
    naive = corrected = 0
    runs = 1500
    for _ in range(runs):
        reference_cards, recent_cards, per_card = 58, 27, 3
        reference_recall = rng.binomial(reference_cards, 0.78) / reference_cards
        caught_cards = rng.random(recent_cards) < 0.78
        decisions = np.repeat(caught_cards, per_card).astype(float)
        cards = np.repeat(np.arange(recent_cards), per_card)
        caught, frauds = int(decisions.sum()), len(decisions)
        naive += recall_drop(caught, frauds, reference_recall, reference_frauds=174)["drop"]
        effect = design_effect(decisions, cards)
        corrected += recall_drop(caught, frauds, reference_recall, reference_frauds=174, design_effect=effect)["drop"]
    assert corrected / runs <= 0.01 and naive / runs > 0.03
    # Recall 0.3 on the same cards, against 0.78: still a drop with the design effect (about 3 here).
    caught_cards = np.arange(27) < 8
    decisions = np.repeat(caught_cards, 3).astype(float)
    effect = design_effect(decisions, np.repeat(np.arange(27), 3))
    assert effect == pytest.approx(3.0, rel=0.05)
    assert recall_drop(24, 81, 0.78, reference_frauds=174, design_effect=effect)["drop"]


def test_the_plain_historys_day_27_is_no_alarm_once_its_cards_are_counted_and_the_drifts_first_alarm_stays():
    """The measured cases (docs/monitoring.md): 51 of 81 recent frauds caught on 32 cards (design effect 1.48)
    against 0.80 on 174 raised the plain history's first false alarm (p = 0.0036); the drift's first alarm on
    seed 11 was 33 of 76 on 33 cards (design effect 3.23) against 0.75 on 183."""
    plain = recall_drop(51, 81, 139 / 174, reference_frauds=174)
    assert plain["drop"] and plain["p_value"] < 0.005
    counted = recall_drop(51, 81, 139 / 174, reference_frauds=174, design_effect=1.48)
    assert not counted["drop"] and 0.01 < counted["p_value"] < 0.05
    assert counted["effective_frauds"] == 55 and counted["design_effect"] == 1.48
    # Both samples shrink: 34 of 55 recent against 94 of 118 at promotion (only the recent one would give 34/55
    # against 139/174, a different p).
    from scipy.stats import fisher_exact

    both = fisher_exact([[34, 21], [94, 24]], alternative="less").pvalue
    recent_only = fisher_exact([[34, 21], [139, 35]], alternative="less").pvalue
    assert counted["p_value"] == pytest.approx(both, rel=1e-12) and abs(recent_only - both) > 1e-3
    drift = recall_drop(33, 76, 137 / 183, reference_frauds=183, design_effect=3.23)
    assert drift["drop"] and drift["p_value"] < 0.01
    with pytest.raises(ValueError, match="design_effect"):
        recall_drop(51, 81, 0.8, design_effect=0.9)


def test_the_calibration_bounds_noise_widens_with_the_square_root_of_the_labels_design_effect():
    rng = np.random.default_rng(3)
    p = rng.uniform(0.0, 0.2, 20000)
    y = (rng.random(20000) < p).astype(float)
    independent = calibration_drift(y, p, reference_ece=0.002)
    clustered = calibration_drift(y, p, reference_ece=0.002, design_effect=4.4)
    assert clustered["noise_quantile"] == pytest.approx(independent["noise_quantile"] * np.sqrt(4.4), rel=1e-12)
    assert clustered["bound"] == pytest.approx(0.002 + clustered["noise_quantile"], rel=1e-12)
    assert clustered["ece"] == independent["ece"] and clustered["design_effect"] == 4.4
    with pytest.raises(ValueError, match="design_effect"):
        calibration_drift(y, p, reference_ece=0.002, design_effect=0.5)


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
