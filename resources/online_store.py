"""The online feature store: sqlite embedded by default, Redis in production."""

import contextlib
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import dagster as dg
from pydantic import Field

from mlops_core.features.online import DEFAULT_ALLOWED_LATENESS_SECONDS
from mlops_core.features.stores import DEFAULT_REDIS_PREFIX, OnlineStore, open_online_store


class OnlineStoreResource(dg.ConfigurableResource):
    """Where serving reads features and records scored transactions."""

    backend: Literal["sqlite", "redis"] = Field(
        default="sqlite", description="sqlite (embedded, one file) or redis (production)."
    )
    sqlite_path: str = Field(default="", description="File of the sqlite store; required for the sqlite backend.")
    redis_url: str = Field(
        default="", description="redis://host:port/db of the Redis store; pass it as dg.EnvVar('MLOPS_REDIS_URL')."
    )
    key_prefix: str = Field(default=DEFAULT_REDIS_PREFIX, description="Prefix of every Redis key the store writes.")
    allowed_lateness_days: int = Field(
        default=DEFAULT_ALLOWED_LATENESS_SECONDS // 86_400,
        ge=0,
        description="How much older than the warehouse's newest event a transaction may be and still be scored with "
        "its whole 30-day window: a rebuild keeps 30 days plus this much. Older ones are refused (TooLateError).",
    )

    @property
    def allowed_lateness_seconds(self) -> int:
        return self.allowed_lateness_days * 86_400

    def open(self) -> OnlineStore:
        """A new client of the configured store; the caller closes it."""
        return open_online_store(
            self.backend, sqlite_path=self.sqlite_path, redis_url=self.redis_url, key_prefix=self.key_prefix
        )

    @contextlib.contextmanager
    def scratch(self) -> Iterator[OnlineStore]:
        """An empty store of the same backend that production state never sees (for replays)."""
        if self.backend == "redis":
            prefix = f"{self.key_prefix}:scratch:{uuid.uuid4().hex}"
            store = open_online_store("redis", redis_url=self.redis_url, key_prefix=prefix)
            try:
                yield store
            finally:
                store.delete_all()
                store.close()
        else:
            with tempfile.TemporaryDirectory(prefix="online-scratch-") as tmp:
                store = open_online_store("sqlite", sqlite_path=Path(tmp) / "scratch.sqlite")
                try:
                    yield store
                finally:
                    store.close()
