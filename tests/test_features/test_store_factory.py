"""open_online_store is the one place that picks an online store class: the Dagster resource and the
serving process both open their store through it."""

import pytest

from mlops_core.features.stores import (
    DEFAULT_REDIS_PREFIX,
    RedisOnlineStore,
    SqliteOnlineStore,
    open_online_store,
)
from mlops_core.serving import server
from mlops_core.settings import Settings
from mlops_core.wal_checkpoints import CHECKPOINT_SECONDS
from resources.online_store import OnlineStoreResource


def test_sqlite_opens_the_file(tmp_path):
    store = open_online_store("sqlite", sqlite_path=tmp_path / "store.sqlite")
    try:
        assert isinstance(store, SqliteOnlineStore)
        assert (tmp_path / "store.sqlite").exists()
    finally:
        store.close()


def test_redis_keeps_url_and_prefix_without_connecting():
    # redis-py connects on the first command: nothing listens on port 1, and nothing is asked.
    store = open_online_store("redis", redis_url="redis://127.0.0.1:1/0", key_prefix="p")
    assert isinstance(store, RedisOnlineStore)
    assert (store.url, store.prefix) == ("redis://127.0.0.1:1/0", "p")
    assert open_online_store("redis", redis_url="redis://127.0.0.1:1/0").prefix == DEFAULT_REDIS_PREFIX


@pytest.mark.parametrize(
    ("backend", "kwargs", "message"),
    [
        ("redis", {}, "redis_url is empty: set MLOPS_REDIS_URL"),
        ("redis", {"redis_url": ""}, "redis_url is empty"),
        ("sqlite", {}, "sqlite_path is empty"),
        ("memcached", {"sqlite_path": "x"}, "must be one of"),
    ],
)
def test_a_missing_location_or_an_unknown_backend_is_named(backend, kwargs, message):
    with pytest.raises(ValueError, match=message):
        open_online_store(backend, **kwargs)


def test_the_resource_and_the_server_open_the_same_store(tmp_path, monkeypatch):
    opened = []
    real = open_online_store

    def recording(backend, **kwargs):
        opened.append((backend, kwargs))
        return real(backend, **kwargs)

    monkeypatch.setattr("resources.online_store.open_online_store", recording)
    monkeypatch.setattr(server, "open_online_store", recording)
    OnlineStoreResource(sqlite_path=str(tmp_path / "a.sqlite")).open().close()
    monkeypatch.delenv("MLOPS_REDIS_URL", raising=False)
    settings = Settings.from_env({"MLOPS_HOME": str(tmp_path), "MLOPS_DATA_DIR": str(tmp_path / "data")})
    server.settings_online_store(settings).close()
    assert opened == [
        ("sqlite", {"sqlite_path": str(tmp_path / "a.sqlite"), "redis_url": "", "key_prefix": DEFAULT_REDIS_PREFIX}),
        # The serving process checkpoints the WAL in a thread, never inside the commit of a request.
        (
            "sqlite",
            {
                "sqlite_path": tmp_path / "data" / "online_store.sqlite",
                "redis_url": None,
                "checkpoint_interval": CHECKPOINT_SECONDS,
            },
        ),
    ]
    assert (tmp_path / "data" / "online_store.sqlite").exists()
