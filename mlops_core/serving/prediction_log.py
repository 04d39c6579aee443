"""The durable log of every scored request: what monitoring, canary analysis and late-label joins read.

A sqlite file in WAL mode, written by one background thread in small batches so the
request path only enqueues. A batch is committed within `flush_interval` seconds; a crash
can lose at most that last interval, never corrupt the file. `close()` drains the queue.
"""

import json
import queue
import sqlite3
import threading
import time
from dataclasses import astuple, dataclass
from pathlib import Path

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
    latency_ms real,                  -- whole request, parse to response
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
    return json.dumps(features, default=str, separators=(",", ":"))


class PredictionLog:
    def __init__(self, path: str | Path, flush_interval: float = 0.05) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.flush_interval = flush_interval
        con = self._connect()
        con.executescript(SCHEMA)
        con.close()
        self._queue: queue.Queue[PredictionRecord | None] = queue.Queue()
        self.written = 0
        self.failures = 0
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name="prediction-log-writer", daemon=True)
        self._thread.start()

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        con.execute("pragma journal_mode=wal")
        con.execute("pragma synchronous=normal")
        return con

    def append(self, records: list[PredictionRecord]) -> None:
        for record in records:
            self._queue.put(record)

    def _run(self) -> None:
        con = self._connect()
        stopping = False
        while not stopping:
            batch: list[PredictionRecord] = []
            try:
                item = self._queue.get(timeout=self.flush_interval)
            except queue.Empty:
                continue
            deadline = time.monotonic() + self.flush_interval
            while True:
                if item is None:
                    stopping = True
                else:
                    batch.append(item)
                if stopping or len(batch) >= 2000:
                    break
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
            if batch:
                self._write(con, batch)
            for _ in range(len(batch) + (1 if stopping else 0)):
                self._queue.task_done()
        con.close()

    def _write(self, con: sqlite3.Connection, batch: list[PredictionRecord]) -> None:
        for attempt in range(5):
            try:
                con.execute("begin immediate")
                con.executemany(_INSERT, [astuple(r) for r in batch])
                con.execute("commit")
                self.written += len(batch)
                return
            except sqlite3.Error as exc:
                if con.in_transaction:
                    con.execute("rollback")
                self.last_error = f"{type(exc).__name__}: {exc}"
                time.sleep(0.05 * (attempt + 1))
        # Kept in memory for the next attempt rather than dropped.
        self.failures += len(batch)
        for record in batch:
            self._queue.put(record)

    def flush(self) -> None:
        """Block until everything appended so far is committed."""
        self._queue.join()

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._queue.join()
            self._thread.join(timeout=10)


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
