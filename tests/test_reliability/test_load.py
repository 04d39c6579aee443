"""Load: a live endpoint offered 1000 requests/s for 60 s on loopback fails none and loses none.

A real `mlops serve` process (serving_world) and benchmarks/loadgen.py in its own process,
open loop: requests are due at fixed times whatever the server does, and latency counts
from the scheduled time, so a server that falls behind is charged for its queue. The run is
bounded in time and count. Afterwards every answered request is in the prediction log.

The rate the server sustains is the machine's as much as the code's (869/s with a load average
of 4 on 2 cores, 1000/s on a quiet one), so it is recorded here and judged in benchmarks
(benchmarks/serving.py beside its peer, rows in benchmarks/results.json), never asserted: a test
fails on what the code does wrong, a starved machine only answers later.
"""

import json
import os
import subprocess
import sys
import time

import httpx
import pytest
from reliability_results import record
from serving_world import build_world, free_port, running_endpoint, transaction

from mlops_core.settings import REPO_ROOT

pytestmark = [pytest.mark.load, pytest.mark.slow]

RATE = 1000
SECONDS = 60
WARMUP = 2


def test_endpoint_offered_1000_requests_per_second_for_60_seconds_fails_and_loses_none(tmp_path):
    world = build_world(tmp_path / "world")
    total = RATE * (SECONDS + WARMUP)
    bodies = tmp_path / "bodies.json"
    # Every request a new transaction, as in production: each is scored, logged and recorded.
    bodies.write_text(json.dumps([json.dumps(transaction(1_000_000 + i)) for i in range(total)]))
    out = tmp_path / "load.json"
    port = free_port()
    with running_endpoint(world, port) as (url, _):
        with httpx.Client(base_url=url) as http:
            written_before = http.get("/ready").json()["prediction_log"]["written"]
        started = time.monotonic()
        done = subprocess.run(
            [
                sys.executable,
                str(REPO_ROOT / "benchmarks" / "loadgen.py"),
                "--port",
                str(port),
                "--path",
                "/v1/predict",
                "--bodies",
                str(bodies),
                "--mode",
                "open",
                "--rate",
                str(RATE),
                "--duration",
                str(SECONDS),
                "--warmup",
                str(WARMUP),
                "--connections",
                "64",
                "--max-requests",
                str(RATE * SECONDS),
                "--timeout",
                "10",
                "--out",
                str(out),
            ],
            capture_output=True,
            text=True,
            timeout=SECONDS + WARMUP + 60,
        )
        wall = time.monotonic() - started
        with httpx.Client(base_url=url) as http:
            ready = http.get("/ready").json()
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    latency = result["latency"]
    context = f"achieved {result['achieved_rps']:.0f}/s, latency {latency}, load average {os.getloadavg()} on {os.cpu_count()} CPUs"
    # The load ran (at least a second of it), and no request failed, however slowly a starved machine answered.
    assert result["requests"] >= RATE, context
    assert result["errors"] == 0, (result["status_counts"], result["error_samples"][:5], context)
    # Nothing lost: every request answered 200 (warm-up included) is in the prediction log.
    assert ready["prediction_log"]["written"] - written_before == result["responses_2xx_total"]
    assert ready["prediction_log"]["failures"] == 0
    record(
        "load",
        "1000 requests/s for 60 s",
        what=f"benchmarks/loadgen.py in its own process, open loop at {RATE}/s for {SECONDS} s (+{WARMUP} s warm-up) over 64 keep-alive "
        "connections to a live `mlops serve` on 127.0.0.1, each request a new transaction",
        expected="zero errors, every answered request in the prediction log (the rate is the benchmarks' to judge)",
        observed=f"{result['requests']} requests, {result['errors']} errors, {result['achieved_rps']:.0f}/s; latency from schedule "
        f"p50 {latency['p50_ms']:.2f} ms, p99 {latency['p99_ms']:.2f} ms, max {latency['max_ms']:.1f} ms; "
        f"{result['responses_2xx_total']} answered = {ready['prediction_log']['written'] - written_before} logged; "
        f"{wall:.0f} s wall, load average {os.getloadavg()[0]:.1f}",
        test="test_load.py::test_endpoint_offered_1000_requests_per_second_for_60_seconds_fails_and_loses_none",
    )
