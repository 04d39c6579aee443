"""TrainingSetSpec(early_frauds=True): the frauds confirmed inside the maturity window join training as split
'early', and nothing else changes. The mature rows keep their splits row for row (the time splits are cut
over mature rows only), a legitimate or a not-yet-known verdict inside the window stays out, and both
audits pass on the result and fail on a row that does not belong."""

from __future__ import annotations

import datetime as dt

import pytest
import reference
from reference import event, label

from mlops_core.features import offline
from mlops_core.features.audits import audit_join, audit_point_in_time
from mlops_core.features.offline import TrainingSetSpec, build_training_set

UTC = dt.UTC
CUTOFF = dt.datetime(2024, 6, 1, tzinfo=UTC)
CUTOFF_NAIVE = CUTOFF.replace(tzinfo=None)
MATURITY_DAYS = 7
HORIZON = CUTOFF_NAIVE - dt.timedelta(days=MATURITY_DAYS)
US = dt.timedelta(microseconds=1)
HOUR = dt.timedelta(hours=1)


def scenario():
    """60 mature transactions (every 5th a fraud) an hour apart, and young ones named after their fate."""
    start = HORIZON - 60 * HOUR
    events = [event(f"m{i:02d}", f"a{i % 4}", start + i * HOUR, amount_usd=1.0 + i) for i in range(60)]
    labels = [label(e["transaction_id"], i % 5 == 0, HORIZON, e["event_timestamp"]) for i, e in enumerate(events)]
    young = {
        # confirmed frauds inside the window: in, as 'early'
        "early_at_horizon": (HORIZON, [(True, HORIZON + HOUR)]),
        "early_reported": (HORIZON + 2 * 24 * HOUR, [(True, HORIZON + 3 * 24 * HOUR)]),
        "early_labelled_at_cutoff": (CUTOFF_NAIVE - 5 * HOUR, [(True, CUTOFF_NAIVE)]),
        # out: a verdict one microsecond after the cutoff, a legitimate verdict, a fraud revised to legitimate,
        # no verdict at all, and an event at the cutoff itself
        "late_by_a_microsecond": (HORIZON + 24 * HOUR, [(True, CUTOFF_NAIVE + US)]),
        "young_legitimate": (HORIZON + 30 * HOUR, [(False, HORIZON + 40 * HOUR)]),
        "revised_to_legitimate": (HORIZON + 50 * HOUR, [(True, HORIZON + 60 * HOUR), (False, HORIZON + 70 * HOUR)]),
        "no_verdict": (HORIZON + 80 * HOUR, []),
        "at_cutoff": (CUTOFF_NAIVE, [(True, CUTOFF_NAIVE)]),
    }
    for n, (name, (when, verdicts)) in enumerate(young.items()):
        events.append(event(name, f"a{n % 4}", when, amount_usd=100.0 + n))
        labels += [label(name, fraud, at, when) for fraud, at in verdicts]
    return events, labels


EARLY = {"early_at_horizon", "early_reported", "early_labelled_at_cutoff"}


def build(early: bool):
    events, labels = scenario()
    con = reference.make_connection(events, [], labels)
    spec = TrainingSetSpec(cutoff=CUTOFF, label_maturity_days=MATURITY_DAYS, early_frauds=early)
    summary = build_training_set(con, spec)
    by_id = {
        r["transaction_id"]: r
        for r in (
            dict(zip([c[0] for c in cur.description], row))
            for cur in [con.execute("select * from features.training_set")]
            for row in cur.fetchall()
        )
    }
    return con, spec, summary, by_id, events


def test_only_the_frauds_confirmed_by_the_cutoff_join_and_only_as_early():
    con, spec, summary, with_early, events = build(early=True)
    try:
        early = {t for t, r in with_early.items() if r["split"] == offline.EARLY_SPLIT}
        assert early == EARLY
        assert all(with_early[t]["is_fraud"] for t in early)
        assert summary.rows_by_split[offline.EARLY_SPLIT] == 3
        assert summary.fraud_rate_by_split[offline.EARLY_SPLIT] == 1.0
        # nothing young outside the early split, and no early row before the horizon
        young = {e["transaction_id"] for e in events if e["event_timestamp"] >= HORIZON}
        assert {t for t, r in with_early.items() if t in young} == EARLY
        assert all(r["event_timestamp"] >= HORIZON for t, r in with_early.items() if t in EARLY)
    finally:
        con.close()


def test_the_mature_rows_and_their_splits_are_the_same_with_or_without_early_frauds():
    """The quantiles that cut train/validation/test see only mature rows: three young frauds, all newer than
    any mature row, would otherwise push the test split's start later."""
    con_a, _, summary_a, with_early, _ = build(early=True)
    con_b, _, summary_b, without, _ = build(early=False)
    con_a.close()
    con_b.close()
    mature = {t: r for t, r in with_early.items() if r["split"] != offline.EARLY_SPLIT}
    assert mature == without
    assert {s: summary_a.rows_by_split[s] for s in offline.SPLITS} == summary_b.rows_by_split
    assert offline.EARLY_SPLIT not in summary_b.rows_by_split


def test_early_rows_have_point_in_time_features_and_both_audits_pass():
    con, spec, _, with_early, events = build(early=True)
    try:
        expected = reference.reference_all(events, [])
        reference.assert_features_match(
            {t: with_early[t] for t in EARLY}, {t: expected[t] for t in EARLY}, "early frauds"
        )
        leakage = audit_point_in_time(con, offline.TRAINING_SET_TABLE, spec, sample_size=100)
        assert leakage.passed, leakage.describe()
        assert leakage.rows_inside_maturity_window == 0
        join = audit_join(con, offline.TRAINING_SET_TABLE, spec)
        assert join.passed, join.describe()
        assert join.expected_rows == 60 + 3
    finally:
        con.close()


@pytest.mark.parametrize(
    ("transaction_id", "is_fraud"),
    [("young_legitimate", False), ("late_by_a_microsecond", True)],
)
def test_the_audits_fail_on_a_young_row_that_does_not_belong(transaction_id, is_fraud):
    """A young legitimate row, or a fraud whose verdict came after the cutoff, planted as 'early'."""
    con, spec, _, with_early, _ = build(early=True)
    try:
        template = with_early["early_reported"]
        when = {"young_legitimate": HORIZON + 30 * HOUR, "late_by_a_microsecond": HORIZON + 24 * HOUR}[transaction_id]
        labeled_at = {"young_legitimate": HORIZON + 40 * HOUR, "late_by_a_microsecond": CUTOFF_NAIVE + US}[
            transaction_id
        ]
        con.execute(
            "insert into features.training_set by name select * replace ($id as transaction_id, $fraud as is_fraud, "
            "$when as event_timestamp, $at as labeled_at) from features.training_set where transaction_id = $template",
            {"id": transaction_id, "fraud": is_fraud, "when": when, "at": labeled_at, "template": "early_reported"},
        )
        assert template["split"] == offline.EARLY_SPLIT
        leakage = audit_point_in_time(con, offline.TRAINING_SET_TABLE, spec, sample_size=0)
        assert not leakage.passed
        if is_fraud:
            assert leakage.labels_after_cutoff == 1
        else:
            assert leakage.rows_inside_maturity_window == 1
        assert not audit_join(con, offline.TRAINING_SET_TABLE, spec).passed
    finally:
        con.close()


def test_without_the_spec_flag_an_early_row_is_inside_the_maturity_window():
    con, spec, _, _, _ = build(early=True)
    try:
        plain = TrainingSetSpec(cutoff=CUTOFF, label_maturity_days=MATURITY_DAYS)
        leakage = audit_point_in_time(con, offline.TRAINING_SET_TABLE, plain, sample_size=10)
        assert leakage.rows_inside_maturity_window == 3 and not leakage.passed
        assert audit_join(con, offline.TRAINING_SET_TABLE, plain).expected_rows == 60
    finally:
        con.close()
