"""Explicit point-in-time edge cases, each checked in all three implementations.

"Three ways" = point_in_time_features_sql, brute_force_features_sql and an online
replay (look up each transaction, then record it, in time order).
"""

from __future__ import annotations

import csv
import datetime as dt
import re
from pathlib import Path

import duckdb
import pytest
import reference
from reference import event, label, snapshot

from mlops_core.contracts import CURRENCIES
from mlops_core.features import online
from mlops_core.features.offline import TrainingSetSpec, build_training_set
from mlops_core.features.spec import (
    ACCOUNT_FEATURES,
    FEATURE_NAMES,
    REQUEST_FEATURES,
    WINDOWED_FEATURES,
    WINDOWS,
)
from mlops_core.features.stores import SqliteOnlineStore

T = dt.datetime(2024, 5, 10, 12, 0)  # the entity's instant (naive UTC, a Friday)
US = dt.timedelta(microseconds=1)
HOUR, DAY = dt.timedelta(hours=1), dt.timedelta(days=1)


def three_ways(events, snapshots=()) -> dict[str, dict[str, dict]]:
    con = reference.make_connection(events, snapshots)
    try:
        result = {
            "offline": reference.offline_features(con),
            "brute_force": reference.brute_force_features(con),
        }
    finally:
        con.close()
    result["online"] = reference.online_replay(events, snapshots)
    return result


def features_of(txid: str, events, snapshots=()) -> dict[str, dict]:
    """{implementation: features of txid}, after checking all three agree with the reference on every row."""
    results = three_ways(events, snapshots)
    expected = reference.reference_all(events, snapshots)
    for name, rows in results.items():
        reference.assert_features_match(rows, expected, name)
    return {name: rows[txid] for name, rows in results.items()}


# --------------------------------------------------------------------------- windows


@pytest.mark.parametrize("window", list(WINDOWS))
def test_window_lower_bound_is_inclusive_and_upper_bound_exclusive(window):
    w = dt.timedelta(seconds=WINDOWS[window])
    events = [
        event("just_outside", "a1", T - w - US, amount_usd=1000.0, merchant_id="m_out"),
        event("on_the_bound", "a1", T - w, amount_usd=7.0, merchant_id="m_in"),
        event("entity", "a1", T, amount_usd=1.0),
        event("same_instant", "a1", T, amount_usd=500.0, merchant_id="m_tie"),
        event("after", "a1", T + US, amount_usd=900.0, merchant_id="m_after"),
    ]
    for impl, f in features_of("entity", events).items():
        counted = {feature.name: f[feature.name] for feature in WINDOWED_FEATURES if feature.window == window}
        if f"txn_count_{window}" in counted:
            assert counted[f"txn_count_{window}"] == 1, impl
            assert counted[f"amount_sum_{window}"] == 7.0, impl
        if f"amount_max_{window}" in counted:
            assert counted[f"amount_max_{window}"] == 7.0, impl
            assert counted[f"merchant_distinct_{window}"] == 1, impl
        if window == "30d":
            # the only event in the window is exactly 30 days old
            assert f["seconds_since_last_txn"] == 30 * 86_400.0, impl


def test_an_event_at_exactly_t_does_not_count():
    events = [event("entity", "a1", T), event("other_at_t", "a1", T, amount_usd=99.0), event("later", "a1", T + HOUR)]
    for impl, f in features_of("entity", events).items():
        assert all(f[w.name] == w.default for w in WINDOWED_FEATURES), (impl, f)


def test_transactions_at_an_identical_timestamp_do_not_see_each_other():
    events = [
        event("earlier", "a1", T - 10 * dt.timedelta(minutes=1), amount_usd=4.0),
        event("tie_a", "a1", T, amount_usd=100.0, merchant_id="m2"),
        event("tie_b", "a1", T, amount_usd=200.0, merchant_id="m3"),
    ]
    results = three_ways(events)
    for impl, rows in results.items():
        for txid in ("tie_a", "tie_b"):
            f = rows[txid]
            assert (f["txn_count_1h"], f["amount_sum_1h"], f["amount_max_24h"], f["merchant_distinct_24h"]) == (
                1,
                4.0,
                4.0,
                1,
            ), (impl, txid)
            assert f["seconds_since_last_txn"] == 600.0, (impl, txid)
            assert f["amount_to_mean_30d"] == f["amount_usd"] / 4.0, (impl, txid)


def test_ties_looked_up_in_one_online_batch_do_not_see_each_other():
    store = SqliteOnlineStore(":memory:")
    service = online.OnlineFeatureService(store)
    service.record([reference.request_of(event("earlier", "a1", T - HOUR))])
    batch = [reference.request_of(event("tie_a", "a1", T)), reference.request_of(event("tie_b", "a1", T))]
    assert service.record(batch[:1]) == 1  # one of the pair is already recorded when the other is looked up
    for f in service.get_online_features(batch):
        assert f["txn_count_24h"] == 1 and f["seconds_since_last_txn"] == 3600.0


# --------------------------------------------------------------------------- unknown accounts and snapshots


def test_an_unknown_account_gets_every_features_default():
    events = [
        event("known_history", "a2", T - HOUR, amount_usd=50.0),  # another account's history must not leak
        event("entity", "a_unknown", T, amount_usd=25.0, country="GB", channel="online", merchant_category="travel"),
    ]
    snapshots = [snapshot("a2", T - 10 * DAY, home_country="US")]
    request_only = {
        "amount_usd",
        "log_amount_usd",
        "hour_of_day",
        "day_of_week",
        "is_weekend",
        "is_online",
        "merchant_category",
    }
    for impl, f in features_of("entity", events, snapshots).items():
        for feature in (*WINDOWED_FEATURES, *ACCOUNT_FEATURES, *REQUEST_FEATURES):
            if feature.name not in request_only:
                assert f[feature.name] == feature.default, (impl, feature.name, f[feature.name])
        assert f["age_band"] == "unknown" and f["is_foreign"] == 0 and f["account_age_days"] == -1.0
        assert f["amount_to_mean_30d"] == 1.0 and f["seconds_since_last_txn"] == 30 * 86_400.0
        # ...while the request's own fields are still used
        assert (f["amount_usd"], f["is_online"], f["merchant_category"], f["hour_of_day"]) == (25.0, 1, "travel", 12)


def test_the_spec_defaults_are_the_documented_ones():
    defaults = {f.name: f.default for f in (*WINDOWED_FEATURES, *ACCOUNT_FEATURES, *REQUEST_FEATURES)}
    assert set(defaults) == set(FEATURE_NAMES)
    assert defaults["txn_count_1h"] == 0 and defaults["amount_sum_24h"] == 0.0 and defaults["amount_max_30d"] == 0.0
    assert defaults["seconds_since_last_txn"] == 30 * 86_400.0
    assert (
        defaults["age_band"],
        defaults["account_age_days"],
        defaults["is_foreign"],
        defaults["amount_to_mean_30d"],
    ) == ("unknown", -1.0, 0, 1.0)


def test_a_snapshot_valid_from_t_is_not_used_one_valid_before_t_is():
    events = [
        event("entity", "a1", T, country="GB"),
        event("only_at_t", "a2", T, country="GB"),
    ]
    snapshots = [
        snapshot("a1", T - 3 * DAY, created_at=T - 30 * DAY, home_country="FR", age_band="18-24"),
        snapshot(
            "a1", T - US, created_at=T - 2 * DAY, home_country="GB", age_band="35-44"
        ),  # the newest strictly before t
        snapshot("a1", T, created_at=T - 5 * DAY, home_country="US", age_band="65+"),  # valid from t: not yet known
        snapshot("a2", T, home_country="US", age_band="65+"),
    ]
    results = three_ways(events, snapshots)
    expected = reference.reference_all(events, snapshots)
    for impl, rows in results.items():
        reference.assert_features_match(rows, expected, impl)
        f = rows["entity"]
        assert (f["age_band"], f["is_foreign"], f["account_age_days"]) == ("35-44", 0, 2.0), impl
        g = rows["only_at_t"]
        assert (g["age_band"], g["is_foreign"], g["account_age_days"]) == ("unknown", 0, -1.0), impl


def test_a_batch_of_one_accounts_transactions_gets_each_its_own_as_of_values():
    history = [
        event("h1", "a1", T - 40 * DAY, amount_usd=1000.0),
        event("h2", "a1", T - 3 * DAY, amount_usd=10.0, merchant_id="m2"),
        event("h3", "a1", T - 2 * HOUR, amount_usd=20.0, merchant_id="m3", country="GB"),
        event("h4", "a1", T + HOUR, amount_usd=30.0),
        event("h5", "a1", T + 3 * HOUR, amount_usd=40.0, merchant_id="m5"),
    ]
    snapshots = [
        snapshot("a1", T - 50 * DAY, home_country="US", age_band="18-24"),
        snapshot("a1", T + 2 * HOUR, home_country="GB", age_band="25-34"),
    ]
    store = SqliteOnlineStore(":memory:")
    store.rebuild(
        [online.event_record(reference.request_of(e)) for e in history], reference.account_snapshots(snapshots), 0
    )
    entities = [
        event("q_late", "a1", T + 4 * HOUR, country="GB"),
        event("q_early", "a1", T - DAY),
        event("q_now", "a1", T),
        event("q_at_h4", "a1", T + HOUR),
    ]
    served = online.OnlineFeatureService(store).get_online_features([reference.request_of(e) for e in entities])
    assert len(served) == len(entities)
    # In request order, each as of its own time, over the history and the batch's earlier rows (as offline).
    for e, f in zip(entities, served):
        reference.assert_features_match(
            {e["transaction_id"]: f},
            {e["transaction_id"]: reference.reference_features(e, history + entities, snapshots)},
            "online batch",
        )
    by_id = dict(zip((e["transaction_id"] for e in entities), served))
    # q_now sees q_early (exactly 24h before); q_at_h4 sees q_now but not h4 (same instant); q_late sees all.
    assert [by_id[t]["txn_count_24h"] for t in ("q_early", "q_now", "q_at_h4", "q_late")] == [0, 2, 2, 5]
    assert [by_id[t]["txn_count_30d"] for t in ("q_early", "q_now", "q_at_h4", "q_late")] == [1, 3, 4, 7]
    assert by_id["q_late"]["age_band"] == "25-34" and by_id["q_now"]["age_band"] == "18-24"
    assert by_id["q_late"]["is_foreign"] == 0 and by_id["q_now"]["is_foreign"] == 0


def test_account_opened_after_the_transaction_gets_the_same_age_offline_and_online():
    events = [event("entity", "a1", T)]
    snapshots = [snapshot("a1", T - DAY, created_at=T + HOUR)]  # known before t, but claims to open 1h after t
    values = {impl: rows["entity"]["account_age_days"] for impl, rows in three_ways(events, snapshots).items()}
    assert values == {"offline": -1.0, "brute_force": -1.0, "online": -1.0}


# --------------------------------------------------------------------------- request normalization


FX_SEED = Path(__file__).resolve().parents[2] / "dbt_project" / "seeds" / "fx_rates.csv"


def _seed_rates() -> dict[str, float]:
    with FX_SEED.open() as handle:
        return {row["currency"]: float(row["usd_per_unit"]) for row in csv.DictReader(handle)}


def _warehouse_amount_usd(amount: float, currency: str) -> float:
    """amount_usd as the dbt mart computes it: amount * usd_per_unit, the seed typed double (dbt_project.yml)."""
    con = duckdb.connect()
    try:
        return con.execute(
            "select cast(? as double) * fx.usd_per_unit from read_csv(?, header = true, "
            "columns = {'currency': 'varchar', 'usd_per_unit': 'double'}) as fx where fx.currency = ?",
            [amount, str(FX_SEED), currency],
        ).fetchone()[0]
    finally:
        con.close()


def test_every_contract_currency_has_a_seed_rate():
    assert set(online.fx_rates()) == set(CURRENCIES) == set(_seed_rates())
    assert online.fx_rates()["EUR"] == _seed_rates()["EUR"] == 1.08


@pytest.mark.parametrize("amount", [19.99, 0.1, 1.0, 12_345.67, 49_999.99])
@pytest.mark.parametrize("currency", ["EUR", "JPY", "USD"])
def test_amount_and_currency_convert_like_the_warehouse(amount, currency):
    request = {**reference.request_of(event("t1", "a1", T)), "amount_usd": None, "amount": amount, "currency": currency}
    normalized = online.normalize_request(request)
    assert normalized["amount_usd"] == _warehouse_amount_usd(amount, currency)  # bit-identical, not close
    served = online.OnlineFeatureService(SqliteOnlineStore(":memory:")).get_online_features([request])[0]
    assert served["amount_usd"] == _warehouse_amount_usd(amount, currency)


def test_eur_request_converts_with_the_seed_rate():
    request = {**reference.request_of(event("t1", "a1", T)), "amount": 100.0, "currency": "EUR"}
    del request["amount_usd"]
    assert online.normalize_request(request)["amount_usd"] == 100.0 * 1.08 == _warehouse_amount_usd(100.0, "EUR")


@pytest.mark.parametrize("currency", ["XYZ", "eur", None])
def test_a_request_with_an_unknown_currency_raises_naming_it(currency):
    request = {**reference.request_of(event("t1", "a1", T)), "amount": 10.0, "currency": currency}
    del request["amount_usd"]
    with pytest.raises(ValueError, match=re.escape(repr(currency))) as info:
        online.normalize_request(request)
    assert repr(currency) in str(info.value)
    with pytest.raises(ValueError, match="has no fx rate"):
        online.OnlineFeatureService(SqliteOnlineStore(":memory:")).get_online_features([request])


def test_request_timestamps_in_any_form_mean_the_same_instant():
    base = reference.request_of(event("t1", "a1", T))
    forms = [T, T.replace(tzinfo=dt.UTC), "2024-05-10T12:00:00Z", "2024-05-10T14:00:00+02:00", "2024-05-10T12:00:00"]
    service = online.OnlineFeatureService(SqliteOnlineStore(":memory:"))
    served = service.get_online_features([{**base, "event_timestamp": ts} for ts in forms])
    assert all(f == served[0] for f in served)
    assert served[0]["hour_of_day"] == 12


# --------------------------------------------------------------------------- leakage by perturbation

CUTOFF = dt.datetime(2024, 8, 1, tzinfo=dt.UTC)
ENTITY = "entity"


def _base_history():
    events = [
        event("p1", "a1", T - 20 * DAY, amount_usd=30.0, merchant_id="m1"),
        event("p2", "a1", T - 2 * DAY, amount_usd=60.0, merchant_id="m2", country="GB"),
        event("p3", "a1", T - 30 * dt.timedelta(minutes=1), amount_usd=5.0, merchant_id="m3"),
        event(ENTITY, "a1", T, amount_usd=45.0, merchant_id="m2"),
        event("f1", "a1", T + 5 * DAY, amount_usd=70.0),  # after t: already in the table, never visible at t
        event("other", "a2", T - HOUR, amount_usd=3.0),
    ]
    snapshots = [snapshot("a1", T - 60 * DAY, home_country="US"), snapshot("a2", T - 60 * DAY)]
    labels = [
        label(ENTITY, False, T + 10 * DAY, T),
        label("p1", True, T - 10 * DAY, T - 20 * DAY),
        label("p2", False, T + DAY, T - 2 * DAY),
        label("p3", False, T + DAY, T - 30 * dt.timedelta(minutes=1)),
    ]
    return events, snapshots, labels


def _training_row(events, snapshots, labels) -> dict:
    con = reference.make_connection(events, snapshots, labels)
    try:
        build_training_set(con, TrainingSetSpec(cutoff=CUTOFF, label_maturity_days=45))
        cursor = con.execute("select * from features.training_set where transaction_id = ?", [ENTITY])
        names = [d[0] for d in cursor.description]
        rows = [dict(zip(names, r)) for r in cursor.fetchall()]
    finally:
        con.close()
    assert len(rows) == 1
    return {k: rows[0][k] for k in (*FEATURE_NAMES, "is_fraud", "labeled_at", "label_source")}


def _perturbations():
    """Changes at or after t (events, snapshots) or after the cutoff (labels): none may be visible at t."""
    return {
        "event at exactly t": lambda e, s, l: (
            e + [event("x_at_t", "a1", T, amount_usd=999.0, merchant_id="m9", country="JP")],
            s,
            l,
        ),
        "events just after t": lambda e, s, l: (
            e + [event("x1", "a1", T + US, amount_usd=888.0), event("x2", "a1", T + HOUR, merchant_id="m8")],
            s,
            l,
        ),
        "events far after t": lambda e, s, l: (
            e + [event("x3", "a1", T + 40 * DAY), event("x4", "a1", dt.datetime(2024, 7, 31, 23, 59))],
            s,
            l,
        ),
        "later event changed": lambda e, s, l: (
            [
                {**x, "amount_usd": 1e6, "merchant_id": "m7", "country": "BR"} if x["transaction_id"] == "f1" else x
                for x in e
            ],
            s,
            l,
        ),
        "later event moved to t": lambda e, s, l: (
            [{**x, "event_timestamp": T} if x["transaction_id"] == "f1" else x for x in e],
            s,
            l,
        ),
        "snapshot valid from t": lambda e, s, l: (e, s + [snapshot("a1", T, home_country="GB", age_band="65+")], l),
        "snapshot valid after t": lambda e, s, l: (
            e,
            s + [snapshot("a1", T + DAY, home_country="GB", age_band="65+")],
            l,
        ),
        "label revised after the cutoff": lambda e, s, l: (
            e,
            s,
            l + [label(ENTITY, True, CUTOFF.replace(tzinfo=None) + US, T)],
        ),
        "late labels of other transactions": lambda e, s, l: (
            e,
            s,
            l
            + [
                label("f1", True, CUTOFF.replace(tzinfo=None) + DAY, T + 5 * DAY),
                label("p2", True, CUTOFF.replace(tzinfo=None) + HOUR, T - 2 * DAY),
            ],
        ),
        "another account's events": lambda e, s, l: (
            e + [event("y1", "a2", T - HOUR, amount_usd=1.0), event("y2", "a3", T - US)],
            s,
            l,
        ),
    }


@pytest.mark.parametrize("perturbation", list(_perturbations()))
def test_the_training_row_at_t_ignores_changes_at_or_after_t_and_late_labels(perturbation):
    events, snapshots, labels = _base_history()
    before = _training_row(events, snapshots, labels)
    assert (before["txn_count_24h"], before["txn_count_7d"], before["txn_count_30d"], before["is_fraud"]) == (
        1,
        2,
        3,
        False,
    )  # the base row is what we think it is
    after = _training_row(*_perturbations()[perturbation](events, snapshots, labels))
    changed = {k: (before[k], after[k]) for k in before if before[k] != after[k]}
    assert not changed, f"{perturbation} leaked into the row at t: {changed}"


@pytest.mark.parametrize("perturbation", [p for p in _perturbations() if "label" not in p])
def test_online_and_point_in_time_features_at_t_ignore_changes_at_or_after_t(perturbation):
    events, snapshots, labels = _base_history()
    before = features_of(ENTITY, events, snapshots)
    perturbed_events, perturbed_snapshots, _ = _perturbations()[perturbation](events, snapshots, labels)
    # The online replay records the perturbing events too, before or after the entity as time says.
    after = features_of(ENTITY, perturbed_events, perturbed_snapshots)
    for impl in before:
        assert after[impl] == before[impl], (perturbation, impl)


def test_the_perturbation_check_would_catch_a_change_before_t():
    """Control: the same comparison does see a change strictly before t."""
    events, snapshots, labels = _base_history()
    before = _training_row(events, snapshots, labels)
    after = _training_row(events + [event("x_before", "a1", T - US, amount_usd=1.0)], snapshots, labels)
    assert after["txn_count_1h"] == before["txn_count_1h"] + 1
    assert after["seconds_since_last_txn"] == 1e-6
