"""The A/B verdict's statistics against known answers, and its verdicts on arms that differ or not (tier 1)."""

import numpy as np
import pytest

from mlops_core.monitoring import ab_test
from mlops_core.monitoring.ab_test import ABRules, ab_verdict, arm, required_rows


def test_an_arm_counts_catches_misses_and_false_alarms_at_the_business_costs():
    decisions = np.array([1, 1, 0, 0, 1, 0])
    labels = np.array([1, 0, 1, 0, 0, 0])
    a = arm(decisions, labels, ABRules())
    assert (a.rows, a.frauds, a.flagged, a.caught) == (6, 2, 3, 1)
    assert a.recall == 0.5 and a.precision == pytest.approx(1 / 3)
    assert a.cost_per_transaction == pytest.approx((20 + 1 + 1) / 6)  # one miss, two false alarms


def test_the_recall_interval_is_newcombes_on_his_own_example():
    # Newcombe (1998), Statistics in Medicine 17:873, example (a): 56/70 vs 48/80, hybrid score interval.
    champion = ab_test.Arm(80, 80, 48, 48, 0.6, 1.0, 0.0, 0.0)
    canary = ab_test.Arm(70, 70, 56, 56, 0.8, 1.0, 0.0, 0.0)
    difference, (low, high) = ab_test._newcombe(champion, canary, 1.959964)
    assert difference == pytest.approx(0.2)
    assert (round(low, 4), round(high, 4)) == (0.0524, 0.3339)


def test_the_sample_size_is_the_two_sample_formula():
    # sigma^2 = 1, a 10% change of a cost of 1: 2 (1.96 + 0.8416)^2 / 0.01 = 1569.8 -> 1570 rows per arm.
    assert required_rows(1.0, 1.0, ABRules()) == 1570
    assert required_rows(1.0, 1.0, ABRules(min_effect=0.2)) == 393
    assert required_rows(float("nan"), 1.0, ABRules()) == 0


def _arms(rng, n, fraud_rate, recall, false_alarm_rate):
    labels = (rng.random(n) < fraud_rate).astype(int)
    decisions = np.where(labels == 1, rng.random(n) < recall, rng.random(n) < false_alarm_rate).astype(int)
    return decisions, labels


@pytest.mark.parametrize(
    "canary_recall,expected",
    [(0.9, ab_test.BETTER), (0.3, ab_test.WORSE), (0.6, ab_test.NOT_WORSE)],
    ids=["catches more", "catches less", "the same"],
)
def test_verdicts_on_large_arms(canary_recall, expected):
    rng = np.random.default_rng(3)
    champion = _arms(rng, 200_000, 0.02, 0.6, 0.01)
    canary = _arms(rng, 200_000, 0.02, canary_recall, 0.01)
    result = ab_verdict(*champion, *canary)
    assert result.verdict == expected, result.detail
    assert min(result.champion.rows, result.canary.rows) >= result.required_rows_per_arm


def test_a_clear_difference_on_too_few_rows_is_not_yet_decidable():
    rng = np.random.default_rng(4)
    big = ab_verdict(*_arms(rng, 200_000, 0.02, 0.6, 0.01), *_arms(rng, 200_000, 0.02, 0.9, 0.01))
    needed = big.required_rows_per_arm
    small = ab_verdict(*_arms(rng, needed - 1, 0.02, 0.6, 0.01), *_arms(rng, needed - 1, 0.02, 0.95, 0.01))
    # The small sample's own champion variance sets what it needs: more than it holds.
    assert small.verdict == ab_test.UNDECIDED and small.required_rows_per_arm > needed - 1
    assert f"{needed - 1} labelled rows in the smaller arm, {small.required_rows_per_arm} needed" in small.detail
    assert ab_verdict(np.array([]), np.array([]), np.array([1]), np.array([1])).verdict == ab_test.UNDECIDED
