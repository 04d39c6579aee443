"""The online-store resource and the asset's audits on both backends: rebuild, parity replay, scratch cleanup."""

from __future__ import annotations

import datetime as dt
import random

import pytest
from reference import event, make_connection, snapshot

from mlops_core.features.audits import materialize_online_store, replay_parity
from resources.online_store import OnlineStoreResource

T0 = dt.datetime(2026, 3, 1)


def history(n: int = 300, seed: int = 4):
    rng = random.Random(seed)
    events = [
        event(
            f"t{i:04d}",
            f"a{rng.randint(1, 6)}",
            T0 + dt.timedelta(minutes=rng.choice([rng.randint(0, 40 * 24 * 60), 60, 24 * 60])),
            amount_usd=rng.choice([3.5, 12.25, rng.random() * 400]),
            merchant_id=f"m{rng.randint(1, 5)}",
            country=rng.choice(["US", "GB", "FR"]),
        )
        for i in range(n)
    ]
    snapshots = [snapshot(f"a{k}", T0 - dt.timedelta(days=1), home_country="US") for k in range(1, 5)]
    snapshots.append(snapshot("a1", T0 + dt.timedelta(days=20), home_country="GB"))
    return events, snapshots


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def resource(request, tmp_path):
    if request.param == "sqlite":
        return OnlineStoreResource(backend="sqlite", sqlite_path=str(tmp_path / "online.sqlite"))
    server = request.getfixturevalue("redis_server")
    prefix = request.getfixturevalue("redis_prefix")
    return OnlineStoreResource(backend="redis", redis_url=server.url, key_prefix=prefix)


def test_rebuild_then_parity_replay_passes_and_leaves_production_state_alone(resource):
    events, snapshots = history()
    con = make_connection(events, snapshots)
    store = resource.open()
    try:
        summary = materialize_online_store(con, store)
        before = store.status()
        with resource.scratch() as scratch:
            report = replay_parity(con, scratch, transactions=120)
        after = store.status()
    finally:
        store.close()
    assert report.passed, report.describe()
    assert report.replayed >= 120 and report.float_features > 0 and report.exact_count_features > 0
    assert summary.events == before.events > 0
    # The replay wrote only to the scratch store.
    assert (after.events, after.watermark_us, after.materialized_at) == (
        before.events,
        before.watermark_us,
        before.materialized_at,
    )


@pytest.mark.redis
def test_redis_scratch_store_removes_its_keys(redis_server, redis_prefix):
    import redis

    resource = OnlineStoreResource(backend="redis", redis_url=redis_server.url, key_prefix=redis_prefix)
    events, snapshots = history(60)
    con = make_connection(events, snapshots)
    with resource.scratch() as scratch:
        replay_parity(con, scratch, transactions=20)
        client = redis.Redis.from_url(redis_server.url)
        assert list(client.scan_iter(f"{redis_prefix}:scratch:*"))
    assert list(client.scan_iter(f"{redis_prefix}:*")) == []
    client.close()


def test_a_broken_online_path_fails_parity(resource, monkeypatch):
    from mlops_core.features import audits

    events, snapshots = history()
    con = make_connection(events, snapshots)
    honest = audits.OnlineFeatureService.get_online_features

    def stale_by_an_hour(self, requests):
        # A serving bug: features computed as of an hour earlier than the transaction.
        shifted = [{**r, "event_timestamp": r["event_timestamp"] - dt.timedelta(hours=1)} for r in requests]
        return honest(self, shifted)

    monkeypatch.setattr(audits.OnlineFeatureService, "get_online_features", stale_by_an_hour)
    with resource.scratch() as scratch:
        report = replay_parity(con, scratch, transactions=120)
    assert not report.passed
    # Bursts arrive in one batch and shift together, so their counts agree; what the hour moves does not.
    assert {m.feature for m in report.mismatches} >= {"hour_of_day", "seconds_since_last_txn", "txn_count_24h"}


def test_resource_refuses_a_backend_without_its_location():
    with pytest.raises(ValueError, match="MLOPS_REDIS_URL"):
        OnlineStoreResource(backend="redis").open()
    with pytest.raises(ValueError, match="sqlite_path is empty"):
        OnlineStoreResource(backend="sqlite").open()
