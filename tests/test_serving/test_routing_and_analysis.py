"""Tier 1: canary buckets, the deployment snapshot, and the rollout analysis rules."""

import zlib

import numpy as np
import pandas as pd
import pytest

from mlops_core.monitoring.psi import psi_on_edges as psi
from mlops_core.serving.analysis import CanaryRules, OfflineExpectation, canary_window, shadow_agreement
from mlops_core.serving.routing import BUCKETS, Deployment, account_bucket, in_canary


def test_buckets_are_stable_and_spread():
    # crc32, not hash(): the same bucket in every process (a salted hash would move accounts on restart).
    assert account_bucket("a0001552") == zlib.crc32(b"a0001552") % BUCKETS
    buckets = np.array([account_bucket(f"acct{i}") for i in range(20000)])
    counts = np.bincount(buckets * 10 // BUCKETS, minlength=10)
    assert counts.min() > 1700 and counts.max() < 2300


@pytest.mark.parametrize("share", [0.0, 0.01, 0.1, 0.5, 1.0])
def test_canary_share_is_honoured(share):
    accounts = [f"acct{i}" for i in range(20000)]
    observed = np.mean([in_canary(a, share) for a in accounts])
    assert observed == pytest.approx(share, abs=0.01)


def test_a_larger_share_keeps_every_account_already_in_canary():
    accounts = [f"acct{i}" for i in range(5000)]
    small = {a for a in accounts if in_canary(a, 0.05)}
    large = {a for a in accounts if in_canary(a, 0.25)}
    assert small <= large


def test_deployment_refuses_a_share_without_a_canary():
    with pytest.raises(ValueError, match="canary model"):
        Deployment(champion=None, canary_share=0.2)
    with pytest.raises(ValueError, match="within"):
        Deployment(champion=None, canary_share=1.5)


def test_psi_is_small_without_shift_and_large_with_it():
    rng = np.random.default_rng(0)
    base = rng.beta(1, 30, 5000)
    assert psi(base, rng.beta(1, 30, 5000)) < 0.02
    assert psi(base, rng.beta(5, 5, 5000)) > 1.0


def _log(rng, n, variant, score_a, score_b, flag_threshold, latency=1.0, errors=0):
    scores = rng.beta(score_a, score_b, n)
    frame = pd.DataFrame(
        {
            "request_id": [f"{variant}{i}" for i in range(n)],
            "variant": variant,
            "served": 1,
            "status": "ok",
            "score": scores,
            "decision": (scores >= flag_threshold).astype(int),
            "latency_ms": latency,
        }
    )
    if errors:
        frame.loc[: errors - 1, ["status", "served", "score", "decision"]] = ["error", 0, None, None]
    return frame


def test_a_healthy_canary_breaks_no_rule():
    rng = np.random.default_rng(1)
    frame = pd.concat([_log(rng, 900, "champion", 1, 30, 0.1), _log(rng, 100, "canary", 1, 30, 0.1)])
    window = canary_window(frame, CanaryRules())
    assert window.judged and window.violations == ()


def test_a_shifted_canary_breaks_the_score_and_flag_rules():
    rng = np.random.default_rng(2)
    frame = pd.concat([_log(rng, 900, "champion", 1, 30, 0.1), _log(rng, 100, "canary", 5, 5, 0.1)])
    violations = canary_window(frame, CanaryRules()).violations
    assert any("PSI" in v for v in violations) and any("flag rate" in v for v in violations)


def test_a_failing_or_slow_canary_breaks_its_rules():
    rng = np.random.default_rng(3)
    champion = _log(rng, 900, "champion", 1, 30, 0.1)
    failing = canary_window(pd.concat([champion, _log(rng, 100, "canary", 1, 30, 0.1, errors=5)]), CanaryRules())
    assert [v for v in failing.violations if v.startswith("error rate 0.050")]
    slow = canary_window(pd.concat([champion, _log(rng, 100, "canary", 1, 30, 0.1, latency=80.0)]), CanaryRules())
    assert [v for v in slow.violations if v.startswith("p99 latency 80.0")]


def test_too_few_canary_requests_are_not_judged():
    rng = np.random.default_rng(4)
    frame = pd.concat([_log(rng, 900, "champion", 1, 30, 0.1), _log(rng, 49, "canary", 5, 5, 0.1)])
    window = canary_window(frame, CanaryRules(min_requests=50))
    assert not window.judged and window.violations == ()


def test_shadow_agreement_pairs_requests():
    served = pd.DataFrame(
        {
            "request_id": ["a", "b", "c", "d"],
            "variant": "champion",
            "served": 1,
            "status": "ok",
            "score": [0.1, 0.2, 0.8, 0.9],
            "decision": [0, 0, 1, 1],
        }
    )
    shadow = pd.DataFrame(
        {
            "request_id": ["a", "b", "c", "d"],
            "variant": "shadow",
            "served": 0,
            "status": "ok",
            "score": [0.1, 0.6, 0.7, 0.95],
            "decision": [0, 1, 1, 1],
        }
    )
    agreement = shadow_agreement(pd.concat([served, shadow]))
    assert agreement.requests == 4
    assert agreement.decision_agreement == pytest.approx(0.75)
    assert agreement.mean_abs_score_difference == pytest.approx((0 + 0.4 + 0.1 + 0.05) / 4)
    assert agreement.score_rank_correlation == pytest.approx(1.0)


def test_psi_sees_a_shift_away_from_a_degenerate_champion():
    rng = np.random.default_rng(5)
    assert psi(np.zeros(1000), rng.uniform(0.2, 0.4, 200)) > 1.0
    assert psi(np.zeros(1000), np.zeros(200)) == 0.0


def test_canary_score_shift_ignores_differences_inside_one_probability_bin():
    rng = np.random.default_rng(6)
    champion = _log(rng, 900, "champion", 1, 30, 0.5)
    champion["score"] = 0.0021
    canary = _log(rng, 100, "canary", 1, 30, 0.5)
    canary["score"] = 0.0024  # another sound model: a hair apart, same bin
    assert canary_window(pd.concat([champion, canary]), CanaryRules()).score_psi < 0.01
    canary["score"] = 0.28
    assert canary_window(pd.concat([champion, canary]), CanaryRules()).score_psi > 1.0


def _expectation(rng, score_a, score_b, threshold, n=3000):
    return OfflineExpectation.from_reference({"score": list(rng.beta(score_a, score_b, n)), "threshold": threshold})


def test_a_canary_that_learnt_what_a_blind_champion_misses_passes_when_it_behaves_as_it_did_offline():
    # After a concept drift the champion flags ~0.5%; the candidate flags ~9%, as it did on its own test split.
    rng = np.random.default_rng(7)
    champion = _log(rng, 900, "champion", 1, 200, 0.03)
    canary = _log(rng, 400, "canary", 1, 12, 0.2)
    frame = pd.concat([champion, canary])
    alone = canary_window(frame, CanaryRules())
    assert any("flag rate" in v for v in alone.violations) and any("PSI" in v for v in alone.violations)
    window = canary_window(frame, CanaryRules(), _expectation(rng, 1, 12, 0.2))
    assert window.violations == (), window.violations
    assert window.offline_flag_rate == pytest.approx(window.canary_flag_rate, abs=0.03)
    assert window.score_psi_vs_offline < 0.1


def test_a_canary_unlike_both_the_champion_and_its_test_split_still_fails():
    # A serving skew: offline it flagged ~9%, live it flags almost everything.
    rng = np.random.default_rng(8)
    frame = pd.concat([_log(rng, 900, "champion", 1, 200, 0.03), _log(rng, 400, "canary", 5, 5, 0.2)])
    violations = canary_window(frame, CanaryRules(), _expectation(rng, 1, 12, 0.2)).violations
    flag = [v for v in violations if v.startswith("flag rate")]
    assert flag and "around its own test split's 0.0" in flag[0] and "around the champion's" in flag[0]
    assert any("vs its own test split" in v for v in violations)


def test_a_flag_rate_just_outside_the_offline_band_fails_and_just_inside_passes():
    # The band is rate x/÷ ratio plus/minus the floor: offline 0.05 -> [0.0067, 0.16] with the defaults.
    rules = CanaryRules()
    expected = OfflineExpectation(flag_rate=0.05, shares=(1.0,) + (0.0,) * 11, rows=1000)
    champion = pd.DataFrame(
        {
            "request_id": [f"c{i}" for i in range(1000)],
            "variant": "champion",
            "served": 1,
            "status": "ok",
            "score": 0.0005,
            "decision": 0,
            "latency_ms": 1.0,
        }
    )

    def canary(flagged: int, n: int = 1000):
        return pd.DataFrame(
            {
                "request_id": [f"k{i}" for i in range(n)],
                "variant": "canary",
                "served": 1,
                "status": "ok",
                "score": 0.0005,
                "decision": [1] * flagged + [0] * (n - flagged),
                "latency_ms": 1.0,
            }
        )

    assert not [v for v in canary_window(pd.concat([champion, canary(160)]), rules, expected).violations]
    assert [
        v for v in canary_window(pd.concat([champion, canary(162)]), rules, expected).violations if "flag rate" in v
    ]


def test_the_offline_expectation_reads_the_evaluations_reference_and_survives_a_cursor():
    expected = OfflineExpectation.from_reference({"score": [0.0, 0.3, 0.6, 0.95], "threshold": 0.5})
    assert expected.flag_rate == 0.5 and expected.rows == 4 and sum(expected.shares) == pytest.approx(1.0)
    assert OfflineExpectation.from_dict(expected.as_dict()) == expected
    assert OfflineExpectation.from_reference({"score": [], "threshold": 0.5}) is None
    assert OfflineExpectation.from_reference({"score": [0.1]}) is None
