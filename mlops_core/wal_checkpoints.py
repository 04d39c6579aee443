"""Checkpoints of a sqlite WAL file in a thread of their own, off the thread that commits.

sqlite's automatic checkpoint runs inside the commit that takes the WAL past 1,000 pages: that commit copies
the pages into the database file and fsyncs both. On the serving path that commit is a request: the online
store's automatic checkpoints (two fdatasyncs of 3-5 ms each, about 7 a second at 500 requests/s, every one
on the event loop) were the p99 tail of `mlops serve` (benchmarks/RESULTS.md, "Serving"). A writer that turns
them off (`pragma wal_autocheckpoint=0`) runs a WalCheckpointer instead: a passive checkpoint, which never
blocks a writer or a reader, after each interval in which something was committed. sqlite's module releases
the GIL while it checkpoints, so the committing thread keeps going.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

# Every quarter second: at 500 requests/s a checkpoint then copies about 125 requests' pages, and the fsyncs it
# ends with stall the committing thread's WAL appends less than one copying four times as many. Measured with
# `mlops serve` pinned to one core, 500 requests/s open loop, new transactions, 5 runs each: p99 median 2.8 ms
# at 0.25 s, 4.2 ms at 1 s, 11 ms at 5 s, 13.6 ms with sqlite's automatic checkpoints on the event loop.
CHECKPOINT_SECONDS = 0.25


class WalCheckpointer:
    """A daemon thread with its own connection to `path` that checkpoints every `interval` seconds when
    `commits()` (a count the writer keeps) has moved since the last one. `stop()` ends it; a failed checkpoint
    (busy, a failing disk) is kept in `last_error` and retried after the next interval: the WAL keeps the rows."""

    def __init__(
        self,
        path: str | Path,
        commits: Callable[[], int],
        interval: float = 1.0,
        busy_timeout: float = 5.0,
        name: str = "",
    ) -> None:
        if interval <= 0:
            raise ValueError(f"checkpoint interval must be > 0 seconds, got {interval}")
        self.path = str(path)
        self.interval = interval
        self.busy_timeout = busy_timeout
        self.checkpoints = 0
        self.last_error: str | None = None
        self._commits = commits
        # The count is read here, not when the thread first runs: on a loaded machine the thread can start after
        # the writer's commits, and a count read then would take them as already checkpointed (until the next
        # commit, which a quiet writer may never make: a test's log of 100 predictions stayed in the WAL).
        self._seen_at_start = commits()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name or f"wal-checkpoints:{self.path}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        con = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False)
        try:
            seen = self._seen_at_start
            while not self._stop.wait(self.interval):
                committed = self._commits()
                if committed == seen:
                    continue
                seen = committed
                try:
                    con.execute("pragma wal_checkpoint(passive)")
                    self.checkpoints += 1
                except sqlite3.Error as exc:
                    self.last_error = f"checkpoint: {type(exc).__name__}: {exc}"
        finally:
            con.close()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._thread.join(timeout=timeout)
