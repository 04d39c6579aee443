"""The durable log of every scored request: what monitoring, canary analysis and late-label joins read.

A sqlite file in WAL mode, written by one background thread with group commit: a request's
records join the batch being collected, the writer commits each batch as soon as the previous
one is done, and the request is answered only after its batch committed (`Commit`). An
answered request is therefore in the log even if the process is SIGKILLed right after.
Under load, batches grow on their own while a commit is in flight, so the cost stays one
transaction per batch rather than per request.

Durability is against the process dying: a commit is in the WAL file (the OS page cache)
before the answer. `synchronous=normal` does not fsync each commit, so an OS crash or power
loss can still drop the last commits; `PredictionLog(sync="full")` fsyncs each one.
Checkpoints (copying the WAL into the database file, with an fsync) run in a thread and a
connection of their own every `checkpoint_interval`, not inside a commit a request waits for.
"""

import asyncio
import sqlite3
import threading
import time
from dataclasses import astuple, dataclass
from pathlib import Path

import orjson
import pandas as pd

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


_INSERT = f"insert into predictions ({', '.join(PredictionRecord.__dataclass_fields__)}) values ({', '.join('?' * len(PredictionRecord.__dataclass_fields__))})"


def features_json(features: dict[str, object]) -> str:
    return orjson.dumps(features, default=str).decode()


class LogUnavailable(RuntimeError):
    """The prediction log could not commit a batch (or not in time): its requests must not be answered."""


class Commit:
    """The batch a request's records joined. Done once the writer committed it, or gave up (`error`)."""

    __slots__ = ("records", "done", "error", "waiters")

    def __init__(self) -> None:
        self.records: list[PredictionRecord] = []
        self.done = threading.Event()
        self.error: str | None = None
        self.waiters: list[asyncio.Future] = []

    def wait(self, timeout: float = 30.0) -> None:
        """Block until committed; LogUnavailable if the commit failed or took longer than `timeout`."""
        if not self.done.wait(timeout):
            raise LogUnavailable(f"the prediction log did not commit within {timeout:g} s")
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
    """`append` adds records to the batch being collected and wakes the writer thread; the caller then
    waits for that batch with `Commit.wait` (threads) or `await log.committed(commit)` (the event loop).

    `batch_window` makes the writer wait that long after waking before it takes a batch (bigger
    batches, more latency); 0 takes whatever is queued at once. A failed batch is retried
    `attempts` times, then its requests get LogUnavailable and its records are not kept: they
    were never answered.
    """

    def __init__(
        self, path: str | Path, batch_window: float = 0.0, attempts: int = 3, busy_timeout: float = 5.0, sync: str = "normal",
        checkpoint_interval: float = 1.0,
    ) -> None:
        if sync not in ("normal", "full"):
            raise ValueError(f"sync must be 'normal' or 'full', got {sync!r}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.batch_window = batch_window
        self.attempts = attempts
        self.busy_timeout = busy_timeout
        self.checkpoint_interval = checkpoint_interval
        self._con = sqlite3.connect(self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False)
        self._con.execute("pragma journal_mode=wal")
        self._con.execute(f"pragma synchronous={sync}")
        self._con.execute("pragma wal_autocheckpoint=0")  # see _checkpoints
        self._con.executescript(SCHEMA)
        self._lock = threading.Lock()  # guards _current and each batch's waiters
        self._current = Commit()
        self._taken: Commit | None = None  # the batch the writer is committing or committed last
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.written = 0
        self.batches = 0
        self.failures = 0
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name="prediction-log-writer", daemon=True)
        self._thread.start()
        self._checkpointer = threading.Thread(target=self._checkpoints, name="prediction-log-checkpoints", daemon=True)
        self._checkpointer.start()

    def append(self, records: list[PredictionRecord]) -> Commit:
        """Queue `records`; the returned Commit is done once they are on disk."""
        with self._lock:
            commit = self._current
            commit.records.extend(records)
        self._wake.set()
        return commit

    def committed(self, commit: Commit) -> asyncio.Future:
        """A future of the running loop, resolved when `commit` is done (LogUnavailable if it failed)."""
        future = asyncio.get_running_loop().create_future()
        with self._lock:
            if not commit.done.is_set():
                commit.waiters.append(future)
                return future
        _settle([future], commit.error)
        return future

    def _take(self) -> Commit | None:
        with self._lock:
            if not self._current.records:
                return None
            batch, self._current = self._current, Commit()
            self._taken = batch
            return batch

    def _run(self) -> None:
        while True:
            if not self._stop.is_set():
                self._wake.wait()
            self._wake.clear()
            if self.batch_window > 0 and not self._stop.is_set():
                time.sleep(self.batch_window)
            batch = self._take()
            if batch is not None:
                self._write(batch)
            elif self._stop.is_set():
                return

    def _checkpoints(self) -> None:
        """A passive checkpoint after each interval with new commits: it never blocks the writer, and
        its fsync happens here rather than inside a commit (an automatic checkpoint runs in the
        commit that crosses 1,000 WAL pages, and its fsync took up to 20 ms on the development VM)."""
        con = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False)
        try:
            seen = 0
            while not self._stop.wait(self.checkpoint_interval):
                if self.batches != seen:
                    seen = self.batches
                    try:
                        con.execute("pragma wal_checkpoint(passive)")
                    except sqlite3.Error as exc:  # busy or failing disk: the WAL keeps the rows, the next interval retries
                        self.last_error = f"checkpoint: {type(exc).__name__}: {exc}"
        finally:
            con.close()

    def _write(self, batch: Commit) -> None:
        error = None
        try:
            for attempt in range(self.attempts):
                try:
                    self._con.execute("begin immediate")
                    self._con.executemany(_INSERT, [astuple(r) for r in batch.records])
                    self._con.execute("commit")
                    error = None
                    break
                except sqlite3.Error as exc:
                    if self._con.in_transaction:
                        self._con.execute("rollback")
                    error = f"{type(exc).__name__}: {exc}"
                    time.sleep(0.05 * (attempt + 1))
        except Exception as exc:  # whatever happens, every waiter must hear about its batch
            error = f"{type(exc).__name__}: {exc}"
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
        by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future]] = {}
        for future in waiters:
            by_loop.setdefault(future.get_loop(), []).append(future)
        for loop, futures in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, futures, error)
            except RuntimeError:  # that loop is closed: nobody waits any more
                pass

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until everything appended so far is committed."""
        with self._lock:
            pending = [c for c in (self._taken, self._current) if c is not None and c.records]
        self._wake.set()
        for commit in pending:
            commit.wait(timeout)

    def close(self) -> None:
        """Commit what is queued, stop the writer and close the file."""
        if self._thread.is_alive():
            self._stop.set()
            self._wake.set()
            self._thread.join(timeout=30)
        self._stop.set()
        self._checkpointer.join(timeout=30)
        batch = self._take()
        if batch is not None:
            self._write(batch)
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
        return pd.read_sql_query(f"select {', '.join(columns)} from predictions {where} order by id", con, params=params)
    finally:
        con.close()
