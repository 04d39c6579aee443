"""HTTP/1.1 load generator for the serving benchmark: one process, raw asyncio, keep-alive.

Run by benchmarks/serving.py as a separate process, one leg per process; also usable alone:

  .venv/bin/python benchmarks/loadgen.py --port 8000 --path /v1/predict --bodies bodies.json \
      --mode closed --concurrency 8 --duration 4 --warmup 0.5
  .venv/bin/python benchmarks/loadgen.py --port 8000 --path /v1/predict --bodies bodies.json \
      --mode open --rate 500 --duration 10 --warmup 1 --connections 32

`--bodies` is a JSON list of request bodies, each already serialized as a JSON string; they
are sent in order, cycling. Every request is built once, before the clock starts. With
`--fresh-transactions-from N` the bodies are transactions and each is sent as a new one
(`fresh_transactions`: a new id numbered from N, the time moved on per pass), so no leg
repeats a transaction; `sent` in the output is where the next leg starts. `--samples-out`
writes every recorded request's end time and latency, to see when the slow ones came.

Modes:
- closed: `concurrency` keep-alive connections, each sending its next request as soon as the
  previous response is complete. Latency is from the write to the end of the response.
- open: requests are due at fixed times, t0 + k / rate, whatever the server does. Each goes out
  on an idle connection, or waits in a FIFO for one, and its latency is measured from its
  *scheduled* time, so a server that falls behind is charged for the queue (no coordinated
  omission). The event loop uses select(2), whose timeout has microsecond resolution (epoll's
  is a millisecond), so a request leaves within tens of microseconds of its due time; the
  send lag is reported to show that.

Requests whose send time falls inside `warmup` are not recorded. Each leg stops at
`duration` after the warm-up or at `max_requests` recorded requests, whichever comes first,
then waits up to `timeout` seconds for the responses still outstanding (counted as timeouts
if they never come). Errors are counted, never retried: a non-2xx status, a socket error or
a connection the server closed. One JSON object goes to stdout (or --out).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import datetime
import gc
import json
import math
import resource
import selectors
import socket
import sys
import time

_CONTENT_LENGTH = b"\r\ncontent-length:"
_CHUNKED = b"transfer-encoding: chunked"


def build_requests(host: str, port: int, path: str, bodies: list[str | list[str]]) -> list[bytes]:
    """One request per body; a body given as [path, body] goes to its own path (many projects in one leg)."""
    out = []
    for item in bodies:
        target, body = (item[0], item[1]) if isinstance(item, list) else (path, item)
        head = (
            f"POST {target} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            "Accept: application/json\r\n"
        )
        data = body.encode()
        out.append(f"{head}Content-Length: {len(data)}\r\n\r\n".encode() + data)
    return out


def fresh_transactions(bodies: list[str], first: int, count: int) -> list[str]:
    """`count` transactions none of which was sent before: body g (from `first`) is body g mod n of `bodies`
    with the transaction_id `<id>-lg<g>` and its event_timestamp moved forward by (g div n + 1) times the span
    of `bodies`, so every transaction sent comes after the bodies themselves (which may be stored already) and
    each pass over them continues the stream in time.

    A repeated transaction_id is an idempotent no-op for the scoring endpoint (nothing is recorded), so
    cycling a few thousand payloads measured a cheaper path than real traffic; each transaction here is new
    to the online store and the prediction log, and account histories grow as they would."""
    parsed = [json.loads(body) for body in bodies]
    stamps = [datetime.datetime.fromisoformat(p["event_timestamp"]) for p in parsed]
    span = max(stamps) - min(stamps) + datetime.timedelta(seconds=1)
    out = []
    for g in range(first, first + count):
        body = dict(parsed[g % len(parsed)])
        body["transaction_id"] = f"{body['transaction_id']}-lg{g}"
        body["event_timestamp"] = (stamps[g % len(parsed)] + (g // len(parsed) + 1) * span).isoformat()
        out.append(json.dumps(body))
    return out


class Connection(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight (no pipelining)."""

    def __init__(self, on_done) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.on_done = on_done  # called as on_done(conn, status, t_end, body); status -1 = socket error
        self.busy = False
        self.tag = None  # what the caller attached to the request in flight
        self.t_send = 0.0
        self.closed = False
        self.ready = asyncio.get_running_loop().create_future()

    def connection_made(self, transport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.ready.set_result(True)

    def send(self, request: bytes, tag, now: float) -> None:
        self.busy = True
        self.tag = tag
        self.t_send = now
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        buf = self.buffer
        end_of_head = buf.find(b"\r\n\r\n")
        if end_of_head < 0:
            return
        head = bytes(buf[:end_of_head]).lower()
        body_start = end_of_head + 4
        at = head.find(_CONTENT_LENGTH)
        if at >= 0:
            stop = head.find(b"\r\n", at + 2)
            length = int(head[at + len(_CONTENT_LENGTH) : stop if stop >= 0 else len(head)])
            end = body_start + length
            if len(buf) < end:
                return
        elif _CHUNKED in head:
            terminator = buf.find(b"0\r\n\r\n", body_start)
            if terminator < 0:
                return
            end = terminator + 5
        else:  # no length: the body runs to the end of the connection (not expected here)
            return
        t_end = time.monotonic()
        status = int(head[9:12])
        body = bytes(buf[body_start:end])
        del buf[:end]
        keep_alive = b"\r\nconnection: close" not in head
        self.busy = False
        self.on_done(self, status, t_end, body)
        if not keep_alive:
            self.closed = True
            self.transport.close()

    def connection_lost(self, exc) -> None:
        self.closed = True
        if self.busy:
            self.busy = False
            self.on_done(self, -1, time.monotonic(), repr(exc).encode())


def percentiles(samples_s: list[float]) -> dict[str, float]:
    """Nearest-rank percentiles, in milliseconds."""
    if not samples_s:
        return {}
    ordered = sorted(samples_s)
    n = len(ordered)

    def rank(q: float) -> float:
        return ordered[max(0, math.ceil(q * n) - 1)] * 1000

    return {
        "p50_ms": rank(0.50),
        "p90_ms": rank(0.90),
        "p99_ms": rank(0.99),
        "p999_ms": rank(0.999),
        "max_ms": ordered[-1] * 1000,
        "mean_ms": sum(ordered) / n * 1000,
    }


class Recorder:
    def __init__(self, measure_from: float, max_requests: int) -> None:
        self.measure_from = measure_from
        self.max_requests = max_requests
        self.latencies: list[float] = []
        self.ends: list[float] = []
        self.service: list[float] = []  # open loop: from the actual write
        self.send_lag: list[float] = []  # open loop: actual write minus due time
        self.status_counts: collections.Counter[str] = collections.Counter()
        self.socket_errors = 0
        self.non_2xx = 0
        self.error_samples: list[str] = []
        self.first_end: float | None = None
        self.last_end = 0.0
        self.full_at: float | None = None
        self.responses_2xx_total = 0  # warm-up included: what the server answered in all

    def record(
        self, start: float, t_send: float, status: int, t_end: float, body: bytes, due: float | None = None
    ) -> None:
        self.responses_2xx_total += 200 <= status < 300
        if start < self.measure_from:
            return
        self.status_counts[str(status)] += 1
        if status < 0:
            self.socket_errors += 1
        elif not 200 <= status < 300:
            self.non_2xx += 1
        if (status < 0 or not 200 <= status < 300) and len(self.error_samples) < 5:
            self.error_samples.append(f"{status}: {body[:300].decode(errors='replace')}")
        self.latencies.append(t_end - start)
        self.ends.append(t_end)
        if due is not None:
            self.service.append(t_end - t_send)
            self.send_lag.append(t_send - due)
        self.last_end = max(self.last_end, t_end)
        if len(self.latencies) >= self.max_requests and self.full_at is None:
            self.full_at = t_end


async def _connect(host: str, port: int, on_done) -> Connection:
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(lambda: Connection(on_done), host, port)
    await conn.ready
    return conn


_RECORDERS: list[Recorder] = []  # the leg's recorder, for --samples-out


async def run_closed(args, requests: list[bytes], sent: list[int]) -> dict:
    loop = asyncio.get_running_loop()
    counter = 0
    reconnects = 0
    stop_sending = False
    outstanding = 0
    drained = loop.create_future()
    rec: Recorder

    def issue(conn: Connection) -> None:
        nonlocal counter, outstanding
        now = time.monotonic()
        if stop_sending or now >= stop_at or rec.full_at is not None:
            if outstanding == 0 and not drained.done():
                drained.set_result(True)
            return
        outstanding += 1
        conn.send(requests[counter % len(requests)], None, now)
        counter += 1
        sent[0] = counter

    def on_done(conn: Connection, status: int, t_end: float, body: bytes) -> None:
        nonlocal outstanding
        outstanding -= 1
        rec.record(conn.t_send, conn.t_send, status, t_end, body)
        if conn.closed or status < 0:
            loop.create_task(replace(conn))
        else:
            issue(conn)

    async def replace(old: Connection) -> None:
        nonlocal reconnects
        reconnects += 1
        if old.transport is not None:
            old.transport.close()
        try:
            conn = await _connect(args.host, args.port, on_done)
        except OSError as exc:
            rec.socket_errors += 1
            rec.error_samples.append(f"reconnect: {exc!r}")
            if outstanding == 0 and not drained.done():
                drained.set_result(True)
            return
        issue(conn)

    conns = [await _connect(args.host, args.port, on_done) for _ in range(args.concurrency)]
    t0 = time.monotonic()
    measure_from = t0 + args.warmup
    stop_at = measure_from + args.duration
    rec = Recorder(measure_from, args.max_requests)
    _RECORDERS.append(rec)
    for conn in conns:
        issue(conn)
    try:
        await asyncio.wait_for(asyncio.shield(drained), timeout=args.warmup + args.duration + args.timeout)
    except TimeoutError:
        pass
    stop_sending = True
    timeouts = outstanding
    end = min(x for x in (stop_at, rec.full_at) if x is not None)
    for conn in conns:
        if conn.transport is not None:
            conn.transport.close()
    window = max(1e-9, end - measure_from)
    measured_in_window = sum(1 for t in rec.ends if t <= end)  # completed inside the window
    return {
        "mode": "closed",
        "concurrency": args.concurrency,
        "requests": len(rec.latencies),
        "window_s": window,
        "throughput_rps": measured_in_window / window,
        "latency": percentiles(rec.latencies),
        "timeouts": timeouts,
        "reconnects": reconnects,
        **_errors(rec, timeouts),
    }


def open_loop_requests(args) -> int:
    """How many requests an open-loop leg schedules."""
    return int(min(args.rate * (args.warmup + args.duration), args.max_requests + args.rate * args.warmup))


async def run_open(args, requests: list[bytes], sent: list[int]) -> dict:
    loop = asyncio.get_running_loop()
    pending: collections.deque = collections.deque()
    idle: collections.deque = collections.deque()
    outstanding = 0
    queued_dispatches = 0
    reconnects = 0
    all_sent = False
    drained = loop.create_future()
    rec: Recorder

    def take_idle() -> Connection | None:
        while idle:
            conn = idle.popleft()
            if not conn.closed:
                return conn
            loop.create_task(replace(conn))  # the server closed it while idle; a new one joins `idle`
        return None

    def dispatch(conn: Connection, k: int, due: float) -> None:
        nonlocal outstanding
        outstanding += 1
        conn.send(requests[k % len(requests)], (k, due), time.monotonic())

    def on_done(conn: Connection, status: int, t_end: float, body: bytes) -> None:
        nonlocal outstanding
        outstanding -= 1
        k, due = conn.tag
        rec.record(due, conn.t_send, status, t_end, body, due=due)
        if conn.closed or status < 0:
            loop.create_task(replace(conn))
        elif pending:
            dispatch(conn, *pending.popleft())
        else:
            idle.append(conn)  # FIFO: every connection keeps being used, none idles into a server timeout
        if all_sent and outstanding == 0 and not pending and not drained.done():
            drained.set_result(True)

    async def replace(old: Connection) -> None:
        nonlocal reconnects
        reconnects += 1
        if old.transport is not None:
            old.transport.close()
        try:
            conn = await _connect(args.host, args.port, on_done)
        except OSError as exc:
            rec.socket_errors += 1
            rec.error_samples.append(f"reconnect: {exc!r}")
            return
        if pending:
            dispatch(conn, *pending.popleft())
        else:
            idle.append(conn)

    for _ in range(args.connections):
        idle.append(await _connect(args.host, args.port, on_done))
    total = open_loop_requests(args)
    interval = 1.0 / args.rate
    t0 = time.monotonic() + 0.05
    rec = Recorder(t0 + args.warmup, args.max_requests)
    _RECORDERS.append(rec)
    k = 0
    while k < total:
        now = time.monotonic()
        due = t0 + k * interval
        if due > now:
            await asyncio.sleep(due - now)
            continue
        while k < total and t0 + k * interval <= now:  # everything due by now
            due = t0 + k * interval
            conn = take_idle()
            if conn is not None:
                dispatch(conn, k, due)
            else:
                pending.append((k, due))
                if due >= rec.measure_from:
                    queued_dispatches += 1
            k += 1
    all_sent = True
    sent[0] = total
    sent_until = time.monotonic()
    if outstanding or pending:
        try:
            await asyncio.wait_for(asyncio.shield(drained), timeout=args.timeout)
        except TimeoutError:
            pass
    timeouts = outstanding + len(pending)
    for conn in list(idle):
        conn.transport.close()
    measured_sent = total - int(math.ceil(args.rate * args.warmup))
    return {
        "mode": "open",
        "rate_rps": args.rate,
        "connections": args.connections,
        "requests": len(rec.latencies),
        "scheduled": measured_sent,
        "schedule_s": sent_until - rec.measure_from,
        "achieved_rps": len(rec.latencies) / max(1e-9, (rec.last_end - rec.measure_from)),
        "latency": percentiles(rec.latencies),
        "service_latency": percentiles(rec.service),
        "send_lag": percentiles(rec.send_lag),
        "queued_for_a_connection": queued_dispatches,
        "timeouts": timeouts,
        "reconnects": reconnects,
        **_errors(rec, timeouts),
    }


def _errors(rec: Recorder, timeouts: int) -> dict:
    return {
        "status_counts": dict(rec.status_counts),
        "non_2xx": rec.non_2xx,
        "socket_errors": rec.socket_errors,
        "errors": rec.non_2xx + rec.socket_errors + timeouts,
        "error_samples": rec.error_samples,
        "responses_2xx_total": rec.responses_2xx_total,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--bodies", required=True, help="JSON file: a list of serialized request bodies")
    parser.add_argument("--mode", choices=("closed", "open"), required=True)
    parser.add_argument("--concurrency", type=int, default=1, help="closed: connections, one request in flight each")
    parser.add_argument("--rate", type=float, default=500.0, help="open: requests per second")
    parser.add_argument("--connections", type=int, default=32, help="open: keep-alive connections")
    parser.add_argument("--duration", type=float, default=4.0, help="measured seconds after the warm-up")
    parser.add_argument("--warmup", type=float, default=0.5, help="seconds sent but not recorded")
    parser.add_argument("--max-requests", type=int, default=20_000, help="recorded requests at most")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for outstanding responses")
    parser.add_argument("--out", help="write the JSON here instead of stdout")
    parser.add_argument(
        "--samples-out",
        help="also write every recorded request's [end time, latency] (s, monotonic) here: the tail over time",
    )
    parser.add_argument(
        "--fresh-transactions-from",
        type=int,
        help="bodies are transactions: send each with a transaction_id never sent before, numbered from this "
        "(the next leg starts at this plus the leg's `sent`), its time moved on per pass (fresh_transactions)",
    )
    args = parser.parse_args()
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("loopback only")
    with open(args.bodies) as handle:
        bodies = json.load(handle)
    if args.fresh_transactions_from is not None:
        # Built in advance like any body: every request an open leg schedules; a closed leg's recorded maximum
        # and its warm-up at up to 20,000 requests/s. Past that a closed leg would repeat ids: counted below.
        count = open_loop_requests(args) if args.mode == "open" else args.max_requests + int(20_000 * args.warmup)
        bodies = fresh_transactions(bodies, args.fresh_transactions_from, count)
    requests = build_requests(args.host, args.port, args.path, bodies)
    gc.collect()
    gc.freeze()
    gc.disable()
    # select(2): microsecond timeouts, so scheduled sends are on time (few sockets, so its cost is nil).
    loop = asyncio.SelectorEventLoop(selectors.SelectSelector())
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    wall0 = time.monotonic()
    try:
        sent = [0]
        result = loop.run_until_complete(
            run_closed(args, requests, sent) if args.mode == "closed" else run_open(args, requests, sent)
        )
    finally:
        loop.close()
    result["sent"] = sent[0]
    # Bodies sent more than once (cycling): with fresh transactions each repeat is a no-op for the endpoint.
    result["repeated_bodies"] = max(0, sent[0] - len(requests))
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    wall = time.monotonic() - wall0
    result["client_cpu_share"] = ((cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)) / wall
    if args.samples_out and _RECORDERS:
        rec = _RECORDERS[-1]
        with open(args.samples_out, "w") as handle:
            json.dump([[end, latency] for end, latency in zip(rec.ends, rec.latencies)], handle)
    text = json.dumps(result)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
