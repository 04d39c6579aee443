"""The A/B test bookkeeping on a real DuckDB file: start once, supersede, verdicts, the end a sensor acts on (tier 1)."""

import datetime as dt

import duckdb
import pytest

from mlops_core import ab_tests

T0 = dt.datetime(2026, 7, 1, 9, 0, tzinfo=dt.UTC)
DAY = dt.date(2026, 7, 2)
RULES = {"cost_of_miss": 20.0, "cost_of_false_alarm": 1.0, "min_effect": 0.1, "confidence": 0.95, "power": 0.8}
MODEL = "fraud_detector"


@pytest.fixture
def con(tmp_path):
    with duckdb.connect(str(tmp_path / "w.duckdb")) as connection:
        yield connection


def _start(con, version="5", champion="4", now=T0, required="not worse", share=0.25, max_days=28):
    excluded = [{"name": "high_value", "feature": "amount_sum_30d", "at_least": 5000.0}]
    return ab_tests.start(con, MODEL, version, champion, required, share, excluded, RULES, DAY, max_days, now)


def test_a_test_starts_once_and_a_rerun_of_the_rollout_does_not_restart_it(con):
    first = _start(con)
    again = _start(con, now=T0 + dt.timedelta(hours=5))
    assert first == again and first.status == ab_tests.RUNNING
    assert (first.started_on, first.deadline) == (DAY, DAY + dt.timedelta(days=28))
    assert first.excluded[0]["feature"] == "amount_sum_30d" and first.rules == RULES and first.canary_share == 0.25
    assert [t.version for t in ab_tests.running(con, MODEL)] == ["5"]


def test_a_new_canary_supersedes_the_running_test_and_against_a_new_champion_a_version_is_tested_anew(con):
    _start(con, version="5")
    _start(con, version="6", now=T0 + dt.timedelta(hours=1))
    assert ab_tests.latest(con, MODEL, "5").status == ab_tests.SUPERSEDED
    assert [t.version for t in ab_tests.running(con, MODEL)] == ["6"]
    renewed = _start(con, version="6", champion="5", now=T0 + dt.timedelta(hours=2))
    assert renewed.champion_version == "5" and ab_tests.latest(con, MODEL, "6").status == ab_tests.RUNNING
    assert len(ab_tests.running(con, MODEL)) == 1


def test_bad_starts_are_refused_with_what_was_given(con):
    with pytest.raises(ValueError, match="'sure'"):
        _start(con, required="sure")
    with pytest.raises(ValueError, match="canary share"):
        _start(con, share=0.0)
    assert ab_tests.running(con, MODEL) == []


def test_verdicts_are_recorded_and_only_ended_tests_reach_the_sensor_once(con):
    test = _start(con)
    still = ab_tests.record_verdict(con, test, {"verdict": "not yet decidable"}, DAY, ab_tests.RUNNING, "waiting", T0)
    assert still.status == ab_tests.RUNNING and still.ended_at is None and still.verdict_day == DAY
    assert ab_tests.ended_since(con, MODEL, None) == []
    ended_at = T0 + dt.timedelta(days=9)
    failed = ab_tests.record_verdict(
        con, still, {"verdict": "worse"}, DAY + dt.timedelta(days=9), ab_tests.FAILED, "A/B verdict worse", ended_at
    )
    assert failed.status == ab_tests.FAILED and failed.verdict == {"verdict": "worse"}
    (seen,) = ab_tests.ended_since(con, MODEL, None)
    assert seen.version == "5" and seen.reason == "A/B verdict worse"
    # The cursor is the ended_at of the last test acted on: a microsecond before it still sees it, at it does not.
    assert len(ab_tests.ended_since(con, MODEL, seen.ended_at - dt.timedelta(microseconds=1))) == 1
    assert ab_tests.ended_since(con, MODEL, seen.ended_at) == []
    # An ended test takes no further verdict.
    ab_tests.record_verdict(con, failed, {"verdict": "better"}, DAY, ab_tests.PASSED, "late", T0)
    assert ab_tests.latest(con, MODEL, "5").status == ab_tests.FAILED


def test_a_promoted_test_is_used_once(con):
    test = ab_tests.record_verdict(con, _start(con), {"verdict": "better"}, DAY, ab_tests.PASSED, "better", T0)
    ab_tests.end(con, test, ab_tests.PROMOTED, "better", T0 + dt.timedelta(hours=1))
    assert ab_tests.ended_since(con, MODEL, None) == []  # nothing left to act on
    again = _start(con, now=T0 + dt.timedelta(days=3))
    assert again.status == ab_tests.RUNNING and again.started_at > test.started_at
