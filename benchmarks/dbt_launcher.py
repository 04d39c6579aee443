"""One `dbt build` of the warehouse through `mlops-dbt` (the warm launcher, mlops_core/warm_dbt.py) against the
venv's own `dbt`, the same command on the same warehouse, interleaved in one run.

Usage:
  .venv/bin/python benchmarks/dbt_launcher.py [--repeats 7] [--days 14] [--rows-per-day 2000]

Set-up (not timed): a demo landing of --days days, loaded through `mlops ingest` with the cold dbt. Then
--repeats pairs of the data layer's own dbt command (`dbt build --exclude-resource-type unit_test`, as
mlops_assets/transform/assets.py runs it), each side in turn, each with a fresh target folder holding the
warehouse's saved parse state (as resources/warehouse.py gives every run).

Measured per command: wall time, and CPU time of every process the command used. For the cold dbt that is
the child's rusage; for the warm one, the client's rusage plus what the server's children (the handler and
its dbt fork) add to the server's. The warm server is started before the first pair and its start-up is
reported apart: it is paid once per 5 idle minutes, not per command.

Row: `dbt_build_cpu_warm_vs_cold` (median CPU seconds, ours = warm, peer = cold). No goal of its own: it
is a cause of the test suite's time (issue 18, `make test` under 10 minutes).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from results import common, record, row, show

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
COMMAND = ["build", "--exclude-resource-type", "unit_test"]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _server_children_cpu(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.children_user + times.children_system


def _settle(pid: int, quiet_s: float = 1.5) -> float:
    """The server reaps its handlers once a second: wait until its children's CPU stops growing."""
    last, stable_since = _server_children_cpu(pid), time.monotonic()
    while time.monotonic() - stable_since < quiet_s:
        time.sleep(0.1)
        now = _server_children_cpu(pid)
        if now != last:
            last, stable_since = now, time.monotonic()
    return last


def build(executable: str, env: dict[str, str], state: Path, server: int | None) -> tuple[float, float]:
    with tempfile.TemporaryDirectory(prefix="dbt-target-") as target:
        if state.is_file():
            shutil.copyfile(state, Path(target) / "partial_parse.msgpack")
        before_children = _children_cpu()
        before_server = _settle(server) if server else 0.0
        started = time.perf_counter()
        done = subprocess.run(
            [executable, *COMMAND, "--target-path", target],
            cwd=ROOT / "dbt_project",
            env=env,
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"{executable} {' '.join(COMMAND)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        cpu = _children_cpu() - before_children
        if server:
            cpu += _settle(server) - before_server
    return wall, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--rows-per-day", type=int, default=2000)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="dbt-launcher-"))
    home = work / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "DAGSTER_"))}
    env.update(
        MLOPS_HOME=str(home),
        MLFLOW_DISABLE_TELEMETRY="true",
        MLOPS_DBT_LAUNCHER="cold",
        # A server of this run's own, stopped by its pid at the end.
        MLOPS_DBT_SOCKET_DIR=str(work / "warm"),
    )
    try:
        subprocess.run([str(BIN / "mlops"), "prepare"], env=env, cwd=ROOT, check=True, capture_output=True)
        start = "2026-05-01"
        subprocess.run(
            [str(BIN / "mlops"), "demo", "generate", "--start", start, "--days", str(args.days)]
            + ["--rows-per-day", str(args.rows_per_day)],
            env=env,
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        end = (dt.date.fromisoformat(start) + dt.timedelta(days=args.days - 1)).isoformat()
        subprocess.run(
            [str(BIN / "mlops"), "ingest", "--start", start, "--end", end],
            env=env,
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        dbt_env = {**env, "MLOPS_DUCKDB_PATH": str(home / "warehouse.duckdb")}
        state = home / "warehouse.duckdb.dbt_partial_parse.msgpack"

        from mlops_core import warm_dbt

        os.environ[warm_dbt.SOCKET_DIR_ENV] = env["MLOPS_DBT_SOCKET_DIR"]
        started = time.perf_counter()
        warm_dbt.connect_or_start().close()
        server_start_s = time.perf_counter() - started
        server = warm_dbt.server_pid()

        cold_wall, cold_cpu, warm_wall, warm_cpu = [], [], [], []
        for _ in range(args.repeats):
            wall, cpu = build(str(BIN / "dbt"), dbt_env, state, None)
            cold_wall.append(wall)
            cold_cpu.append(cpu)
            wall, cpu = build(str(BIN / "mlops-dbt"), dbt_env, state, server)
            warm_wall.append(wall)
            warm_cpu.append(cpu)
    finally:
        for pid_file in (work / "warm").glob("*.pid"):
            pid = int(pid_file.read_text())
            psutil.Process(pid).terminate()
            psutil.Process(pid).wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)

    rounded = lambda values: [round(v, 3) for v in values]  # noqa: E731
    rows = [
        row(
            "dbt_build_cpu_warm_vs_cold",
            ours=statistics.median(warm_cpu),
            peer=statistics.median(cold_cpu),
            peer_name="the venv's `dbt`, the same `dbt build` on the same warehouse, interleaved",
            ratio="peer/ours",
            meaning="times less CPU per dbt command",
            unit="s",
            goal=None,
            met=None,
            details={
                "repeats": args.repeats,
                "warehouse": f"{args.days} days x ~{args.rows_per_day} transactions, loaded by `mlops ingest`",
                "cpu_s_warm": rounded(warm_cpu),
                "cpu_s_cold": rounded(cold_cpu),
                "wall_s_warm": rounded(warm_wall),
                "wall_s_cold": rounded(cold_wall),
                "wall_median_s_warm": round(statistics.median(warm_wall), 3),
                "wall_median_s_cold": round(statistics.median(cold_wall), 3),
                "server_start_s": round(server_start_s, 3),
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
