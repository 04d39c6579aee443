"""The approval bookkeeping on a real DuckDB file: requests, decisions, expiry at its exact bound (tier 1)."""

import datetime as dt

import duckdb
import pytest

from mlops_core import approvals

T0 = dt.datetime(2026, 7, 1, 9, 0, tzinfo=dt.UTC)


@pytest.fixture
def con(tmp_path):
    with duckdb.connect(str(tmp_path / "w.duckdb")) as connection:
        yield connection


def _ask(con, version="5", now=T0, hours=72.0):
    return approvals.request(con, "fraud_detector", version, {"test_auc_pr": 0.61}, "runs:/r/evaluation", now, hours)


def test_a_request_is_recorded_once_and_a_rerun_does_not_restart_its_clock(con):
    first = _ask(con)
    again = _ask(con, now=T0 + dt.timedelta(hours=10))
    assert first == again and first.status == approvals.PENDING
    assert first.expires_at == dt.datetime(2026, 7, 4, 9, 0) and first.evidence == {"test_auc_pr": 0.61}
    assert [a.version for a in approvals.pending(con)] == ["5"]


def test_approve_and_reject_record_who_and_why(con):
    _ask(con, "5")
    _ask(con, "6")
    approved = approvals.decide(con, "fraud_detector", "5", "approve", "alice", "recall up 4 points", T0)
    assert (approved.status, approved.decided_by, approved.reason) == ("approved", "alice", "recall up 4 points")
    rejected = approvals.decide(con, "fraud_detector", "6", "reject", "bob", "flags too many", T0)
    assert rejected.status == "rejected" and approvals.pending(con) == []
    with pytest.raises(approvals.ApprovalError, match="its latest request is approved"):
        approvals.decide(con, "fraud_detector", "5", "reject", "carol", "changed my mind", T0)
    # A version sharing a long prefix with a pending one is not it.
    _ask(con, "55")
    with pytest.raises(approvals.ApprovalError, match="version 555 has no pending approval \\(no request\\)"):
        approvals.decide(con, "fraud_detector", "555", "approve", "alice", "x", T0)


def test_a_decision_needs_an_actor_a_reason_and_a_known_verb(con):
    _ask(con)
    for decision, actor, reason, message in (
        ("approved", "alice", "ok", "decision must be one of"),
        ("approve", "alice", "  ", "actor and reason"),
        ("approve", "", "ok", "actor and reason"),
    ):
        with pytest.raises(approvals.ApprovalError, match=message):
            approvals.decide(con, "fraud_detector", "5", decision, actor, reason, T0)
    assert approvals.latest(con, "fraud_detector", "5").status == approvals.PENDING


def test_expiry_is_exact_to_the_second(con):
    _ask(con, hours=1.0)
    bound = T0 + dt.timedelta(hours=1)
    assert approvals.expire_due(con, bound) == []  # at the bound it may still be decided
    assert approvals.decide(con, "fraud_detector", "5", "approve", "alice", "in time", bound).status == "approved"
    _ask(con, "6", hours=1.0)
    (expired,) = approvals.expire_due(con, bound + dt.timedelta(seconds=1))
    assert (expired.version, expired.status, expired.decided_by) == ("6", "expired", "approval_expiry")
    _ask(con, "7", hours=1.0)
    with pytest.raises(approvals.ApprovalError, match="expired at 2026-07-01T10:00:00"):
        approvals.decide(con, "fraud_detector", "7", "approve", "alice", "too late", bound + dt.timedelta(seconds=1))
    assert approvals.latest(con, "fraud_detector", "7").status == approvals.EXPIRED
    # Rolled out again, an expired version is asked anew with a fresh clock.
    again = _ask(con, "7", now=bound + dt.timedelta(hours=2), hours=1.0)
    assert again.status == approvals.PENDING and again.expires_at == dt.datetime(2026, 7, 1, 13, 0)
