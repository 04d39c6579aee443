"""The online stores behind serving: SqliteOnlineStore on a file and RedisOnlineStore on a real redis-server.

Every behavioural test runs against both stores (the Redis variants carry the `redis`
marker and use a key prefix of their own). "Reopen" means a new store object on the
same file / URL + prefix: what a restarted serving process does.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid

import pytest
import reference
from hypothesis import given, settings
from strategies import PROPERTY_SETTINGS, datasets

from mlops_core.features import online
from mlops_core.features.online import AccountEvents, AccountSnapshot, EventRecord
from mlops_core.features.spec import MAX_WINDOW_SECONDS, spec_version
from mlops_core.features.stores import DEFAULT_ALLOWED_LATENESS_US, RedisOnlineStore, SqliteOnlineStore

S = 1_000_000  # microseconds per second
H = 3_600 * S
D = 86_400 * S
T = reference.to_us(dt.datetime(2024, 6, 1, 12, 0))  # the offline watermark of the rebuild tests
LATENESS = DEFAULT_ALLOWED_LATENESS_US  # 7 days
HORIZON = T - MAX_WINDOW_SECONDS * S - LATENESS  # 30 + 7 days before the watermark

WIDE = (0, 2**62)  # read bounds covering everything


def ev(
    txid: str, ts_us: int, account: str = "a1", amount: float = 10.0, merchant: str = "m1", country: str = "US"
) -> EventRecord:
    return EventRecord(account, ts_us, txid, amount, merchant, country)


def snap(
    valid_from_us: int, home: str | None = "US", age: str | None = "25-34", created_us: int | None = None
) -> AccountSnapshot:
    return AccountSnapshot(valid_from_us, created_us if created_us is not None else valid_from_us - 100 * D, home, age)


def held(store, accounts=("a1", "a2", "a3")) -> dict[str, list[tuple]]:
    """Every event the store holds per account, as (ts, txid, amount, merchant, country) in time order."""
    out = {}
    for account, history in store.read(list(accounts), *WIDE).items():
        out[account] = list(
            zip(history.ts_us, history.transaction_ids, history.amount_usd, history.merchant_id, history.country)
        )
    return out


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def open_store(request, tmp_path):
    """open_store() -> a new store object on the same state; .kind is 'sqlite' or 'redis'."""
    if request.param == "sqlite":
        path = tmp_path / "serving" / "online.sqlite"

        def make():
            return SqliteOnlineStore(path)
    else:
        server = request.getfixturevalue("redis_server")
        prefix = request.getfixturevalue("redis_prefix")

        def make():
            return RedisOnlineStore(server.url, prefix)

    opened = []

    def factory():
        store = make()
        opened.append(store)
        return store

    factory.kind = request.param
    yield factory
    for store in opened:
        try:
            store.close()
        except Exception:
            pass


# --------------------------------------------------------------------------- persistence


def test_state_survives_close_and_reopen(open_store):
    store = open_store()
    store.rebuild(
        [ev("w1", T - 2 * H), ev("w2", T - H, "a2", 5.5, "m2", "GB")],
        [("a1", snap(T - 10 * D)), ("a2", snap(T - D, "GB", "65+"))],
        T,
    )
    assert store.record_events([ev("o1", T + H, amount=0.1 + 0.2), ev("o2", T + 2 * H, "a3")]) == 2
    before_read, before_status = store.read(["a1", "a2", "a3", "zz"], *WIDE), store.status()
    request = reference.request_of(reference.event("q", "a1", dt.datetime(2024, 6, 1, 15, 0)))
    before_features = online.OnlineFeatureService(store).get_online_features([request])
    store.close()

    reopened = open_store()  # a restarted serving process
    assert reopened.read(["a1", "a2", "a3", "zz"], *WIDE) == before_read
    assert reopened.status() == before_status
    assert online.OnlineFeatureService(reopened).get_online_features([request]) == before_features
    assert before_features[0]["txn_count_24h"] == 2 and before_features[0]["age_band"] == "25-34"
    # floats round-trip exactly (0.1 + 0.2 is not 0.3)
    assert reopened.read(["a1"], *WIDE)["a1"].amount_usd[-1] == 0.1 + 0.2


@pytest.mark.redis
def test_redis_state_survives_a_redis_restart_with_appendonly(redis_launcher, tmp_path, redis_prefix):
    directory = tmp_path / "aof"
    first = redis_launcher("--appendonly", "yes", "--appendfsync", "always", directory=directory)
    store = RedisOnlineStore(first.url, redis_prefix)
    store.rebuild([ev("w1", T - H)], [("a1", snap(T - D))], T)
    store.record_events([ev("o1", T + H)])
    before_read, before_status = store.read(["a1"], *WIDE), store.status()
    store.close()
    first.stop()
    assert first.process.returncode is not None

    second = redis_launcher("--appendonly", "yes", directory=directory)  # the same data directory
    restarted = RedisOnlineStore(second.url, redis_prefix)
    assert restarted.read(["a1"], *WIDE) == before_read
    assert restarted.status() == before_status
    assert held(restarted) == {"a1": [(T - H, "w1", 10.0, "m1", "US"), (T + H, "o1", 10.0, "m1", "US")]}


# --------------------------------------------------------------------------- record_events


def test_record_events_is_idempotent_per_transaction(open_store):
    store = open_store()
    assert store.record_events([]) == 0
    assert store.record_events([ev("t1", T)]) == 1
    assert store.record_events([ev("t1", T)]) == 0  # a retried request
    assert store.record_events([ev("t2", T + S), ev("t2", T + S)]) == 1  # duplicated within one batch
    assert store.record_events([ev("t1", T), ev("t3", T + 2 * S)]) == 1
    assert held(store) == {
        "a1": [(T, "t1", 10.0, "m1", "US"), (T + S, "t2", 10.0, "m1", "US"), (T + 2 * S, "t3", 10.0, "m1", "US")]
    }
    assert store.status().events == 3


def test_a_retry_of_a_held_transaction_with_other_field_values_is_ignored(open_store):
    """The interface: "a transaction already held is ignored". A retry may carry a re-converted amount."""
    store = open_store()
    service = online.OnlineFeatureService(store)
    first = {
        **reference.request_of(reference.event("t1", "a1", dt.datetime(2024, 6, 1, 10, 0))),
        "amount_usd": None,
        "amount": 19.99,
        "currency": "EUR",
    }
    retry = {
        **first,
        "amount_usd": 21.59,
        "amount": None,
        "currency": None,
    }  # the client now sends a rounded USD amount
    assert online.normalize_request(first)["amount_usd"] != 21.59
    assert service.record([first]) == 1
    assert service.record([retry]) == 0
    later = {**first, "transaction_id": "t2", "event_timestamp": dt.datetime(2024, 6, 1, 11, 0)}
    assert service.get_online_features([later])[0]["txn_count_24h"] == 1
    assert store.status().events == 1


def test_recording_through_the_service_counts_a_transaction_once(open_store):
    store = open_store()
    service = online.OnlineFeatureService(store)
    earlier = reference.request_of(reference.event("t1", "a1", dt.datetime(2024, 6, 1, 10, 0), amount_usd=7.0))
    later = reference.request_of(reference.event("t2", "a1", dt.datetime(2024, 6, 1, 11, 0)))
    assert service.record([earlier]) == 1
    assert service.record([earlier]) == 0
    features = service.get_online_features([later])[0]
    assert (features["txn_count_1h"], features["txn_count_24h"], features["amount_sum_24h"]) == (1, 1, 7.0)


# --------------------------------------------------------------------------- rebuild


def test_rebuild_replaces_the_warehouse_period_and_keeps_newer_online_events(open_store):
    store = open_store()
    store.record_events(
        [
            ev("o_ancient", T - 40 * D),  # older than the longest window plus the lateness: pruned
            ev("o_old", T - H),  # recorded online, the warehouse is authoritative up to T: dropped
            ev("dup", T - 3 * H, amount=10.0),  # the warehouse has it with its final amount
            ev("o_at_watermark", T),  # at the watermark: the warehouse period, dropped
            ev("o_new1", T + 1),  # newer than the warehouse: kept
            ev("o_new2", T + H, "a2"),
        ]
    )
    warehouse = [
        ev("w_too_old", HORIZON - 1),  # 37 days + 1 us before the watermark: not loaded
        ev("w_edge", HORIZON),  # exactly 37 days before: needed by a lookup 7 days before T, loaded
        ev("dup", T - 3 * H, amount=10.5),
        ev("w_mid", T - 2 * H, "a2", 3.0, "m2", "GB"),
        ev("w_at_watermark", T),
    ]
    store.rebuild(warehouse, [("a1", snap(T - D))], T)
    assert held(store) == {
        "a1": [
            (HORIZON, "w_edge", 10.0, "m1", "US"),
            (T - 3 * H, "dup", 10.5, "m1", "US"),
            (T, "w_at_watermark", 10.0, "m1", "US"),
            (T + 1, "o_new1", 10.0, "m1", "US"),
        ],
        "a2": [(T - 2 * H, "w_mid", 3.0, "m2", "GB"), (T + H, "o_new2", 10.0, "m1", "US")],
    }
    assert store.status().events == 6


def test_rebuild_prunes_events_older_than_the_longest_window_plus_the_allowed_lateness(open_store):
    store = open_store()
    store.rebuild([ev("a", HORIZON - 1), ev("b", HORIZON), ev("c", T)], [], T)
    assert [row[1] for row in held(store)["a1"]] == ["b", "c"]
    assert (store.status().retained_since_us, store.status().allowed_lateness_us) == (HORIZON, LATENESS)
    # A later rebuild moves the horizon: what the first one kept is now pruned.
    store.rebuild([ev("b", HORIZON), ev("c", T), ev("d", T + 2 * D)], [], T + 2 * D)
    assert [row[1] for row in held(store)["a1"]] == ["c", "d"]


def test_rebuild_retention_follows_the_allowed_lateness(open_store):
    store = open_store()
    thirty_days = MAX_WINDOW_SECONDS * S
    events = [
        ev("w_37d", T - thirty_days - 7 * D),
        ev("w_32d", T - thirty_days - 2 * D),
        ev("w_30d", T - thirty_days),
        ev("w_30d_1us", T - thirty_days - 1),
    ]
    store.rebuild(events, [], T, allowed_lateness_us=2 * D)
    assert [row[1] for row in held(store)["a1"]] == ["w_32d", "w_30d_1us", "w_30d"]
    assert store.status().retained_since_us == T - thirty_days - 2 * D
    store.rebuild(events, [], T, allowed_lateness_us=0)
    assert [row[1] for row in held(store)["a1"]] == ["w_30d"]
    with pytest.raises(ValueError, match="allowed lateness must be >= 0"):
        store.rebuild(events, [], T, allowed_lateness_us=-1)
    assert [row[1] for row in held(store)["a1"]] == ["w_30d"]  # a refused rebuild changes nothing


def test_rebuild_replaces_all_snapshots(open_store):
    store = open_store()
    store.rebuild([], [("a1", snap(T - 2 * D)), ("a1", snap(T - D, "GB")), ("a2", snap(T - D))], T)
    assert [s.home_country for s in store.read(["a1"], *WIDE)["a1"].snapshots] == ["US", "GB"]
    store.rebuild([], [("a1", snap(T, "FR", "65+"))], T)
    histories = store.read(["a1", "a2"], *WIDE)
    assert "a2" not in histories  # no events, no snapshots: an unknown account again
    assert histories["a1"].snapshots == [snap(T, "FR", "65+")]
    assert store.status().accounts == 1


def test_rebuild_is_what_a_lookup_sees(open_store):
    """After a rebuild, features combine warehouse events and newer online ones."""
    store = open_store()
    store.record_events([ev("o1", T + H, amount=4.0)])
    store.rebuild([ev("w1", T - 10 * H, amount=1.0), ev("w2", T - 13 * H, amount=2.0)], [("a1", snap(T - D, "GB"))], T)
    request = {**reference.request_of(reference.event("q", "a1", dt.datetime(2024, 6, 2, 0, 0), country="FR"))}
    features = online.OnlineFeatureService(store).get_online_features([request])[0]
    assert reference.to_us(dt.datetime(2024, 6, 2, 0, 0)) - T == 12 * H
    assert features["txn_count_24h"] == 2 and features["amount_sum_24h"] == 5.0  # w1 (22h before) + o1; w2 is 25h old
    assert features["txn_count_7d"] == 3 and features["is_foreign"] == 1


# --------------------------------------------------------------------------- status


def test_status_of_an_empty_store(open_store):
    status = open_store().status()
    assert status.watermark_us is None and status.watermark is None
    assert status.offline_watermark_us is None and status.materialized_at is None and status.last_recorded_at is None
    assert (status.events, status.accounts, status.spec_version) == (0, 0, None)


def test_status_reports_watermarks_times_sizes_and_spec_version(open_store):
    store = open_store()
    before = time.time()
    store.rebuild([ev("w1", T - H), ev("w2", T - 2 * H, "a2")], [("a1", snap(T - D)), ("a3", snap(T - D))], T)
    after = time.time()
    status = store.status()
    assert status.offline_watermark_us == T
    assert status.watermark_us == T - H  # the newest event held
    assert status.watermark == dt.datetime(2024, 6, 1, 11, 0, tzinfo=dt.UTC)
    assert before <= status.materialized_at <= after
    assert status.spec_version == spec_version()
    assert (status.events, status.accounts) == (2, 2)
    assert status.last_recorded_at is None

    before = time.time()
    store.record_events([ev("o1", T + 5 * H)])
    after = time.time()
    status = store.status()
    assert status.watermark_us == T + 5 * H
    assert before <= status.last_recorded_at <= after
    assert status.offline_watermark_us == T  # recording does not touch the offline watermark

    store.record_events([ev("late", T + H)])  # an out-of-order arrival never moves the watermark back
    assert store.status().watermark_us == T + 5 * H

    # a rebuild keeps the newer online event, and so its watermark
    store.rebuild([ev("w1", T - H)], [], T)
    status = store.status()
    assert (status.watermark_us, status.offline_watermark_us, status.events) == (T + 5 * H, T, 3)


def test_watermark_after_a_rebuild_that_leaves_no_event_is_none(open_store):
    """watermark_us is documented as the newest event time held; with no event held there is none."""
    store = open_store()
    store.record_events([ev("o1", T - H)])
    store.rebuild([], [("a1", snap(T - D))], T)  # the warehouse replaces o1 and has no event of its own
    status = store.status()
    assert status.events == 0
    assert status.watermark_us is None


# --------------------------------------------------------------------------- read


def test_read_bounds_are_since_inclusive_until_exclusive(open_store):
    store = open_store()
    since, until = T, T + H
    store.record_events(
        [
            ev("before", since - 1),
            ev("at_since", since),
            ev("inside", since + 1),
            ev("last", until - 1),
            ev("at_until", until),
        ]
    )
    assert [row[1] for row in held(store)["a1"]] == ["before", "at_since", "inside", "last", "at_until"]
    history = store.read(["a1"], since, until)["a1"]
    assert history.transaction_ids == ["at_since", "inside", "last"]
    assert history.ts_us == [since, since + 1, until - 1]


def test_read_returns_known_accounts_only_with_events_in_time_order(open_store):
    store = open_store()
    store.rebuild([], [("a2", snap(T - D, "GB", "18-24"))], T - D)
    # Out of order, and two at one instant: returned by (time, transaction_id).
    store.record_events([ev("t3", T + 2 * S), ev("t2", T), ev("t1", T), ev("x", T, "a3")])
    histories = store.read(["a1", "a2", "nobody"], T, T + H)
    assert set(histories) == {"a1", "a2"}  # a2 has only a snapshot; nobody is unknown; a3 not asked
    assert histories["a1"].transaction_ids == ["t1", "t2", "t3"] and histories["a1"].snapshots == []
    assert histories["a2"] == AccountEvents(snapshots=[snap(T - D, "GB", "18-24")])


# --------------------------------------------------------------------------- parity


@pytest.mark.redis
@settings(PROPERTY_SETTINGS, max_examples=15)
@given(data=datasets())
def test_sqlite_and_redis_stores_serve_identical_features(redis_server, data):
    events, snapshots = data
    from_sqlite = reference.online_replay(events, snapshots, SqliteOnlineStore(":memory:"))
    redis_store = RedisOnlineStore(redis_server.url, f"parity-{uuid.uuid4().hex[:12]}")
    try:
        from_redis = reference.online_replay(events, snapshots, redis_store)
    finally:
        redis_store.close()
    assert from_redis == from_sqlite  # exactly equal, floats included
    reference.assert_features_match(from_redis, reference.reference_all(events, snapshots), "online replay on redis")


def _file_size(path) -> int:
    return path.stat().st_size


def test_with_a_checkpoint_interval_the_wal_is_checkpointed_outside_the_recording_commits(tmp_path, monkeypatch):
    """What `mlops serve` opens: sqlite's automatic checkpoint (a copy of the WAL and two fsyncs inside one
    recording commit in a few hundred, on the request's thread) is off, and a thread copies the WAL into the
    file instead. Its checkpoints are not commits: the replica is not reloaded because of them."""
    path = tmp_path / "online.sqlite"
    store = SqliteOnlineStore(path, checkpoint_interval=0.05)
    loads = []
    real_load = store._load_all
    monkeypatch.setattr(store, "_load_all", lambda: loads.append(1) or real_load())
    try:
        assert store._con.execute("pragma wal_autocheckpoint").fetchone() == (0,)
        empty = _file_size(path)
        for i in range(300):  # a few hundred pages of WAL, past what one page of the file holds
            assert store.record_events([ev(f"t{i:04d}", T + i * S, account=f"a{i % 7}", merchant="m" * 200)]) == 1
        deadline = time.monotonic() + 10
        # The file grows while the checkpoint copies; its count moves once the copy returns: wait for both.
        while _file_size(path) <= empty or store.checkpoints.checkpoints == 0:
            assert time.monotonic() < deadline, "no checkpoint copied the WAL into the database file"
            time.sleep(0.02)
        assert store.checkpoints.last_error is None
        time.sleep(0.2)  # more checkpoint intervals pass
        # Every recorded event is read back from the replica, which was loaded once (by the first record).
        assert sum(len(h.ts_us) for h in store.read([f"a{k}" for k in range(7)], *WIDE).values()) == 300
        assert loads == [1]
    finally:
        store.close()
    assert not store.checkpoints._thread.is_alive()
    reopened = SqliteOnlineStore(path)
    try:
        assert reopened._con.execute("pragma wal_autocheckpoint").fetchone() == (1000,)  # the default elsewhere
        assert reopened.checkpoints is None
        assert reopened._con.execute("select count(*) from events").fetchone() == (300,)
    finally:
        reopened.close()


def test_the_checkpointer_checkpoints_only_after_commits_and_refuses_a_zero_interval(tmp_path):
    from mlops_core.wal_checkpoints import WalCheckpointer

    path = tmp_path / "online.sqlite"
    store = SqliteOnlineStore(path, checkpoint_interval=0.02)
    try:
        time.sleep(0.2)  # ten intervals without a commit
        assert store.checkpoints.checkpoints == 0
        store.record_events([ev("t1", T)])
        deadline = time.monotonic() + 10
        while store.checkpoints.checkpoints == 0:
            assert time.monotonic() < deadline, "a commit was never followed by a checkpoint"
            time.sleep(0.01)
    finally:
        store.close()
    with pytest.raises(ValueError, match="interval must be > 0"):
        WalCheckpointer(path, lambda: 0, interval=0)


def test_commits_made_before_the_checkpoint_thread_runs_are_checkpointed(tmp_path):
    """On a loaded machine the thread may first run after the writer has committed everything it had: those
    commits must still be checkpointed. The thread here is held until the writer is done."""
    import sqlite3
    import threading

    from mlops_core.wal_checkpoints import WalCheckpointer

    path = tmp_path / "log.sqlite"
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("pragma journal_mode=wal")
    con.execute("pragma wal_autocheckpoint=0")
    con.execute("create table t (x text)")
    committed = 0
    writer_done = threading.Event()
    constructing_thread = threading.get_ident()

    def commits() -> int:
        if threading.get_ident() != constructing_thread:
            writer_done.wait(10)
        return committed

    checkpointer = WalCheckpointer(path, commits, interval=0.02)
    try:
        empty = _file_size(path)
        for _ in range(50):
            con.execute("insert into t values (?)", ["x" * 1000])
            committed += 1
        writer_done.set()
        deadline = time.monotonic() + 10
        while checkpointer.checkpoints == 0 or _file_size(path) <= empty:
            assert time.monotonic() < deadline, "commits made before the thread ran were never checkpointed"
            time.sleep(0.01)
        assert checkpointer.last_error is None
    finally:
        writer_done.set()
        checkpointer.stop()
        con.close()
