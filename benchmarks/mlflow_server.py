"""`mlflow server` as the platform starts it (MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false, deploy/mlflow/run_server.sh,
`mlops ui`, the tests' servers) against MLflow's default (its GenAI job runner on), interleaved.

Usage:
  .venv/bin/python benchmarks/mlflow_server.py [--repeats 3] [--settle 20]

Each start: a fresh sqlite backend store on 127.0.0.1, `--workers 1`, timed until /health answers, then left
idle --settle seconds (the job runner's consumers start and poll in that time). Measured: the CPU time of the
server's whole process tree (summed before it is stopped, by its process group), the number of processes,
and the seconds to /health.

Row: `mlflow_server_start_cpu_without_job_runner` (median CPU seconds, ours = without the job runner, peer =
MLflow's default). No goal of its own: it is a cause of the test suite's time (issue 18).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
from results import common, record, row, show

MLFLOW = Path(sys.executable).parent / "mlflow"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_start(job_runner: bool, settle_s: float) -> tuple[float, float, int]:
    with tempfile.TemporaryDirectory(prefix="mlflow-server-") as data:
        port = _free_port()
        env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "true" if job_runner else "false"
        started = time.perf_counter()
        server = subprocess.Popen(
            [str(MLFLOW), "server", "--backend-store-uri", f"sqlite:///{data}/mlflow.db"]
            + ["--default-artifact-root", f"{data}/artifacts", "--host", "127.0.0.1", "--port", str(port)]
            + ["--workers", "1"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 120
            while True:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"mlflow server did not answer /health (exit {server.poll()})")
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            ready_s = time.perf_counter() - started
            time.sleep(settle_s)
            tree = [psutil.Process(server.pid), *psutil.Process(server.pid).children(recursive=True)]
            cpu = 0.0
            for process in tree:
                try:
                    times = process.cpu_times()
                    cpu += times.user + times.system + times.children_user + times.children_system
                except psutil.Error:
                    pass
            return cpu, ready_s, len(tree)
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--settle", type=float, default=20.0)
    args = parser.parse_args()
    measured: dict[bool, list[tuple[float, float, int]]] = {True: [], False: []}
    for _ in range(args.repeats):
        for job_runner in (True, False):
            measured[job_runner].append(one_start(job_runner, args.settle))
    cpu = {k: [m[0] for m in v] for k, v in measured.items()}
    rounded = lambda values: [round(v, 2) for v in values]  # noqa: E731
    rows = [
        row(
            "mlflow_server_start_cpu_without_job_runner",
            ours=round(statistics.median(cpu[False]), 2),
            peer=round(statistics.median(cpu[True]), 2),
            peer_name="MLflow's default `mlflow server` (GenAI job runner on), the same start, interleaved",
            ratio="peer/ours",
            meaning=f"times less CPU from start to {args.settle:.0f} s after /health answered",
            unit="s",
            goal=None,
            met=None,
            details={
                "repeats": args.repeats,
                "settle_s": args.settle,
                "cpu_s_without_job_runner": rounded(cpu[False]),
                "cpu_s_with_job_runner": rounded(cpu[True]),
                "processes_without_job_runner": [m[2] for m in measured[False]],
                "processes_with_job_runner": [m[2] for m in measured[True]],
                "health_s_without_job_runner": rounded([m[1] for m in measured[False]]),
                "health_s_with_job_runner": rounded([m[1] for m in measured[True]]),
                "load_average_1min_at_end": round(os.getloadavg()[0], 2),
            },
            shared=common(),
        )
    ]
    record(rows)
    show(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
