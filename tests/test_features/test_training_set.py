"""build_training_set on tiny warehouse tables: labels known at the cutoff, mature entity
rows, time-ordered splits, a content-hash data_version, atomic replacement, and the
validation of its inputs."""

from __future__ import annotations

import datetime as dt

import duckdb
import pytest
import reference
from reference import event, label, snapshot

from mlops_core.features import offline
from mlops_core.features.offline import TrainingSetSpec, build_training_set, checked_identifier
from mlops_core.features.spec import FEATURE_NAMES

UTC = dt.UTC
CUTOFF = dt.datetime(2024, 6, 1, tzinfo=UTC)
CUTOFF_NAIVE = CUTOFF.replace(tzinfo=None)
MATURITY_DAYS = 45
HORIZON = dt.datetime(2024, 4, 17)  # CUTOFF - 45 days
US = dt.timedelta(microseconds=1)
DAY = dt.timedelta(days=1)
SPEC = TrainingSetSpec(cutoff=CUTOFF, label_maturity_days=MATURITY_DAYS)


def d(month: int, day: int, hour: int = 10) -> dt.datetime:
    return dt.datetime(2024, month, day, hour)


def label_scenario():
    """Transactions with every kind of label history, named after what should happen to them."""
    events = [
        event("single", "a1", d(3, 1), amount_usd=10.0),
        event("late_only", "a1", d(3, 2), amount_usd=20.0),
        event("revised", "a1", d(3, 3), amount_usd=30.0, merchant_id="m2"),
        event("revised_late", "a2", d(3, 4), amount_usd=40.0),
        event("at_cutoff", "a2", d(3, 5), amount_usd=50.0),
        event("unlabelled", "a1", d(3, 5, 12), amount_usd=60.0, merchant_id="m3"),
        event("twice_landed", "a2", d(3, 6), amount_usd=65.0),
        event("before_horizon", "a1", HORIZON - US, amount_usd=70.0),
        event("at_horizon", "a1", HORIZON, amount_usd=80.0),
        event("young", "a1", d(5, 1), amount_usd=90.0),
    ]
    snapshots = [
        snapshot("a1", d(1, 1), home_country="US"),
        snapshot("a2", d(3, 4, 23), home_country="GB", age_band="45-54"),
    ]
    labels = [
        label("single", False, d(3, 20), d(3, 1), "maturity"),
        label("late_only", True, CUTOFF_NAIVE + US, d(3, 2)),  # known only after the cutoff
        label("revised", False, d(3, 10), d(3, 3), "maturity"),
        label("revised", True, d(4, 20), d(3, 3), "customer_report"),  # the newest known at the cutoff
        label("revised_late", False, d(3, 10), d(3, 4), "maturity"),
        label("revised_late", True, d(6, 15), d(3, 4)),  # after the cutoff: the earlier verdict stands
        label("at_cutoff", True, CUTOFF_NAIVE, d(3, 5)),  # labeled_at == cutoff is known
        label("twice_landed", True, d(3, 9), d(3, 6)),
        label("twice_landed", True, d(3, 9), d(3, 6)),  # the same verdict landed twice
        label("before_horizon", False, d(5, 30), HORIZON - US, "maturity"),
        label("at_horizon", False, d(5, 30), HORIZON, "maturity"),  # too young: at the horizon
        label("young", True, d(5, 2), d(5, 1)),  # too young, even though labelled
    ]
    return events, snapshots, labels


EXPECTED_LABELS = {
    "single": (False, d(3, 20), "maturity"),
    "revised": (True, d(4, 20), "customer_report"),
    "revised_late": (False, d(3, 10), "maturity"),
    "at_cutoff": (True, CUTOFF_NAIVE, "chargeback"),
    "twice_landed": (True, d(3, 9), "chargeback"),
    "before_horizon": (False, d(5, 30), "maturity"),
}


def fetch(con, sql: str, params=None) -> list[dict]:
    cursor = con.execute(sql, params or [])
    names = [c[0] for c in cursor.description]
    return [dict(zip(names, r)) for r in cursor.fetchall()]


def build(events, snapshots, labels, spec: TrainingSetSpec = SPEC):
    con = reference.make_connection(events, snapshots, labels)
    summary = build_training_set(con, spec)
    return con, summary, fetch(con, "select * from features.training_set")


# --------------------------------------------------------------------------- labels and entity rows


def test_rows_are_the_mature_transactions_with_a_verdict_known_at_the_cutoff():
    events, snapshots, labels = label_scenario()
    con, summary, rows = build(events, snapshots, labels)
    try:
        got = {r["transaction_id"]: (r["is_fraud"], r["labeled_at"], r["label_source"]) for r in rows}
        assert len(got) == len(rows), "transaction_id must be unique"
        assert got == EXPECTED_LABELS
        assert summary.rows == len(rows) == sum(summary.rows_by_split.values())
        assert summary.entity_rows == 8  # events before the horizon, labelled or not
        assert summary.labels_after_cutoff == 2  # late_only, revised_late's revision
        assert summary.unlabeled_mature_transactions == 2  # late_only, unlabelled
    finally:
        con.close()


def test_row_count_equals_an_independent_count_of_mature_labelled_transactions():
    events, snapshots, labels = label_scenario()
    known = {l["transaction_id"] for l in labels if l["labeled_at"] <= CUTOFF_NAIVE}
    mature = [e["transaction_id"] for e in events if e["event_timestamp"] < HORIZON and e["transaction_id"] in known]
    con, summary, rows = build(events, snapshots, labels)
    con.close()
    assert sorted(r["transaction_id"] for r in rows) == sorted(mature)


def test_training_features_are_point_in_time_over_all_events():
    """Windows see every earlier event of the account, labelled or not; only the entity rows are filtered."""
    events, snapshots, labels = label_scenario()
    con, _, rows = build(events, snapshots, labels)
    con.close()
    expected = reference.reference_all(events, snapshots)
    reference.assert_features_match(
        {r["transaction_id"]: r for r in rows}, {t: expected[t] for t in EXPECTED_LABELS}, "training set"
    )
    by_id = {r["transaction_id"]: r for r in rows}
    assert by_id["revised"]["txn_count_7d"] == 2  # single and late_only (not a training row itself)
    assert by_id["at_cutoff"]["txn_count_24h"] == 1  # revised_late, exactly 24h earlier
    assert (by_id["revised_late"]["age_band"], by_id["at_cutoff"]["age_band"]) == ("unknown", "45-54")


def test_label_ties_are_resolved_the_same_whatever_the_row_order():
    """Two verdicts with one labeled_at: the table must not depend on the order rows were loaded in."""
    events = [event("t1", "a1", d(3, 1)), event("t2", "a1", d(3, 2))]
    ties = [
        label("t1", False, d(3, 9), d(3, 1), "maturity"),
        label("t1", True, d(3, 9), d(3, 1)),
        label("t2", False, d(3, 9), d(3, 2)),
    ]
    results = []
    for order in (ties, ties[::-1]):
        con, summary, rows = build(events, [], order)
        con.close()
        results.append(({r["transaction_id"]: r["is_fraud"] for r in rows}, summary.data_version))
    assert results[0] == results[1]
    assert len(results[0][0]) == 2


def test_a_cutoff_in_another_timezone_means_the_same_instant():
    events = [event("t1", "a1", d(3, 1)), event("t2", "a1", d(3, 2))]
    labels = [
        label("t1", True, dt.datetime(2024, 6, 1, 10, 0), d(3, 1)),
        label("t2", True, dt.datetime(2024, 6, 1, 10, 0) + US, d(3, 2)),
    ]
    paris = dt.timezone(dt.timedelta(hours=2))
    versions = []
    for cutoff in (dt.datetime(2024, 6, 1, 12, 0, tzinfo=paris), dt.datetime(2024, 6, 1, 10, 0, tzinfo=UTC)):
        con, summary, rows = build(
            events, [], labels, TrainingSetSpec(cutoff=cutoff, label_maturity_days=MATURITY_DAYS)
        )
        con.close()
        assert [r["transaction_id"] for r in rows] == ["t1"]  # the label 1 us after 10:00 UTC is not known yet
        assert summary.labels_after_cutoff == 1
        versions.append(summary.data_version)
    assert versions[0] == versions[1]


@pytest.mark.parametrize("maturity_days", [0, 1, 45])
def test_the_entity_horizon_is_cutoff_minus_maturity_exclusive(maturity_days):
    horizon = CUTOFF_NAIVE - maturity_days * DAY
    events = [event("before", "a1", horizon - US), event("at", "a1", horizon), event("after", "a1", horizon + US)]
    labels = [
        label(e["transaction_id"], False, CUTOFF_NAIVE - US, e["event_timestamp"])
        for e in events
        if e["event_timestamp"] < CUTOFF_NAIVE
    ]
    spec = TrainingSetSpec(cutoff=CUTOFF, label_maturity_days=maturity_days)
    assert spec.entity_horizon == horizon
    con, summary, rows = build(events, [], labels, spec)
    con.close()
    assert [r["transaction_id"] for r in rows] == ["before"]
    assert summary.entity_rows == 1


# --------------------------------------------------------------------------- splits


def split_scenario():
    """40 mature labelled transactions an hour apart, plus 6 sharing one instant near the 70% quantile."""
    start = d(2, 1, 0)
    events = [event(f"t{i:02d}", f"a{i % 3}", start + i * dt.timedelta(hours=1), amount_usd=1.0 + i) for i in range(40)]
    tie_time = start + dt.timedelta(hours=31, minutes=30)
    events += [event(f"tie{i}", f"a{i % 3}", tie_time, amount_usd=5.0) for i in range(6)]
    labels = [label(e["transaction_id"], i % 5 == 0, d(3, 20), e["event_timestamp"]) for i, e in enumerate(events)]
    return events, [], labels


@pytest.mark.parametrize(("validation_share", "test_share"), [(0.15, 0.15), (0.3, 0.2), (0.05, 0.05)])
def test_splits_are_time_ordered_and_cover_every_row(validation_share, test_share):
    events, snapshots, labels = split_scenario()
    spec = TrainingSetSpec(
        cutoff=CUTOFF, label_maturity_days=MATURITY_DAYS, validation_share=validation_share, test_share=test_share
    )
    con, summary, rows = build(events, snapshots, labels, spec)
    con.close()
    assert len(rows) == len(events) == len({r["transaction_id"] for r in rows})
    by_split = {s: sorted(r["event_timestamp"] for r in rows if r["split"] == s) for s in offline.SPLITS}
    assert sum(len(v) for v in by_split.values()) == len(rows)  # every row is in exactly one known split
    assert all(by_split.values()), {s: len(v) for s, v in by_split.items()}
    # strictly ordered: one instant never straddles two splits
    assert by_split["train"][-1] < by_split["validation"][0]
    assert by_split["validation"][-1] < by_split["test"][0]
    n = len(rows)
    assert abs(len(by_split["test"]) - test_share * n) <= 6 + 1
    assert abs(len(by_split["train"]) - (1 - validation_share - test_share) * n) <= 6 + 1
    assert summary.rows_by_split == {s: len(v) for s, v in by_split.items()}
    assert summary.split_bounds == {s: (str(v[0]), str(v[-1])) for s, v in by_split.items()}
    for s in offline.SPLITS:
        frauds = [r["is_fraud"] for r in rows if r["split"] == s]
        assert summary.fraud_rate_by_split[s] == pytest.approx(sum(frauds) / len(frauds))


def test_ties_at_a_split_boundary_stay_in_one_split():
    events, snapshots, labels = split_scenario()
    con, _, rows = build(events, snapshots, labels)
    con.close()
    tie_splits = {r["split"] for r in rows if r["transaction_id"].startswith("tie")}
    assert len(tie_splits) == 1


def test_an_empty_training_set_is_an_empty_table():
    events = [event("young", "a1", d(5, 30))]
    con, summary, rows = build(events, [], [label("young", True, d(5, 31), d(5, 30))])
    con.close()
    assert rows == [] and summary.rows == 0 and summary.rows_by_split == {"train": 0, "validation": 0, "test": 0}


# --------------------------------------------------------------------------- data_version


def _version(events, snapshots, labels) -> str:
    con, summary, _ = build(events, snapshots, labels)
    try:
        assert offline.data_version(con) == summary.data_version
        return summary.data_version
    finally:
        con.close()


def test_data_version_is_deterministic_and_independent_of_load_order():
    events, snapshots, labels = label_scenario()
    con, first, _ = build(events, snapshots, labels)
    try:
        again = build_training_set(con, SPEC)  # a rebuild on the same connection
        assert again.data_version == first.data_version
    finally:
        con.close()
    assert (
        _version(events[::-1], snapshots[::-1], labels[::-1]) == first.data_version
    )  # a fresh warehouse, rows reversed
    assert len(first.data_version) == 16 and int(first.data_version, 16) >= 0


def _with(rows, txid, **changes):
    return [{**r, **changes} if r["transaction_id"] == txid else r for r in rows]


@pytest.mark.parametrize(
    "change",
    [
        "amount of a training row",  # its amount_usd, log_amount_usd, ratio change
        "merchant of an earlier unlabelled event",  # only a window feature of later rows changes
        "age band in a snapshot",
        "one verdict flipped",
        "one verdict relabelled later before the cutoff",
    ],
)
def test_data_version_changes_with_one_feature_value_or_one_label(change):
    events, snapshots, labels = label_scenario()
    base = _version(events, snapshots, labels)
    if change == "amount of a training row":
        events = _with(events, "single", amount_usd=10.000001)
    elif change == "merchant of an earlier unlabelled event":
        events = _with(events, "late_only", merchant_id="m_new")
    elif change == "age band in a snapshot":
        snapshots = [{**s, "age_band": "65+"} if s["account_id"] == "a2" else s for s in snapshots]
    elif change == "one verdict flipped":
        labels = _with(labels, "single", is_fraud=True)
    else:
        labels = _with(labels, "single", labeled_at=d(3, 21))
    assert _version(events, snapshots, labels) != base


def test_data_version_ignores_what_the_training_set_cannot_see():
    events, snapshots, labels = label_scenario()
    base = _version(events, snapshots, labels)
    events = _with(events, "young", amount_usd=12345.0)  # after every training row, itself too young
    labels = labels + [label("single", True, CUTOFF_NAIVE + DAY, d(3, 1))]  # a verdict after the cutoff
    assert _version(events, snapshots, labels) == base


# --------------------------------------------------------------------------- atomic replacement


@pytest.mark.parametrize("missing", ["marts.label_events", "marts.transactions_enriched", "marts.account_history"])
def test_a_failing_build_leaves_the_previous_table_intact(missing):
    events, snapshots, labels = label_scenario()
    con, summary, before = build(events, snapshots, labels)
    try:
        con.execute(f"drop table {missing}")
        # CatalogException, or for account_history DuckDB's replacement scan tripping over the
        # local variable of that name in build_training_set: an error naming the table either way.
        with pytest.raises(duckdb.Error, match=missing.split(".")[1]):
            build_training_set(con, SPEC)
        assert fetch(con, "select * from features.training_set") == before
        assert offline.data_version(con) == summary.data_version
        # no transaction left open: the connection works normally
        con.execute("begin transaction")
        con.execute("commit")
        reference.build_tables(con, events, snapshots, labels)
        assert build_training_set(con, SPEC).data_version == summary.data_version
    finally:
        con.close()


def test_a_failing_first_build_creates_no_table():
    events, snapshots, labels = label_scenario()
    con = reference.make_connection(events, snapshots, None)
    try:
        with pytest.raises(duckdb.CatalogException):
            build_training_set(con, SPEC)
        assert (
            con.execute("select count(*) from information_schema.tables where table_name = 'training_set'").fetchone()[
                0
            ]
            == 0
        )
    finally:
        con.close()


# --------------------------------------------------------------------------- input validation


def test_spec_rejects_a_naive_cutoff():
    with pytest.raises(ValueError, match="cutoff must be timezone-aware"):
        TrainingSetSpec(cutoff=dt.datetime(2024, 6, 1))


def test_spec_rejects_a_negative_maturity():
    with pytest.raises(ValueError, match="label_maturity_days must be >= 0, got -1"):
        TrainingSetSpec(cutoff=CUTOFF, label_maturity_days=-1)


@pytest.mark.parametrize(
    ("validation_share", "test_share"),
    [(0.0, 0.15), (0.15, 0.0), (1.0, 0.1), (-0.1, 0.2), (0.2, 1.5), (0.5, 0.5), (0.6, 0.5)],
)
def test_spec_rejects_bad_shares(validation_share, test_share):
    with pytest.raises(
        ValueError, match=r"validation_share and test_share must be in \(0, 1\) and sum below 1"
    ) as info:
        TrainingSetSpec(cutoff=CUTOFF, validation_share=validation_share, test_share=test_share)
    assert f"got {validation_share} and {test_share}" in str(info.value)


def test_spec_converts_an_aware_cutoff_to_naive_utc():
    spec = TrainingSetSpec(
        cutoff=dt.datetime(2024, 6, 1, 2, 0, tzinfo=dt.timezone(dt.timedelta(hours=2))), label_maturity_days=1
    )
    assert spec.cutoff_naive_utc == dt.datetime(2024, 6, 1, 0, 0)
    assert spec.entity_horizon == dt.datetime(2024, 5, 31, 0, 0)


@pytest.mark.parametrize(
    "name", ["x; drop table y", "marts.t; --", "a.b.c", '"quoted"', "", "t where 1=1", "marts.t -- x"]
)
def test_checked_identifier_rejects_anything_but_a_plain_name(name):
    with pytest.raises(ValueError, match="not a plain") as info:
        checked_identifier(name)
    assert repr(name) in str(info.value)


@pytest.mark.parametrize("name", ["marts.transactions_enriched", "features.training_set", "t1", "_tmp"])
def test_checked_identifier_accepts_plain_names(name):
    assert checked_identifier(name) == name


@pytest.mark.parametrize("argument", ["target", "events", "account_history", "labels"])
def test_build_training_set_refuses_an_injected_table_name_before_running_anything(argument):
    events, snapshots, labels = label_scenario()
    con = reference.make_connection(events, snapshots, labels)
    try:
        con.execute("create table y (v integer)")
        with pytest.raises(ValueError, match="x; drop table y"):
            build_training_set(con, SPEC, **{argument: "x; drop table y"})
        assert con.execute("select count(*) from y").fetchone()[0] == 0  # y still exists
        assert (
            con.execute("select count(*) from information_schema.tables where table_name = 'training_set'").fetchone()[
                0
            ]
            == 0
        )
    finally:
        con.close()


def test_feature_sql_refuses_injected_table_names():
    with pytest.raises(ValueError):
        offline.point_in_time_features_sql("x; drop table y")
    with pytest.raises(ValueError):
        offline.brute_force_features_sql("sample", account_history="x; drop table y")
    with pytest.raises(ValueError):
        offline.labels_known_at_cutoff_sql("x; drop table y")


def test_training_set_has_every_feature_and_the_label_columns():
    events, snapshots, labels = label_scenario()
    con, _, _ = build(events, snapshots, labels)
    try:
        columns = [c[0] for c in con.execute("select * from features.training_set limit 0").description]
    finally:
        con.close()
    assert set(FEATURE_NAMES) <= set(columns)
    assert {
        "transaction_id",
        "account_id",
        "event_timestamp",
        "is_fraud",
        "labeled_at",
        "label_source",
        "split",
    } <= set(columns)


def test_a_lookback_window_keeps_only_recent_mature_transactions_and_the_join_audit_agrees():
    from mlops_core.features.audits import audit_join

    LOOKBACK = 20

    events, snapshots, labels = label_scenario()
    spec = TrainingSetSpec(cutoff=CUTOFF, label_maturity_days=MATURITY_DAYS, lookback_days=LOOKBACK)
    con, summary, rows = build(events, snapshots, labels, spec)
    try:
        start = HORIZON - dt.timedelta(days=LOOKBACK)
        everything = {r["transaction_id"] for r in build(events, snapshots, labels)[2]}
        kept = {r["transaction_id"] for r in rows}
        by_id = {e["transaction_id"]: e["event_timestamp"] for e in events}
        assert kept == {t for t in everything if by_id[t] >= start}
        assert kept and kept != everything, "the scenario must have labelled rows on both sides of the window start"
        report = audit_join(con, "features.training_set", spec)
        assert report.passed and report.rows == report.expected_rows == len(kept)
    finally:
        con.close()


def test_lookback_must_be_positive():
    with pytest.raises(ValueError, match="lookback_days"):
        TrainingSetSpec(cutoff=CUTOFF, lookback_days=0)
