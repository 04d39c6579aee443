"""Online equals offline whatever the traffic looks like (issue 14): bursts of one account in one
batch, same-instant ties, late transactions and re-sent transaction ids, on both stores.

Oracles, both independent of online.py:
- the offline point-in-time SQL (`reference.offline_features`) when every transaction arrives
  after the earlier ones of its account (in order, or late after a rebuild);
- for any arrival order, the pure-Python reference over what had arrived: the events recorded
  before the row's batch plus the batch itself, each transaction id once (its first version),
  never the row's own id.
"""

from __future__ import annotations

import datetime as dt
import math
import sqlite3
import uuid

import pytest
import reference
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import event, snapshot
from strategies import PROPERTY_SETTINGS, datasets, grid_timestamps

from mlops_core.features import online
from mlops_core.features.audits import materialize_online_store
from mlops_core.features.online import OnlineFeatureService, TooLateError
from mlops_core.features.stores import RedisOnlineStore, SqliteOnlineStore

T = dt.datetime(2024, 5, 10, 12, 0)  # naive UTC, a Friday
SECOND, HOUR, DAY = dt.timedelta(seconds=1), dt.timedelta(hours=1), dt.timedelta(days=1)
LATENESS_S = 7 * 86_400


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def new_store(request):
    """new_store() -> an empty store of the backend; all are closed (Redis keys deleted) at teardown."""
    made = []
    if request.param == "sqlite":

        def make():
            return SqliteOnlineStore(":memory:")
    else:
        server = request.getfixturevalue("redis_server")

        def make():
            return RedisOnlineStore(server.url, f"batches-{uuid.uuid4().hex[:12]}")

    def factory():
        store = make()
        made.append(store)
        return store

    yield factory
    for store in made:
        if isinstance(store, RedisOnlineStore):
            store.delete_all()
        store.close()


def serve(store, batch: list[dict]) -> dict[str, dict]:
    """Look a batch up, then record it, as serving does; features keyed by transaction id."""
    service = OnlineFeatureService(store)
    features = service.get_online_features([reference.request_of(e) for e in batch])
    service.record([reference.request_of(e) for e in batch])
    assert len(features) == len(batch)
    return {e["transaction_id"]: f for e, f in zip(batch, features)}


def offline(events, snapshots=()) -> dict[str, dict]:
    con = reference.make_connection(events, snapshots)
    try:
        return reference.offline_features(con)
    finally:
        con.close()


# --------------------------------------------------------------------------- bursts


def test_a_burst_of_one_account_in_one_batch_equals_the_offline_build(new_store):
    """The tester's case: the second of two transactions 300 s apart, sent together, saw neither the
    first (txn_count_1h 0, not 1) nor its time (seconds_since_last_txn 26699, not 300)."""
    history = [event("h1", "a1", T + 300 * SECOND - 26_699 * SECOND, amount_usd=12.5, merchant_id="m9")]
    burst = [
        event("b1", "a1", T, amount_usd=80.0, merchant_id="m1", country="GB"),
        event("b2", "a1", T + 300 * SECOND, amount_usd=0.1 + 0.2, merchant_id="m2"),
        event("b3", "a1", T + 300 * SECOND, amount_usd=999.0, merchant_id="m3"),  # the same instant as b2
        event("b4", "a1", T + 301 * SECOND, amount_usd=7.0, merchant_id="m2"),
    ]
    snapshots = [snapshot("a1", T - 60 * DAY, home_country="US")]
    store = new_store()
    store.rebuild(
        [online.event_record(reference.request_of(h)) for h in history],
        reference.account_snapshots(snapshots),
        reference.to_us(history[-1]["event_timestamp"]),
    )
    served = serve(store, burst[::-1])  # request order is not event order
    expected = offline(history + burst, snapshots)
    reference.assert_features_match(served, {t: expected[t] for t in served}, "burst")
    assert (served["b2"]["txn_count_1h"], served["b2"]["seconds_since_last_txn"]) == (1, 300.0)
    # b2 and b3 are tied: neither sees the other; b4 sees both, one second later.
    assert served["b3"]["txn_count_1h"] == 1 and served["b3"]["amount_max_24h"] == 80.0
    assert (served["b4"]["txn_count_1h"], served["b4"]["amount_sum_1h"], served["b4"]["seconds_since_last_txn"]) == (
        3,
        math.fsum([80.0, 0.1 + 0.2, 999.0]),
        1.0,
    )
    assert (
        served["b4"]["merchant_distinct_24h"] == 4 and served["b4"]["country_distinct_24h"] == 2
    )  # h1's m9 and US too


@settings(PROPERTY_SETTINGS)
@given(
    data=datasets(min_events=2),
    cuts=st.lists(st.integers(1, 6), min_size=1, max_size=24),
    shuffle=st.randoms(use_true_random=False),
)
def test_any_batching_in_event_order_equals_the_offline_build(new_store, data, cuts, shuffle):
    events, snapshots = data
    ordered = sorted(events, key=lambda e: (e["event_timestamp"], e["transaction_id"]))
    store = new_store()
    store.rebuild([], reference.account_snapshots(snapshots), 0)
    served: dict[str, dict] = {}
    position, sizes = 0, iter(cuts * len(ordered))
    while position < len(ordered):
        batch = ordered[position : position + next(sizes)]
        position += len(batch)
        shuffle.shuffle(batch)
        served |= serve(store, batch)
    reference.assert_features_match(served, offline(events, snapshots), "batches in event order")


# --------------------------------------------------------------------------- any arrival order, re-sent ids


@st.composite
def arrivals(draw):
    """(batches, snapshots): a dataset's events in any arrival order, cut into batches, with re-sent
    ids (an exact retry, or another time, amount or account) anywhere in the stream."""
    events, snapshots = draw(datasets(min_events=2, max_events=16))
    stream = list(draw(st.permutations(events)))
    for _ in range(draw(st.integers(0, 5))):
        original = draw(st.sampled_from(events))
        kind = draw(st.sampled_from(["retry", "time", "amount", "account"]))
        copy = dict(original)
        if kind == "time":
            copy["event_timestamp"] = draw(grid_timestamps())
        elif kind == "amount":
            copy["amount_usd"] = original["amount_usd"] * 3 + 0.5
        elif kind == "account":
            copy["account_id"] = draw(st.sampled_from([a for a in ("a1", "a2", "a3") if a != original["account_id"]]))
        stream.insert(draw(st.integers(0, len(stream))), copy)
    batches, position = [], 0
    while position < len(stream):
        size = draw(st.integers(1, 5))
        batches.append(stream[position : position + size])
        position += size
    return batches, snapshots


def expected_on_arrival(batches, snapshots) -> list[dict]:
    """Per row in arrival order: the reference over what had arrived, first version of each id."""
    held: dict[str, dict] = {}
    out = []
    for batch in batches:
        version = dict(held)
        for e in batch:
            version.setdefault(e["transaction_id"], e)
        for e in batch:
            visible = [v for v in version.values() if v["transaction_id"] != e["transaction_id"]]
            out.append(reference.reference_features(e, visible, snapshots))
        held = version
    return out


@settings(PROPERTY_SETTINGS)
@given(data=arrivals())
def test_any_arrival_order_gives_each_row_what_had_arrived_each_id_once(new_store, data):
    batches, snapshots = data
    store = new_store()
    store.rebuild([], reference.account_snapshots(snapshots), 0)
    service = OnlineFeatureService(store)
    served = []
    for batch in batches:
        requests = [reference.request_of(e) for e in batch]
        served += service.get_online_features(requests)
        service.record(requests)
    expected = expected_on_arrival(batches, snapshots)
    rows = [e for batch in batches for e in batch]
    report = [
        f"  row {i} {rows[i]['transaction_id']}: {p}"
        for i in range(len(rows))
        if (p := reference.feature_mismatches(served[i], expected[i]))
    ]
    assert not report, "online differs from what had arrived:\n" + "\n".join(report[:10])
    # The store holds each id once, in its first version.
    firsts: dict[str, dict] = {}
    for e in rows:
        firsts.setdefault(e["transaction_id"], e)
    held = store.read(["a1", "a2", "a3"], 0, 2**62)
    stored = sorted((a, t, txid) for a, h in held.items() for t, txid in zip(h.ts_us, h.transaction_ids))
    assert stored == sorted((e["account_id"], reference.to_us(e["event_timestamp"]), t) for t, e in firsts.items())
    assert store.status().events == len(firsts)


def test_a_resent_id_with_another_time_or_amount_counts_once(new_store):
    """The tester's case: a re-sent id with another timestamp counted twice in every later window."""
    store = new_store()
    service = OnlineFeatureService(store)
    first = event("x", "a1", T, amount_usd=10.0, merchant_id="m1")
    assert service.record([reference.request_of(first)]) == 1
    resent = {**first, "event_timestamp": T + 10 * SECOND, "amount_usd": 25.0, "merchant_id": "m2"}
    on_other_account = {**first, "account_id": "a2", "event_timestamp": T + 20 * SECOND}
    answers = serve(store, [resent])  # its own answer never counts its first version
    assert answers["x"]["txn_count_1h"] == 0 and answers["x"]["seconds_since_last_txn"] == 30 * 86_400.0
    assert serve(store, [on_other_account])["x"]["txn_count_1h"] == 0
    assert service.record([reference.request_of(resent), reference.request_of(on_other_account)]) == 0
    later = event("y", "a1", T + HOUR - SECOND)
    f = serve(store, [later])["y"]
    # The first version, once: 10.0 at T (not 25.0, not twice), merchant m1 only.
    assert (f["txn_count_1h"], f["amount_sum_1h"], f["merchant_distinct_24h"], f["seconds_since_last_txn"]) == (
        1,
        10.0,
        1,
        3599.0,
    )
    assert store.status().events == 2  # x and y
    assert serve(store, [event("z", "a2", T + HOUR)])["z"]["txn_count_1h"] == 0  # x was never recorded on a2


def test_a_repeated_id_in_one_batch_counts_once_first_version_in_request_order(new_store):
    store = new_store()
    x_first = event("x", "a1", T, amount_usd=5.0)
    x_again = {**x_first, "event_timestamp": T - 10 * SECOND, "amount_usd": 500.0}
    y = event("y", "a1", T + SECOND)
    served = OnlineFeatureService(store).get_online_features([reference.request_of(e) for e in (x_first, x_again, y)])
    assert (served[2]["txn_count_1h"], served[2]["amount_sum_1h"]) == (1, 5.0)
    assert served[1]["txn_count_1h"] == 0  # the repeat never counts the version in effect (itself)
    assert OnlineFeatureService(store).record([reference.request_of(e) for e in (x_first, x_again, y)]) == 2
    assert store.read(["a1"], 0, 2**62)["a1"].amount_usd == [5.0, 10.0]


def test_a_rebuild_replaces_an_online_version_of_an_id_with_the_warehouse_one(new_store):
    """Online the first recorded version wins; the warehouse's (what training sees) replaces it."""
    store = new_store()
    watermark = reference.to_us(T)
    store.record_events(
        [
            online.EventRecord("a1", watermark + 60_000_000, "x", 99.0, "m1", "US"),
            online.EventRecord("a1", watermark + 1, "kept", 1.0, "m1", "US"),
        ]
    )
    store.rebuild([online.EventRecord("a2", watermark - 5, "x", 3.0, "m2", "GB")], [], watermark)
    held = store.read(["a1", "a2"], 0, 2**62)
    assert held["a1"].transaction_ids == ["kept"]
    assert (held["a2"].transaction_ids, held["a2"].amount_usd) == (["x"], [3.0])
    # The id stays unique after the rebuild: a re-send is still ignored.
    assert store.record_events([online.EventRecord("a1", watermark + 120_000_000, "x", 7.0, "m1", "US")]) == 0
    assert store.status().events == 2


def test_a_sqlite_file_written_before_ids_were_unique_keeps_the_first_version(tmp_path):
    path = tmp_path / "old.sqlite"
    con = sqlite3.connect(path)
    con.executescript(
        """create table events (account_id text not null, ts_us integer not null, transaction_id text not null,
               amount_usd real not null, merchant_id text not null, country text not null,
               primary key (account_id, ts_us, transaction_id)) without rowid;
           insert into events values ('a1', 200, 'x', 2.0, 'm', 'US'), ('a1', 100, 'x', 1.0, 'm', 'US'),
                                     ('a2', 100, 'x', 3.0, 'm', 'US'), ('a1', 150, 'y', 4.0, 'm', 'US');"""
    )
    con.close()
    store = SqliteOnlineStore(path)
    try:
        held = store.read(["a1", "a2"], 0, 1_000)
        assert (held["a1"].transaction_ids, held["a1"].amount_usd) == (["x", "y"], [1.0, 4.0])
        assert "a2" not in held
        assert store.record_events([online.EventRecord("a2", 300, "x", 9.0, "m", "US")]) == 0
    finally:
        store.close()


# --------------------------------------------------------------------------- late transactions


def _thirty_day_history(t: dt.datetime, n: int) -> list[dict]:
    """n events of a1 spread over [t - 30d, t), the oldest exactly 30 days before t."""
    step = (30 * DAY) / n
    return [
        event(f"h{i:03d}", "a1", t - 30 * DAY + i * step, amount_usd=1.0 + i % 7, merchant_id=f"m{i % 5}")
        for i in range(n)
    ]


def test_a_late_transaction_within_the_allowed_lateness_gets_its_whole_window(new_store):
    """The tester's case: a transaction older than the store's newest event lost the part of its
    30-day window older than newest - 30 days (txn_count_30d 88, not 91)."""
    late = event("late", "a1", T, amount_usd=42.0)
    history = _thirty_day_history(T, 91)
    newer = [
        event(f"n{i}", "a1", T + i * DAY, amount_usd=5.0) for i in range(1, 7)
    ]  # the warehouse's newest is T + 6 days
    snapshots = [snapshot("a1", T - 90 * DAY)]
    con = reference.make_connection(history + newer, snapshots)
    store = new_store()
    summary = materialize_online_store(con, store, allowed_lateness_seconds=LATENESS_S)
    con.close()
    assert store.status().retained_since_us == reference.to_us(T + 6 * DAY - 37 * DAY) and summary.events == 97
    served = serve(store, [late])
    expected = offline(history + newer + [late], snapshots)["late"]
    reference.assert_features_match(served, {"late": expected}, "late transaction")
    assert served["late"]["txn_count_30d"] == 91
    # Recorded, it counts in a later lookup's window too.
    after = serve(store, [event("after", "a1", T + 6 * DAY + HOUR)])["after"]
    assert (
        after["txn_count_30d"]
        == offline(history + newer + [late, event("after", "a1", T + 6 * DAY + HOUR)], snapshots)["after"][
            "txn_count_30d"
        ]
    )


@pytest.mark.parametrize("lateness_days", [0, 2, 7])
def test_the_allowed_lateness_is_the_boundary_of_what_is_scored(new_store, lateness_days):
    watermark = T + 10 * DAY
    history = _thirty_day_history(watermark, 60) + [event("newest", "a1", watermark)]
    con = reference.make_connection(history, [snapshot("a1", T - 90 * DAY)])
    store = new_store()
    materialize_online_store(con, store, allowed_lateness_seconds=lateness_days * 86_400)
    con.close()
    oldest_ok = watermark - lateness_days * DAY
    on_the_bound = event("on_the_bound", "a1", oldest_ok)
    served = serve(store, [on_the_bound])
    expected = offline(history + [on_the_bound], [snapshot("a1", T - 90 * DAY)])["on_the_bound"]
    reference.assert_features_match(served, {"on_the_bound": expected}, f"exactly {lateness_days} days late")
    assert served["on_the_bound"]["txn_count_30d"] == expected["txn_count_30d"] > 0
    before = store.status()
    too_late = event("too_late", "a1", oldest_ok - dt.timedelta(microseconds=1))
    fine = event("fine", "a2", watermark)
    service = OnlineFeatureService(store)
    with pytest.raises(TooLateError) as refused:
        service.get_online_features([reference.request_of(fine), reference.request_of(too_late)])
    assert refused.value.rows == [1] and refused.value.transaction_ids == ["too_late"]
    assert refused.value.earliest == oldest_ok.replace(tzinfo=dt.UTC)
    assert "too_late" in str(refused.value) and "score older transactions offline" in str(refused.value)
    assert store.status().events == before.events  # nothing recorded, nothing changed


def test_a_store_never_rebuilt_refuses_nothing(new_store):
    store = new_store()
    store.record_events([online.EventRecord("a1", reference.to_us(T), "x", 1.0, "m", "US")])
    ancient = event("ancient", "a1", T - 400 * DAY)
    assert serve(store, [ancient])["ancient"]["txn_count_30d"] == 0  # nothing was ever dropped


@settings(PROPERTY_SETTINGS, max_examples=25)
@given(data=datasets(min_events=3), pick=st.randoms(use_true_random=False))
def test_late_arrivals_after_a_rebuild_equal_the_offline_build(new_store, data, pick):
    """On-time rows arrive in event order; a rebuild from the warehouse without the late ones
    prunes to its retention; then the late rows arrive. On-time rows equal the offline build
    without the late rows, late ones the offline build over everything, or are refused if
    older than the allowed lateness before the rebuild's watermark."""
    events, snapshots = data
    ordered = sorted(events, key=lambda e: (e["event_timestamp"], e["transaction_id"]))
    late = [e for e in ordered[:-1] if pick.random() < 0.4]
    late_ids = {e["transaction_id"] for e in late}
    on_time = [e for e in ordered if e["transaction_id"] not in late_ids]
    lateness_s = pick.choice([0, 86_400, LATENESS_S])
    store = new_store()
    store.rebuild([], reference.account_snapshots(snapshots), 0)
    served = {}
    for e in on_time:
        served |= serve(store, [e])
    reference.assert_features_match(served, offline(on_time, snapshots), "on time")
    con = reference.make_connection(on_time, snapshots)
    materialize_online_store(con, store, allowed_lateness_seconds=lateness_s)
    con.close()
    oldest_ok = on_time[-1]["event_timestamp"] - dt.timedelta(seconds=lateness_s)
    accepted = [e for e in late if e["event_timestamp"] >= oldest_ok]
    for e in late:
        if e["event_timestamp"] < oldest_ok:
            with pytest.raises(TooLateError):
                serve(store, [e])
    late_served = {}
    for e in accepted:
        late_served |= serve(store, [e])
    everything = offline(on_time + accepted, snapshots)
    reference.assert_features_match(late_served, {t: everything[t] for t in late_served}, "late")
