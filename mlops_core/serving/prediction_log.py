"""The durable log of every scored request: what monitoring, canary analysis and late-label joins read.

A sqlite file in WAL mode with group commit: a request's records join the batch being
collected, and the request is answered only after that batch is committed (`Commit`). An
answered request is therefore in the log even if the process is SIGKILLed right after.
Whoever waits first leads the commit of everything queued by then: on the event loop, a
callback scheduled behind the requests of the current loop iteration (so the requests that
arrived together commit together, in the loop's thread, without a thread hop); in a thread,
the waiting thread itself. One commit of a small batch costs about 0.04 ms of CPU.

Durability is against the process dying: a commit is in the WAL file (the OS page cache)
before the answer. `synchronous=normal` does not fsync each commit, so an OS crash or power
loss can still drop the last commits; `PredictionLog(sync="full")` fsyncs each one.
Checkpoints (copying the WAL into the database file, with an fsync) run in a thread and a
connection of their own every `checkpoint_interval`, not inside a commit a request waits for
(mlops_core/wal_checkpoints.py).
"""

from __future__ import annotations

import asyncio
import operator
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
import pandas as pd

from mlops_core.wal_checkpoints import CHECKPOINT_SECONDS, WalCheckpointer

if TYPE_CHECKING:  # the serving process never opens the warehouse: duckdb is for the copy below only
    import duckdb

SCHEMA = """
create table if not exists predictions (
    id integer primary key,
    logged_at real not null,          -- unix seconds when scored
    request_id text not null,
    transaction_id text not null,
    account_id text not null,
    event_timestamp text not null,    -- ISO-8601 UTC of the transaction
    model_version text,
    variant text not null,            -- champion | canary | shadow
    served integer not null,          -- 1 if this answer was returned to the caller
    status text not null,             -- ok | error
    score real,
    decision integer,
    latency_ms real,                  -- parsed request to scored (the log commit follows)
    features text,                    -- JSON of the feature vector (served rows only)
    error text
);
create index if not exists predictions_logged_at on predictions (logged_at);
create index if not exists predictions_transaction on predictions (transaction_id);
"""


@dataclass(frozen=True)
class PredictionRecord:
    logged_at: float
    request_id: str
    transaction_id: str
    account_id: str
    event_timestamp: str
    model_version: str | None
    variant: str
    served: int
    status: str
    score: float | None
    decision: int | None
    latency_ms: float | None
    features: str | None
    error: str | None = None


_row = operator.attrgetter(*PredictionRecord.__dataclass_fields__)  # astuple's deep copy costs 50x more
_INSERT = f"insert into predictions ({', '.join(PredictionRecord.__dataclass_fields__)}) values ({', '.join('?' * len(PredictionRecord.__dataclass_fields__))})"


def features_json(features: dict[str, object]) -> str:
    return orjson.dumps(features, default=str).decode()


class LogUnavailable(RuntimeError):
    """The prediction log could not commit a batch (or not in time): its requests must not be answered."""


class Commit:
    """The batch a request's records joined. Done once committed, or once the commit failed (`error`)."""

    __slots__ = ("log", "records", "done", "error", "waiters")

    def __init__(self, log: PredictionLog) -> None:
        self.log = log
        self.records: list[PredictionRecord] = []
        self.done = threading.Event()
        self.error: str | None = None
        self.waiters: list[asyncio.Future] = []

    def wait(self, timeout: float = 30.0) -> None:
        """Commit the batch now unless another caller already is (then wait for it); LogUnavailable if
        the commit failed or did not happen within `timeout`."""
        self.log._commit_through(self, timeout)
        if self.error is not None:
            raise LogUnavailable(f"the prediction log could not commit: {self.error}")


def _settle(futures: list[asyncio.Future], error: str | None) -> None:
    for future in futures:
        if not future.done():
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(LogUnavailable(f"the prediction log could not commit: {error}"))


class PredictionLog:
    """`append` adds records to the batch being collected; the caller then waits for that batch with
    `Commit.wait` (threads) or `await log.committed(commit)` (the event loop), and the first to
    wait commits it. A failed commit is retried `attempts` times at once (sqlite itself waits up
    to `busy_timeout` for a lock); then its requests get LogUnavailable and its records are not
    kept: they were never answered.
    """

    def __init__(
        self,
        path: str | Path,
        attempts: int = 2,
        busy_timeout: float = 5.0,
        sync: str = "normal",
        checkpoint_interval: float = CHECKPOINT_SECONDS,
    ) -> None:
        if sync not in ("normal", "full"):
            raise ValueError(f"sync must be 'normal' or 'full', got {sync!r}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.attempts = attempts
        self.busy_timeout = busy_timeout
        self.checkpoint_interval = checkpoint_interval
        self._con = sqlite3.connect(self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False)
        self._con.execute("pragma journal_mode=wal")
        self._con.execute(f"pragma synchronous={sync}")
        self._con.execute("pragma wal_autocheckpoint=0")  # checkpoints run in self.checkpoints
        self._con.executescript(SCHEMA)
        self._lock = threading.Lock()  # guards _current, _scheduled and the waiters of each batch
        self._write_lock = threading.Lock()  # one commit at a time, whoever leads it; guards _con
        self._current = Commit(self)
        self._scheduled: set[asyncio.AbstractEventLoop] = set()  # loops with a commit callback pending
        self.written = 0
        self.batches = 0
        self.failures = 0
        self.last_error: str | None = None
        # Checkpoints in a thread of their own, never inside a commit a request waits for (wal_checkpoints).
        self.checkpoints = WalCheckpointer(
            self.path, lambda: self.batches, checkpoint_interval, busy_timeout, name="prediction-log-checkpoints"
        )

    def append(self, records: list[PredictionRecord]) -> Commit:
        """Queue `records`; the returned Commit is done once they are on disk."""
        with self._lock:
            commit = self._current
            commit.records.extend(records)
        return commit

    def committed(self, commit: Commit) -> asyncio.Future:
        """A future of the running loop, resolved when `commit` is done (LogUnavailable if it failed).
        The first request of a loop iteration to wait schedules the commit behind the others."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._lock:
            if commit.done.is_set():
                schedule = False
            else:
                commit.waiters.append(future)
                schedule = loop not in self._scheduled
                self._scheduled.add(loop)
        if commit.done.is_set() and not future.done():
            _settle([future], commit.error)
        elif schedule:
            loop.call_soon(self._commit_on, loop)
        return future

    def _commit_on(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            self._scheduled.discard(loop)
        self.flush()

    def _commit_through(self, commit: Commit, timeout: float) -> None:
        """Make sure `commit` is committed: lead the commit if it is still queued."""
        if commit.done.is_set():
            return
        if not self._write_lock.acquire(timeout=timeout):
            raise LogUnavailable(f"the prediction log did not commit within {timeout:g} s")
        try:
            # A leader takes and commits a batch under the write lock: it is done, or still queued.
            if not commit.done.is_set():
                self._commit_queued()
        finally:
            self._write_lock.release()

    def flush(self) -> None:
        """Commit everything appended so far, now."""
        with self._write_lock:
            self._commit_queued()

    def _commit_queued(self) -> None:
        with self._lock:
            batch, self._current = self._current, Commit(self)
        if batch.records:
            self._write(batch)

    def _write(self, batch: Commit) -> None:
        error = None
        rows = [_row(r) for r in batch.records]
        for _ in range(self.attempts):
            try:
                self._con.execute("begin immediate")
                self._con.executemany(_INSERT, rows)
                self._con.execute("commit")
                error = None
                break
            except sqlite3.Error as exc:
                error = f"{type(exc).__name__}: {exc}"
                try:
                    if self._con.in_transaction:
                        self._con.execute("rollback")
                except sqlite3.Error:
                    pass
        if error is None:
            self.written += len(batch.records)
            self.batches += 1
        else:
            self.failures += len(batch.records)
            self.last_error = error
        with self._lock:
            batch.error = error
            batch.done.set()
            waiters, batch.waiters = batch.waiters, []
        try:
            here = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        elsewhere: dict[asyncio.AbstractEventLoop, list[asyncio.Future]] = {}
        for future in waiters:
            loop = future.get_loop()
            if loop is here:
                _settle([future], error)
            else:
                elsewhere.setdefault(loop, []).append(future)
        for loop, futures in elsewhere.items():
            try:
                loop.call_soon_threadsafe(_settle, futures, error)
            except RuntimeError:  # that loop is closed: nobody waits any more
                pass

    def close(self) -> None:
        """Commit what is queued, stop the checkpoints and close the file."""
        self.checkpoints.stop()
        self.flush()
        self._con.close()


def read_predictions(
    path: str | Path, since: float | None = None, variants: tuple[str, ...] | None = None, after_id: int | None = None
) -> pd.DataFrame:
    """Logged predictions (optionally since a unix time, of some variants, after a row id), oldest first."""
    path = Path(path)
    columns = ["id", *PredictionRecord.__dataclass_fields__]
    if not path.exists():
        return pd.DataFrame(columns=columns)
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        clauses, params = [], []
        if since is not None:
            clauses.append("logged_at >= ?")
            params.append(since)
        if after_id is not None:
            clauses.append("id > ?")
            params.append(int(after_id))
        if variants:
            clauses.append(f"variant in ({', '.join('?' * len(variants))})")
            params.extend(variants)
        where = f"where {' and '.join(clauses)}" if clauses else ""
        return pd.read_sql_query(
            f"select {', '.join(columns)} from predictions {where} order by id", con, params=params
        )
    finally:
        con.close()


# The log's copy in the warehouse, appended by the prediction_log asset, read by monitoring.
WAREHOUSE_TABLE = "serving.prediction_log"


def warehouse_log_exists(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether serving.prediction_log exists in the warehouse yet: the first copy of the log creates it,
    and monitoring has no served decisions to read before."""
    found = con.execute(
        "select count(*) from information_schema.tables where table_schema = 'serving' and table_name = 'prediction_log'"
    ).fetchall()[0][0]
    return bool(found)


@dataclass(frozen=True)
class WarehouseCopy:
    """What `copy_to_warehouse` did: rows appended now, rows in the table after, and the table's rows per
    variant as a JSON object ({"champion": 120, "shadow": 118})."""

    new_rows: int
    total_rows: int
    rows_by_variant: str


def copy_to_warehouse(con: duckdb.DuckDBPyConnection, source: str | Path) -> WarehouseCopy:
    """Append the log's rows at `source` that are newer (by id) than the newest already in
    serving.prediction_log, creating the schema and the table on the first copy. Copying again copies
    nothing twice."""
    con.execute("create schema if not exists serving").fetchall()
    exists = warehouse_log_exists(con)
    newest = con.execute(f"select max(id) from {WAREHOUSE_TABLE}").fetchall()[0][0] if exists else None
    new_rows = read_predictions(source, after_id=newest)
    con.register("_new_predictions", new_rows)
    try:
        if not exists:
            con.execute(f"create table {WAREHOUSE_TABLE} as select * from _new_predictions").fetchall()
        elif len(new_rows):
            con.execute(f"insert into {WAREHOUSE_TABLE} select * from _new_predictions").fetchall()
    finally:
        con.unregister("_new_predictions")
    total, by_variant = con.execute(f"select count(*), to_json(histogram(variant)) from {WAREHOUSE_TABLE}").fetchall()[
        0
    ]
    return WarehouseCopy(new_rows=len(new_rows), total_rows=int(total), rows_by_variant=by_variant)
