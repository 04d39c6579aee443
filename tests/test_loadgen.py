"""benchmarks/loadgen.py's fresh transactions: a load leg never repeats a transaction (a repeat is a no-op the
endpoint does not record, so cycling a few thousand payloads measured a cheaper path than real traffic)."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
from pathlib import Path

_SPEC = importlib.util.spec_from_file_location(
    "benchmark_loadgen", Path(__file__).resolve().parents[1] / "benchmarks" / "loadgen.py"
)
loadgen = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(loadgen)

BODIES = [
    json.dumps(
        {"transaction_id": "t1", "account_id": "a1", "amount": 10.5, "event_timestamp": "2026-03-01T10:00:00+00:00"}
    ),
    json.dumps(
        {"transaction_id": "t2", "account_id": "a2", "amount": 20.0, "event_timestamp": "2026-03-01T10:00:30+00:00"}
    ),
    json.dumps(
        {"transaction_id": "t3", "account_id": "a1", "amount": 7.25, "event_timestamp": "2026-03-01T10:01:00+00:00"}
    ),
]


def _leg(first: int, count: int) -> list[dict]:
    return [json.loads(body) for body in loadgen.fresh_transactions(BODIES, first, count)]


def test_consecutive_legs_send_distinct_transactions_that_continue_the_stream_in_time():
    first, second = _leg(0, 7), _leg(7, 5)  # a leg that sent 7, then the next from 7
    sent = first + second
    ids = [t["transaction_id"] for t in sent]
    assert len(set(ids)) == len(ids) == 12
    assert ids[:4] == ["t1-lg0", "t2-lg1", "t3-lg2", "t1-lg3"] and ids[7] == "t2-lg7"
    # Everything but the id and the time is the body's own, in order.
    originals = [json.loads(b) for b in BODIES]
    for g, t in enumerate(sent):
        assert {k: v for k, v in t.items() if k not in ("transaction_id", "event_timestamp")} == {
            k: v for k, v in originals[g % 3].items() if k not in ("transaction_id", "event_timestamp")
        }
    # Each pass over the 3 bodies is moved on by their span (60 s) plus a second, the first pass too (the bodies
    # may be stored already: a new transaction at the very instant of a stored one would change its features).
    stamps = [dt.datetime.fromisoformat(t["event_timestamp"]) for t in sent]
    assert stamps[0] == dt.datetime.fromisoformat("2026-03-01T10:01:01+00:00")
    assert stamps[3] - stamps[0] == dt.timedelta(seconds=61)
    assert stamps[11] == dt.datetime.fromisoformat("2026-03-01T10:05:04+00:00")  # t3 on its 4th pass
    assert stamps == sorted(stamps)
