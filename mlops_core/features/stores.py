"""Online stores: where serving keeps each account's recent events and snapshots.

The store holds raw events, not precomputed aggregates: windowed features are computed
at request time from them (online.compute_features), which is what makes sliding
windows exact at any instant. Two implementations of one interface:

- SqliteOnlineStore: the embedded default, one file, WAL mode; survives restarts and
  is shared by every process that opens the file;
- RedisOnlineStore: the production store; one sorted set of events per account
  scored by event time, one of snapshots, an index of transaction ids and a meta hash.

Both keep each transaction id once (the first version recorded; a rebuild replaces it
with the warehouse's), and both keep, at a rebuild, the longest window plus the allowed
lateness before the warehouse's newest event, so a late transaction gets its whole window.
"""

from __future__ import annotations

import abc
import datetime as dt
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mlops_core.features.online import (
    DEFAULT_ALLOWED_LATENESS_SECONDS,
    MAX_WINDOW_US,
    MICROS,
    AccountEvents,
    AccountSnapshot,
    EventRecord,
    StoreRead,
)
from mlops_core.features.spec import spec_version
from mlops_core.wal_checkpoints import WalCheckpointer

DEFAULT_ALLOWED_LATENESS_US = DEFAULT_ALLOWED_LATENESS_SECONDS * MICROS
# Prefix of every key the Redis store writes, unless told otherwise.
DEFAULT_REDIS_PREFIX = "mlops:features"
BACKENDS = ("sqlite", "redis")


@dataclass(frozen=True)
class StoreStatus:
    """What the store can say about its own freshness."""

    watermark_us: int | None  # newest event time held
    offline_watermark_us: int | None  # newest event time of the last rebuild from the warehouse
    materialized_at: float | None  # wall clock of the last rebuild (epoch seconds)
    last_recorded_at: float | None  # wall clock of the last recorded scored transaction
    events: int
    accounts: int
    spec_version: str | None
    retained_since_us: int | None = None  # the last rebuild dropped events older than this
    allowed_lateness_us: int | None = None  # the lateness the last rebuild's retention allows for

    @classmethod
    def from_meta(cls, meta: dict[str, str], events: int, accounts: int) -> StoreStatus:
        """From the key/value meta both stores keep (sqlite table, Redis hash)."""
        return cls(
            watermark_us=_int_or_none(meta.get("watermark_us")),
            offline_watermark_us=_int_or_none(meta.get("offline_watermark_us")),
            materialized_at=_float_or_none(meta.get("materialized_at")),
            last_recorded_at=_float_or_none(meta.get("last_recorded_at")),
            events=events,
            accounts=accounts,
            spec_version=meta.get("spec_version"),
            retained_since_us=_int_or_none(meta.get("retained_since_us")),
            allowed_lateness_us=_int_or_none(meta.get("allowed_lateness_us")),
        )

    @property
    def watermark(self) -> dt.datetime | None:
        if self.watermark_us is None:
            return None
        return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=self.watermark_us)


class OnlineStore(abc.ABC):
    """The interface serving and materialization use; every method is safe to retry."""

    @abc.abstractmethod
    def read(self, account_ids: Sequence[str], since_us: int, until_us: int) -> dict[str, AccountEvents]:
        """Events with since_us <= ts < until_us and all snapshots of each account.

        Takes account ids and epoch-microsecond bounds; returns AccountEvents in
        (time, transaction id) order for every account that has events or snapshots
        (absent = unknown account).
        """

    @abc.abstractmethod
    def lookup(
        self, account_ids: Sequence[str], transaction_ids: Sequence[str], since_us: int, until_us: int
    ) -> StoreRead:
        """What a feature lookup needs, in one read: `read(account_ids, since_us, until_us)`,
        where each of `transaction_ids` is held ((account, time) of the version held; ids not
        held are left out) and the retention horizon of the last rebuild (None if never rebuilt)."""

    @abc.abstractmethod
    def record_events(self, events: Sequence[EventRecord]) -> int:
        """Add scored transactions, idempotently per transaction id: an id already held (at any
        time, in any account) or repeated in `events` keeps its first version. Returns the count added."""

    @abc.abstractmethod
    def rebuild(
        self,
        events: Iterable[EventRecord],
        snapshots: Iterable[tuple[str, AccountSnapshot]],
        offline_watermark_us: int,
        allowed_lateness_us: int = DEFAULT_ALLOWED_LATENESS_US,
    ) -> None:
        """Replace everything up to `offline_watermark_us` with the warehouse's events and all snapshots.

        Events recorded online after the watermark are kept (they are newer than the
        warehouse), unless the warehouse holds their transaction id: its version wins. Events
        older than `retained_since_us` = watermark - longest window - `allowed_lateness_us` are
        dropped, so a transaction up to the allowed lateness older than the watermark still
        finds its whole window. Readers see the old state or the new one, never a mix, per account.
        """

    @abc.abstractmethod
    def status(self) -> StoreStatus:
        """Watermarks, retention, rebuild and record times, sizes and the spec version of the state."""

    def close(self) -> None:  # noqa: B027 - a no-op by default: an in-memory store holds no connection
        """Release connections."""


def retention_horizon(offline_watermark_us: int, allowed_lateness_us: int) -> int:
    """The oldest event time a rebuild keeps: the longest window plus the allowed lateness before the watermark."""
    if allowed_lateness_us < 0:
        raise ValueError(f"allowed lateness must be >= 0, got {allowed_lateness_us} us")
    return offline_watermark_us - MAX_WINDOW_US - allowed_lateness_us


_SCHEMA = """
create table if not exists events (
    account_id text not null,
    ts_us integer not null,
    transaction_id text not null,
    amount_usd real not null,
    merchant_id text not null,
    country text not null,
    primary key (account_id, ts_us, transaction_id)
) without rowid;
create table if not exists snapshots (
    account_id text not null,
    valid_from_us integer not null,
    created_at_us integer not null,
    home_country text,
    age_band text,
    primary key (account_id, valid_from_us)
) without rowid;
create table if not exists meta (key text primary key, value text);
"""


_TRANSACTION_INDEX = "events_by_transaction"

# Files written before ids were unique may hold an id twice: keep its earliest version.
_DEDUPLICATE = """
delete from events where (account_id, ts_us, transaction_id) in (
    select account_id, ts_us, transaction_id from (
        select account_id, ts_us, transaction_id,
               row_number() over (partition by transaction_id order by ts_us, account_id) as nth
        from events
    ) where nth > 1
)"""


@dataclass
class _Replica:
    """The whole state of a sqlite store in memory."""

    histories: dict[str, AccountEvents]
    held: dict[str, tuple[str, int]]  # transaction id -> (account, ts_us)
    retained_since_us: int | None


class SqliteOnlineStore(OnlineStore):
    """The embedded online store: a sqlite file (or ':memory:') in WAL mode.

    With `replica=True` (the default) the process also keeps the whole state in memory
    and answers reads from it: a lookup costs microseconds instead of a query. Every
    read first asks sqlite's `pragma data_version` (about 2 us) whether another
    connection committed; if one did (a rebuild by Dagster, another serving process),
    the replica is reloaded from the file. That makes several writer processes
    correct but slow; run one serving process per file, or use Redis, for scale-out.
    Transaction ids are unique in the file (a unique index), whatever the account or time.

    With `checkpoint_interval` (what `mlops serve` passes), sqlite's automatic checkpoint is off and a thread
    checkpoints the WAL every that many seconds instead (mlops_core/wal_checkpoints.py): otherwise one recording
    commit in a few hundred copies the WAL into the file and fsyncs both, on the request's thread.
    """

    def __init__(self, path: str | Path, replica: bool = True, checkpoint_interval: float | None = None) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # One connection guarded by a lock: serving threads share it, sqlite serializes anyway.
        self._lock = threading.Lock()
        self._con = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._con.execute("pragma journal_mode=wal")
        # NORMAL in WAL mode: a power cut may lose the last commits, never corrupt the file.
        self._con.execute("pragma synchronous=normal")
        self._con.executescript(_SCHEMA)
        self._ensure_transaction_index()
        self._use_replica = replica
        self._replica: _Replica | None = None
        self._data_version: int | None = None
        self.commits = 0  # recording commits of this client: what the checkpointer watches
        self.checkpoints: WalCheckpointer | None = None
        if checkpoint_interval is not None and self.path != ":memory:":
            self._con.execute("pragma wal_autocheckpoint=0")
            self.checkpoints = WalCheckpointer(
                self.path, lambda: self.commits, checkpoint_interval, name="online-store-checkpoints"
            )

    def _ensure_transaction_index(self) -> None:
        if self._con.execute(
            "select 1 from sqlite_master where type = 'index' and name = ?", (_TRANSACTION_INDEX,)
        ).fetchone():
            return
        self._con.execute("begin immediate")
        try:
            self._con.execute(_DEDUPLICATE)
            self._con.execute(f"create unique index if not exists {_TRANSACTION_INDEX} on events (transaction_id)")
            self._con.execute("commit")
        except BaseException:
            self._con.execute("rollback")
            raise

    def _synced_replica(self) -> _Replica:
        version = self._con.execute("pragma data_version").fetchone()[0]
        if self._replica is None or version != self._data_version:
            self._replica = self._load_all()
            self._data_version = version
        return self._replica

    def _load_all(self) -> _Replica:
        histories: dict[str, AccountEvents] = {}
        held: dict[str, tuple[str, int]] = {}
        for account_id, ts, txid, amount, merchant, country in self._con.execute(
            "select account_id, ts_us, transaction_id, amount_usd, merchant_id, country from events "
            "order by account_id, ts_us, transaction_id"
        ):
            history = histories.get(account_id)
            if history is None:
                history = histories[account_id] = AccountEvents()
            history.append(ts, txid, amount, merchant, country)
            held[txid] = (account_id, ts)
        for account_id, *snapshot in self._con.execute(
            "select account_id, valid_from_us, created_at_us, home_country, age_band from snapshots "
            "order by account_id, valid_from_us"
        ):
            histories.setdefault(account_id, AccountEvents()).snapshots.append(AccountSnapshot(*snapshot))
        return _Replica(histories, held, self._retained_since())

    def _retained_since(self) -> int | None:
        row = self._con.execute("select value from meta where key = 'retained_since_us'").fetchone()
        return _int_or_none(row[0] if row else None)

    def read(self, account_ids: Sequence[str], since_us: int, until_us: int) -> dict[str, AccountEvents]:
        with self._lock:
            return self._read(account_ids, since_us, until_us)

    def _read(self, account_ids: Sequence[str], since_us: int, until_us: int) -> dict[str, AccountEvents]:
        result: dict[str, AccountEvents] = {}
        if self._use_replica:
            replica = self._synced_replica()
            for account_id in account_ids:
                history = replica.histories.get(account_id)
                if history is not None:
                    result[account_id] = history.window(since_us, until_us)
            return result
        for account_id in account_ids:
            history = AccountEvents()
            for ts, txid, amount, merchant, country in self._con.execute(
                "select ts_us, transaction_id, amount_usd, merchant_id, country from events "
                "where account_id = ? and ts_us >= ? and ts_us < ? order by ts_us, transaction_id",
                (account_id, since_us, until_us),
            ):
                history.append(ts, txid, amount, merchant, country)
            history.snapshots = [
                AccountSnapshot(*row)
                for row in self._con.execute(
                    "select valid_from_us, created_at_us, home_country, age_band from snapshots "
                    "where account_id = ? order by valid_from_us",
                    (account_id,),
                )
            ]
            if history.ts_us or history.snapshots:
                result[account_id] = history
        return result

    def lookup(
        self, account_ids: Sequence[str], transaction_ids: Sequence[str], since_us: int, until_us: int
    ) -> StoreRead:
        with self._lock:
            histories = self._read(account_ids, since_us, until_us)
            if self._use_replica:
                replica = self._replica  # synced by _read, under the same lock
                held = {t: replica.held[t] for t in transaction_ids if t in replica.held}
                return StoreRead(histories, held, replica.retained_since_us)
            held = {}
            ids = list(transaction_ids)
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                for txid, account_id, ts in self._con.execute(
                    f"select transaction_id, account_id, ts_us from events where transaction_id in ({', '.join('?' * len(chunk))})",
                    chunk,
                ):
                    held[txid] = (account_id, ts)
            return StoreRead(histories, held, self._retained_since())

    def record_events(self, events: Sequence[EventRecord]) -> int:
        if not events:
            return 0
        with self._lock:
            replica = self._synced_replica() if self._use_replica else None
            added: list[EventRecord] = []
            self._con.execute("begin immediate")
            try:
                for e in events:
                    # OR IGNORE covers the unique transaction id too: the first version stays.
                    cursor = self._con.execute(
                        "insert or ignore into events values (?, ?, ?, ?, ?, ?)",
                        (e.account_id, e.ts_us, e.transaction_id, e.amount_usd, e.merchant_id, e.country),
                    )
                    if cursor.rowcount == 1:
                        added.append(e)
                self._set_meta_max("watermark_us", max(e.ts_us for e in events))
                self._set_meta("last_recorded_at", repr(time.time()))
                self._con.execute("commit")
                self.commits += 1
            except BaseException:
                self._con.execute("rollback")
                self._replica = None
                raise
            if replica is not None:
                # Our own commit leaves data_version unchanged: apply it to the replica by hand.
                for e in added:
                    history = replica.histories.get(e.account_id)
                    if history is None:
                        history = replica.histories[e.account_id] = AccountEvents()
                    history.insert(e)
                    replica.held[e.transaction_id] = (e.account_id, e.ts_us)
        return len(added)

    def rebuild(
        self,
        events: Iterable[EventRecord],
        snapshots: Iterable[tuple[str, AccountSnapshot]],
        offline_watermark_us: int,
        allowed_lateness_us: int = DEFAULT_ALLOWED_LATENESS_US,
    ) -> None:
        horizon = retention_horizon(offline_watermark_us, allowed_lateness_us)
        with self._lock:
            self._con.execute("begin immediate")
            try:
                # The horizon lies before the watermark: this drops both the warehouse period and older events.
                self._con.execute("delete from events where ts_us <= ?", (offline_watermark_us,))
                # OR REPLACE: the warehouse's version of a transaction replaces one recorded online after the watermark.
                self._con.executemany(
                    "insert or replace into events values (?, ?, ?, ?, ?, ?)",
                    (
                        (e.account_id, e.ts_us, e.transaction_id, e.amount_usd, e.merchant_id, e.country)
                        for e in events
                        if e.ts_us >= horizon
                    ),
                )
                self._con.execute("delete from snapshots")
                self._con.executemany(
                    "insert or replace into snapshots values (?, ?, ?, ?, ?)",
                    ((a, s.valid_from_us, s.created_at_us, s.home_country, s.age_band) for a, s in snapshots),
                )
                newest = self._con.execute("select max(ts_us) from events").fetchone()[0]
                self._set_meta("watermark_us", str(newest) if newest is not None else None)
                self._set_meta("offline_watermark_us", str(offline_watermark_us))
                self._set_meta("retained_since_us", str(horizon))
                self._set_meta("allowed_lateness_us", str(allowed_lateness_us))
                self._set_meta("materialized_at", repr(time.time()))
                self._set_meta("spec_version", spec_version())
                self._con.execute("commit")
                self.commits += 1
            except BaseException:
                self._con.execute("rollback")
                raise
            finally:
                self._replica = None

    def status(self) -> StoreStatus:
        with self._lock:
            meta = dict(self._con.execute("select key, value from meta").fetchall())
            events = self._con.execute("select count(*) from events").fetchone()[0]
            accounts = self._con.execute("select count(distinct account_id) from snapshots").fetchone()[0]
        return StoreStatus.from_meta(meta, events, accounts)

    def close(self) -> None:
        if self.checkpoints is not None:
            self.checkpoints.stop()
        with self._lock:
            self._con.close()

    def _set_meta(self, key: str, value: str | None) -> None:
        if value is None:
            self._con.execute("delete from meta where key = ?", (key,))
        else:
            self._con.execute("insert or replace into meta values (?, ?)", (key, value))

    def _set_meta_max(self, key: str, value: int) -> None:
        current = self._con.execute("select value from meta where key = ?", (key,)).fetchone()
        if current is None or int(current[0]) < value:
            self._set_meta(key, str(value))


class RedisOnlineStore(OnlineStore):
    """The production online store on Redis.

    Keys under `prefix`: `<prefix>:ev:<account>` (sorted set, score = event time in
    microseconds, member = the event's fields joined by '|'), `<prefix>:snap:<account>`
    (sorted set by valid_from), `<prefix>:ids` (hash: transaction id -> 'account|time' of
    the version held) and `<prefix>:meta` (hash). Account ids and merchant ids may not
    contain '|'; the contract's id columns never do. The scripts that keep ids unique touch
    the events of the account an id is held in, so the store needs one Redis server (not a
    cluster), as it always has.
    """

    def __init__(self, url: str, prefix: str = DEFAULT_REDIS_PREFIX) -> None:
        import redis  # only the production store needs the client

        self.url = url
        self.prefix = prefix
        self._client = redis.Redis.from_url(url, decode_responses=True)
        self._add_once = self._client.register_script(self._ADD_ONCE)
        self._rebuild_account = self._client.register_script(self._REBUILD_ACCOUNT)

    def _ev(self, account_id: str) -> str:
        return f"{self.prefix}:ev:{account_id}"

    def _snap(self, account_id: str) -> str:
        return f"{self.prefix}:snap:{account_id}"

    @property
    def _meta(self) -> str:
        return f"{self.prefix}:meta"

    @property
    def _ids(self) -> str:
        return f"{self.prefix}:ids"

    @staticmethod
    def _event_member(e: EventRecord) -> str:
        # repr() of a float round-trips exactly.
        return f"{e.ts_us}|{e.transaction_id}|{e.amount_usd!r}|{e.merchant_id}|{e.country}"

    @staticmethod
    def _snapshot_member(s: AccountSnapshot) -> str:
        return f"{s.valid_from_us}|{s.created_at_us}|{s.home_country or ''}|{s.age_band or ''}"

    def _queue_read(self, pipe, account_ids: Sequence[str], since_us: int, until_us: int) -> None:
        for account_id in account_ids:
            pipe.zrangebyscore(self._ev(account_id), since_us, f"({until_us}")
            pipe.zrange(self._snap(account_id), 0, -1)

    @staticmethod
    def _parse_read(account_ids: Sequence[str], replies: list) -> dict[str, AccountEvents]:
        result: dict[str, AccountEvents] = {}
        for i, account_id in enumerate(account_ids):
            members, snapshots = replies[2 * i], replies[2 * i + 1]
            if not members and not snapshots:
                continue
            history = AccountEvents()
            # Members of equal score come back in lexical order; sort like sqlite does.
            for ts, txid, amount, merchant, country in sorted(
                (m.split("|") for m in members), key=lambda p: (int(p[0]), p[1])
            ):
                history.append(int(ts), txid, float(amount), merchant, country)
            for member in snapshots:
                valid_from, created, home, age = member.split("|")
                history.snapshots.append(AccountSnapshot(int(valid_from), int(created), home or None, age or None))
            history.snapshots.sort(key=lambda s: s.valid_from_us)
            result[account_id] = history
        return result

    def read(self, account_ids: Sequence[str], since_us: int, until_us: int) -> dict[str, AccountEvents]:
        pipe = self._client.pipeline(transaction=False)
        self._queue_read(pipe, account_ids, since_us, until_us)
        return self._parse_read(account_ids, pipe.execute())

    def lookup(
        self, account_ids: Sequence[str], transaction_ids: Sequence[str], since_us: int, until_us: int
    ) -> StoreRead:
        ids = list(transaction_ids)
        # One round trip, one MULTI: the events, the ids and the horizon of one state.
        pipe = self._client.pipeline(transaction=True)
        self._queue_read(pipe, account_ids, since_us, until_us)
        if ids:
            pipe.hmget(self._ids, ids)
        pipe.hget(self._meta, "retained_since_us")
        replies = pipe.execute()
        histories = self._parse_read(account_ids, replies[: 2 * len(account_ids)])
        held = {}
        for txid, value in zip(ids, replies[2 * len(account_ids)] if ids else []):
            if value is not None:
                account_id, ts = value.rsplit("|", 1)
                held[txid] = (account_id, int(ts))
        return StoreRead(histories, held, _int_or_none(replies[-1]))

    # First version wins: the id is claimed in the index before its event is added.
    # KEYS: ids hash, the account's events; ARGV: time, member, transaction id, account id.
    _ADD_ONCE = """
if redis.call('HSETNX', KEYS[1], ARGV[3], ARGV[4] .. '|' .. ARGV[1]) == 0 then return 0 end
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[2])
return 1
"""

    def record_events(self, events: Sequence[EventRecord]) -> int:
        if not events:
            return 0
        pipe = self._client.pipeline(transaction=True)
        for e in events:
            self._add_once(
                keys=[self._ids, self._ev(e.account_id)],
                args=[e.ts_us, self._event_member(e), e.transaction_id, e.account_id],
                client=pipe,
            )
        newest = max(e.ts_us for e in events)
        added = sum(pipe.execute())
        self._set_meta_max("watermark_us", newest)
        self._client.hset(self._meta, "last_recorded_at", repr(time.time()))
        return added

    # One account's rebuild, atomic. KEYS: its events, its snapshots, the ids hash.
    # ARGV: watermark, account id, the events' key prefix, n, n x (member, time, id), m, m x (member, valid_from).
    _REBUILD_ACCOUNT = """
local ev, snap, ids = KEYS[1], KEYS[2], KEYS[3]
local watermark, account, ev_prefix = ARGV[1], ARGV[2], ARGV[3]
-- The warehouse period is replaced (the horizon lies before it): its events and their ids go.
for _, member in ipairs(redis.call('ZRANGEBYSCORE', ev, '-inf', watermark)) do
  local ts, id = string.match(member, '^([^|]*)|([^|]*)|')
  if redis.call('HGET', ids, id) == account .. '|' .. ts then redis.call('HDEL', ids, id) end
end
redis.call('ZREMRANGEBYSCORE', ev, '-inf', watermark)
-- Events kept (newer than the watermark) are indexed too: stores written before the index.
for _, member in ipairs(redis.call('ZRANGEBYSCORE', ev, '(' .. watermark, '+inf')) do
  local ts, id = string.match(member, '^([^|]*)|([^|]*)|')
  redis.call('HSETNX', ids, id, account .. '|' .. ts)
end
local n = tonumber(ARGV[4])
local i = 5
for _ = 1, n do
  local member, ts, id = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  i = i + 3
  -- The warehouse's version of a transaction replaces a version recorded online.
  local held = redis.call('HGET', ids, id)
  if held then
    local held_account, held_ts = string.match(held, '^(.*)|([^|]*)$')
    local key = ev_prefix .. held_account
    local head = held_ts .. '|' .. id .. '|'
    for _, other in ipairs(redis.call('ZRANGEBYSCORE', key, held_ts, held_ts)) do
      if string.sub(other, 1, string.len(head)) == head then redis.call('ZREM', key, other) end
    end
  end
  redis.call('ZADD', ev, ts, member)
  redis.call('HSET', ids, id, account .. '|' .. ts)
end
redis.call('DEL', snap)
local m = tonumber(ARGV[i])
i = i + 1
for _ = 1, m do
  redis.call('ZADD', snap, ARGV[i + 1], ARGV[i])
  i = i + 2
end
return n
"""

    def _set_meta_max(self, key: str, value: int) -> None:
        # Compare-and-set in Lua so concurrent recorders never move the watermark back.
        script = (
            "local v = redis.call('HGET', KEYS[1], ARGV[1]) "
            "if (not v) or tonumber(v) < tonumber(ARGV[2]) then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end"
        )
        self._client.eval(script, 1, self._meta, key, str(value))

    def rebuild(
        self,
        events: Iterable[EventRecord],
        snapshots: Iterable[tuple[str, AccountSnapshot]],
        offline_watermark_us: int,
        allowed_lateness_us: int = DEFAULT_ALLOWED_LATENESS_US,
    ) -> None:
        horizon = retention_horizon(offline_watermark_us, allowed_lateness_us)
        by_account: dict[str, list[EventRecord]] = {}
        for e in events:
            if e.ts_us >= horizon:
                by_account.setdefault(e.account_id, []).append(e)
        snaps: dict[str, list[AccountSnapshot]] = {}
        for account_id, s in snapshots:
            snaps.setdefault(account_id, []).append(s)
        existing = {k[len(self.prefix) + 4 :] for k in self._client.scan_iter(f"{self.prefix}:ev:*", count=1000)}
        existing |= {k[len(self.prefix) + 6 :] for k in self._client.scan_iter(f"{self.prefix}:snap:*", count=1000)}
        previous = _int_or_none(self._client.hget(self._meta, "watermark_us"))
        # While accounts are rebuilt one by one, lookups refuse what either retention may lack.
        self._set_meta_max("retained_since_us", horizon)
        accounts = sorted(set(by_account) | set(snaps) | existing)
        ev_prefix = f"{self.prefix}:ev:"
        for start in range(0, len(accounts), 500):
            pipe = self._client.pipeline(transaction=False)
            for account_id in accounts[start : start + 500]:
                args: list[object] = [offline_watermark_us, account_id, ev_prefix, len(by_account.get(account_id, ()))]
                for e in by_account.get(account_id, ()):
                    args += [self._event_member(e), e.ts_us, e.transaction_id]
                args.append(len(snaps.get(account_id, ())))
                for s in snaps.get(account_id, ()):
                    args += [self._snapshot_member(s), s.valid_from_us]
                self._rebuild_account(
                    keys=[self._ev(account_id), self._snap(account_id), self._ids], args=args, client=pipe
                )
            pipe.execute()
        # Kept online events are newer than the offline watermark; older state is gone.
        candidates = [max(e.ts_us for e in batch) for batch in by_account.values()]
        if previous is not None and previous > offline_watermark_us:
            candidates.append(previous)
        newest = max(candidates) if candidates else None
        mapping = {
            "offline_watermark_us": str(offline_watermark_us),
            "retained_since_us": str(horizon),
            "allowed_lateness_us": str(allowed_lateness_us),
            "materialized_at": repr(time.time()),
            "spec_version": spec_version(),
        }
        pipe = self._client.pipeline(transaction=True)
        if newest is not None:
            mapping["watermark_us"] = str(newest)
        else:
            pipe.hdel(self._meta, "watermark_us")
        pipe.hset(self._meta, mapping=mapping)
        pipe.execute()

    def status(self) -> StoreStatus:
        meta = self._client.hgetall(self._meta)
        pipe = self._client.pipeline(transaction=False)
        ev_keys = list(self._client.scan_iter(f"{self.prefix}:ev:*", count=1000))
        for key in ev_keys:
            pipe.zcard(key)
        events = sum(pipe.execute()) if ev_keys else 0
        accounts = sum(1 for _ in self._client.scan_iter(f"{self.prefix}:snap:*", count=1000))
        return StoreStatus.from_meta(meta, events, accounts)

    def delete_all(self) -> int:
        """Remove every key under this store's prefix (scratch stores); returns the count."""
        keys = list(self._client.scan_iter(f"{self.prefix}:*", count=1000))
        return self._client.delete(*keys) if keys else 0

    def close(self) -> None:
        self._client.close()


def _int_or_none(value: str | None) -> int | None:
    return int(value) if value not in (None, "") else None


def _float_or_none(value: str | None) -> float | None:
    return float(value) if value not in (None, "") else None


def open_online_store(
    backend: str,
    *,
    sqlite_path: str | Path | None = None,
    redis_url: str | None = None,
    key_prefix: str = DEFAULT_REDIS_PREFIX,
    checkpoint_interval: float | None = None,
) -> OnlineStore:
    """A new client of the online store: `backend` "sqlite" opens (or creates) the file `sqlite_path`,
    "redis" connects to `redis_url` (redis://host:port/db) with every key under `key_prefix`. The caller
    closes it. ValueError naming what is missing when the backend's location is empty, or when the backend
    is neither. The one place that picks a store class: the serving process and the Dagster resource both
    come here. `checkpoint_interval` (sqlite): checkpoint the WAL in a thread every that many seconds, never
    inside a recording commit (the serving process's choice; see SqliteOnlineStore)."""
    if backend == "redis":
        if not redis_url:
            raise ValueError("online store backend is redis but redis_url is empty: set MLOPS_REDIS_URL")
        return RedisOnlineStore(redis_url, key_prefix)
    if backend == "sqlite":
        if not sqlite_path:
            raise ValueError("online store backend is sqlite but sqlite_path is empty")
        return SqliteOnlineStore(sqlite_path, checkpoint_interval=checkpoint_interval)
    raise ValueError(f"online store backend must be one of {BACKENDS}, got {backend!r}")
