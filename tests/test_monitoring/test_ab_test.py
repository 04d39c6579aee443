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


def _answers(rows):
    import pandas as pd

    return pd.DataFrame(
        rows, columns=["transaction_id", "account_id", "decision", "model_version", "variant", "features", "is_fraud"]
    )


def test_the_arms_are_the_canarys_accounts_and_the_champions_other_accounts_alike_in_segments():
    from mlops_core.serving.routing import SegmentRule, in_canary

    accounts = [f"acct{i:04d}" for i in range(400)]
    canary_acct = next(a for a in accounts if in_canary(a, 0.3))
    champion_acct = next(a for a in accounts if not in_canary(a, 0.3))
    rule = SegmentRule("high_value", "amount_sum_30d", 5000.0)
    rows = [
        ("t1", canary_acct, 1, "6", "canary", '{"amount_sum_30d": 10.0}', 1.0),
        ("t2", canary_acct, 0, "5", "champion", '{"amount_sum_30d": 5000.0}', 0.0),  # kept on the champion: neither arm
        ("t3", champion_acct, 0, "5", "champion", '{"amount_sum_30d": 4999.99}', 1.0),
        ("t4", champion_acct, 1, "5", "champion", '{"amount_sum_30d": 5000.01}', 0.0),  # excluded segment: neither
        (
            "t5",
            canary_acct,
            0,
            "5",
            "champion",
            '{"amount_sum_30d": 1.0}',
            0.0,
        ),  # canary account, champion answer: neither
        ("t6", champion_acct, 0, "4", "champion", "{}", 0.0),  # an older champion: neither
        ("t7", canary_acct, 1, "6", "canary", "{}", float("nan")),  # no label yet: counted, left out
        ("t8", champion_acct, 1, "5", "champion", None, 0.0),
    ]
    arms = ab_test.split_arms(_answers(rows), "5", "6", 0.3, (rule,))
    assert list(arms.canary["transaction_id"]) == ["t1"]
    assert list(arms.champion["transaction_id"]) == ["t3", "t8"]
    assert (arms.excluded_rows, arms.unlabelled_rows) == (2, 1)
    verdict = ab_test.verdict_of(arms, ABRules())
    assert (verdict.canary.rows, verdict.champion.rows, verdict.champion.frauds) == (1, 2, 1)


@pytest.mark.parametrize(
    "verdict, required, promote",
    [
        (ab_test.BETTER, "better", True),
        (ab_test.NOT_WORSE, "better", False),
        (ab_test.NOT_WORSE, "not worse", True),
        (ab_test.BETTER, "not worse", True),
        (ab_test.UNDECIDED, "not worse", False),
        (ab_test.WORSE, "not worse", False),
    ],
)
def test_what_a_verdict_lets_through(verdict, required, promote):
    assert ab_test.meets(verdict, required) is promote


def test_a_large_effect_to_detect_does_not_make_not_worse_lax():
    """The simulation's case: sized for a 100% effect (a quick verdict), a canary catching less fraud (recall 0.5
    against 0.6, cost about 20% higher) must not pass as "not worse"; the margin is the business's 10%."""
    rng = np.random.default_rng(1)  # a draw where the canary's cost is 28% higher and the interval spans 0
    champion, canary = _arms(rng, 4000, 0.02, 0.6, 0.01), _arms(rng, 4000, 0.02, 0.5, 0.01)
    quick = ABRules(min_effect=1.0)
    verdict = ab_verdict(*champion, *canary, quick)
    low, high = verdict.cost_interval
    assert low < 0 < high and verdict.canary.cost_per_transaction > 1.25 * verdict.champion.cost_per_transaction
    assert min(verdict.champion.rows, verdict.canary.rows) >= verdict.required_rows_per_arm
    assert verdict.verdict == ab_test.UNDECIDED, verdict.detail
    # The same numbers with the margin as wide as the effect: the lax rule it replaced.
    lax = ab_verdict(*champion, *canary, ABRules(min_effect=1.0, not_worse_margin=1.0))
    assert lax.verdict == ab_test.NOT_WORSE
