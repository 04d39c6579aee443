"""The embedded Dagster instance's storage: Dagster's own sqlite storage, with its database engines kept.

Dagster's sqlite run, event log and schedule storages build a new SQLAlchemy engine for every statement
(`poolclass=NullPool`, then `engine.dispose()`), so each event a run writes pays for an engine, a connect,
the dialect's first-connect queries and a close. Storing 1,000 log events took 2.8-2.9 s of CPU with
Dagster's storage and 0.6-0.9 s with an engine kept per database; whole partitioned runs with a blocking
check, 1.85x less CPU (benchmarks/instance_storage.py, row `dagster_instance_cpu_pooled_vs_sqlite`). A
45-day closed-loop simulation test writes about 2,400 events over 10 runs, and reads many more.

These classes change only how connections are made and kept (below): the files, their schema, their WAL
journal, their alembic revisions and every query are Dagster's, so a home written by either storage is read by
the other (dagster.yaml selects this one under `storage: custom`, with DAGSTER_HOME as base_dir, the layout
Dagster's default uses).

- Engines are per process: a forked child (a multiprocess executor step, the warm dbt server's children
  never open the instance) drops the inherited engines without closing the parent's connections.
- A run's events live in their own file, and a process can touch thousands of runs (the webserver, the
  daemon), so only the most recently used run files keep an engine; older engines are disposed.
- `wipe` deletes run files: their engines are disposed first, so no connection outlives its file.
- Kept connections to a WAL file use `synchronous=NORMAL` (sqlite's guidance for WAL): every stored event is
  a commit, and FULL waited for the disk at each one (`_sync_at_checkpoints_in_wal`).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator

import sqlalchemy as db
from dagster._core.storage.event_log.sqlite.sqlite_event_log import INDEX_SHARD_NAME, SqliteEventLogStorage
from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage
from dagster._core.storage.schedules.sqlite.sqlite_schedule_storage import SqliteScheduleStorage
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from dagster._core.storage.sqlite_storage import (
    DagsterSqliteStorage,
    _event_logs_directory,
    _runs_directory,
    _schedule_directory,
)
from dagster._serdes import ConfigurableClassData
from sqlalchemy.engine import Connection, Engine

# Run files that keep an engine in one process. A run writes to its own file and to the index, so one
# running job needs two; the webserver reading a few runs side by side needs a few more.
RUN_ENGINES_KEPT = 8


def _engine(conn_string: str) -> Engine:
    # SQLAlchemy's default pool for a sqlite file (QueuePool, connections usable from any thread) keeps the
    # connection between statements. Idle pooled connections hold no transaction, so they block neither
    # another process's writes nor WAL checkpoints.
    engine = db.create_engine(conn_string, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS})
    db.event.listen(engine, "checkout", _sync_at_checkpoints_in_wal)
    return engine


def _sync_at_checkpoints_in_wal(dbapi_connection, connection_record, _proxy) -> None:
    """`synchronous=NORMAL` on a connection to a WAL database: fsync when the WAL is checkpointed, not at
    every commit. Every event Dagster stores is a commit, and sqlite's default (FULL) made each one wait for
    the disk: 0.3 ms of wall and 0.1 ms of CPU a commit here against 0.03 and 0.02. SQLite's own guidance for
    WAL: NORMAL cannot corrupt the database; a power cut (not a crashed process) may lose the last commits.
    Dagster puts every one of its sqlite files in WAL when it creates them; a connection opened before that
    (the one creating the file) is asked again at its next checkout, and a non-WAL file keeps FULL."""
    if connection_record.info.get("synchronous_normal"):
        return
    cursor = dbapi_connection.cursor()
    try:
        (journal_mode,) = cursor.execute("PRAGMA journal_mode").fetchone()
        if str(journal_mode).lower() == "wal":
            cursor.execute("PRAGMA synchronous=NORMAL")
            connection_record.info["synchronous_normal"] = True
    finally:
        cursor.close()


class _EngineCache:
    """Engines by database name for this process; the least recently used beyond `keep` are disposed.
    Names in `pinned` (the index) are never evicted."""

    def __init__(self, keep: int, pinned: frozenset[str] = frozenset()):
        self._keep = keep
        self._pinned = pinned
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def get(self, name: str, conn_string: str) -> Engine:
        """The engine for `name`, made on first use."""
        with self._lock:
            self._forget_if_forked()
            engine = self._engines.get(name)
            if engine is not None:
                self._engines.move_to_end(name)
                return engine
            engine = _engine(conn_string)
            self._engines[name] = engine
            evictable = [n for n in self._engines if n not in self._pinned]
            for stale in evictable[: max(0, len(evictable) - self._keep)]:
                self._engines.pop(stale).dispose()
            return engine

    def dispose(self, keep_pinned: bool = False) -> None:
        with self._lock:
            self._forget_if_forked()
            for name in list(self._engines):
                if keep_pinned and name in self._pinned:
                    continue
                self._engines.pop(name).dispose()

    def __len__(self) -> int:
        return len(self._engines)

    def _forget_if_forked(self) -> None:
        # A forked child shares the parent's sqlite file descriptors: it must not use or close them.
        if os.getpid() != self._pid:
            for engine in self._engines.values():
                engine.dispose(close=False)
            self._engines.clear()
            self._pid = os.getpid()


class PooledSqliteEventLogStorage(SqliteEventLogStorage):
    """Dagster's SqliteEventLogStorage with an engine kept per database file (see the module docstring)."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None):
        self._engine_cache = _EngineCache(RUN_ENGINES_KEPT, pinned=frozenset({INDEX_SHARD_NAME}))
        super().__init__(base_dir, inst_data=inst_data)

    @contextlib.contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        with self._db_lock:
            engine = self._engine_cache.get(shard, self.conn_string_for_shard(shard))
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn, conn.begin():
                yield conn

    def wipe(self) -> None:
        with self._db_lock:
            self._engine_cache.dispose(keep_pinned=True)
        super().wipe()

    def dispose(self) -> None:
        super().dispose()
        self._engine_cache.dispose()


class _OneKeptEngine:
    """For Dagster's run and schedule storages, which open one database through `connect()`."""

    _conn_string: str

    def __init__(self, conn_string: str, inst_data: ConfigurableClassData | None = None):
        self._engine_cache = _EngineCache(keep=1)
        super().__init__(conn_string, inst_data=inst_data)

    @contextlib.contextmanager
    def connect(self) -> Iterator[Connection]:
        engine = self._engine_cache.get("db", self._conn_string)
        with engine.connect() as conn, conn.begin():
            yield conn

    def dispose(self) -> None:
        super().dispose()
        self._engine_cache.dispose()


class PooledSqliteRunStorage(_OneKeptEngine, SqliteRunStorage):
    """Dagster's SqliteRunStorage with its one engine kept."""


class PooledSqliteScheduleStorage(_OneKeptEngine, SqliteScheduleStorage):
    """Dagster's SqliteScheduleStorage (sensor and schedule ticks, cursors) with its one engine kept."""


class PooledSqliteStorage(DagsterSqliteStorage):
    """The embedded instance's storage (dagster.yaml, `storage: custom`): Dagster's sqlite layout under
    base_dir (history/, history/runs/, schedules/), written and read through kept engines."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None):
        # DagsterSqliteStorage.__init__ builds Dagster's own storages; build the pooled ones instead.
        self.base_dir = base_dir
        # from_local does Dagster's set-up (directories, schema, migration checks) and builds `cls(conn_string)`.
        self._run_storage = PooledSqliteRunStorage.from_local(_runs_directory(base_dir))
        self._event_log_storage = PooledSqliteEventLogStorage(_event_logs_directory(base_dir))
        self._schedule_storage = PooledSqliteScheduleStorage.from_local(_schedule_directory(base_dir))
        self._inst_data = inst_data
        super(DagsterSqliteStorage, self).__init__()

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData | None, config_value) -> PooledSqliteStorage:
        return cls.from_local(inst_data=inst_data, **config_value)

    def dispose(self) -> None:
        for storage in (self._run_storage, self._event_log_storage, self._schedule_storage):
            storage.dispose()
