"""The durable log of every scored request: what monitoring, canary analysis and late-label joins read.

A sqlite file in WAL mode, written by one background thread in batches so the request
path only appends to a deque. A batch is committed within `flush_interval` seconds; a crash
can lose at most that last interval, never corrupt the file. `close()` drains the queue.
"""

import collections
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
    return orjson.dumps(features, default=str).decode()


class PredictionLog:
    """Appends are a deque extend (no lock, no wake-up of the writer); the writer thread wakes
    every `flush_interval`, takes everything queued and commits it in one transaction."""

    def __init__(self, path: str | Path, flush_interval: float = 0.05) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.flush_interval = flush_interval
        self._con = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        self._con.execute("pragma journal_mode=wal")
        self._con.execute("pragma synchronous=normal")
        self._con.executescript(SCHEMA)
        self._pending: collections.deque[PredictionRecord] = collections.deque()
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self.written = 0
        self.failures = 0
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name="prediction-log-writer", daemon=True)
        self._thread.start()

    def append(self, records: list[PredictionRecord]) -> None:
        self._pending.extend(records)

    def _run(self) -> None:
        while not self._stop.wait(self.flush_interval):
            self._write_pending()

    def _write_pending(self) -> None:
        with self._write_lock:
            batch = []
            while self._pending:
                batch.append(self._pending.popleft())
            if not batch:
                return
            for attempt in range(5):
                try:
                    self._con.execute("begin immediate")
                    self._con.executemany(_INSERT, [astuple(r) for r in batch])
                    self._con.execute("commit")
                    self.written += len(batch)
                    return
                except sqlite3.Error as exc:
                    if self._con.in_transaction:
                        self._con.execute("rollback")
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    time.sleep(0.05 * (attempt + 1))
            # Kept in memory, in order, for the next attempt rather than dropped.
            self.failures += len(batch)
            self._pending.extendleft(reversed(batch))

    def flush(self) -> None:
        """Commit everything appended so far, now."""
        self._write_pending()

    def close(self) -> None:
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join(timeout=10)
        self._write_pending()
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
