"""Closed-loop benchmark: wall time from drifted data landing to a new champion serving.

Usage:
  .venv/bin/python benchmarks/closed_loop.py [--repeats 3] [--history-days 45] [--rows-per-day 2000]

Method: each repeat is a fresh `mlops simulate`-equivalent run (ClosedLoop) in its own MLOPS_HOME
under benchmarks/.work/closed_loop/: 45 days of history loaded and trained on, the first champion
rolled out to an endpoint on 127.0.0.1, then two simulated days of `covariate_drift` with the drift
starting on day 1. On day 1 the timer starts before the day's files land and stops when the endpoint
reports the new champion; the day's traffic replay is subtracted (in production it flows alongside,
not on the path). Phases: data layer (ingestion + dbt), monitoring_job, and the sensor tick that
launches retraining_job (training set, candidate, gates, staged rollout) in process.

Peer, measured in the same repeat on the same state right after: the same retraining launched by
hand the way CI would, `dagster job execute -m mlops_assets.definitions -j retraining_job` with the
same rollout config, in a fresh process. Goal: under 120 s from landing to a new champion.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from results import record, row, show

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / ".work" / "closed_loop"


def one_repeat(home: Path, history_days: int, rows_per_day: int) -> dict:
    """Runs in a child process: the loop, then the peer, on one MLOPS_HOME."""
    from mlops_cli.simulation.loop import QUIET, ClosedLoop, SimulationSpec, _merge, _retraining_config, isolated_home
    from mlops_core.serving.client import EndpointClient
    from mlops_core.serving.server import free_port

    # The first champion's gates are opened (the benchmark times the loop, the gates have their own tests);
    # the retraining faces the simulation's gates.
    open_gates = {
        "min_auc_pr": 0.0,
        "min_recall": 0.0,
        "max_recall_gap": 1.0,
        "max_false_positive_rate_gap": 1.0,
        "max_p99_latency_ms": 1000.0,
        "max_flip_rate": 1.0,
        "max_calibration_error": 1.0,
    }
    spec = SimulationSpec(
        days=2,
        scenario="covariate_drift",
        drift_day=1,
        history_days=history_days,
        rows_per_day=rows_per_day,
        training_lookback_days=history_days,
        initial_gates=open_gates,
        port=free_port(),
    )
    with isolated_home(home) as settings:
        loop = ClosedLoop(settings, spec, echo=lambda line: print(line, file=sys.stderr))
        try:
            records = loop.run()
            drifted = records[1]
            result = {
                "promoted": drifted.promoted,
                "retraining": drifted.retraining,
                "decision_s": drifted.seconds - drifted.phases.get("serve", 0.0),
                "landing_to_champion_s": drifted.landing_to_champion_seconds,
                "phases_s": {k: round(v, 2) for k, v in drifted.phases.items()},
                "drift_share": drifted.drift_share,
            }
            # Peer: the same retraining by hand from the CLI, on the same state.
            config = _merge(
                QUIET,
                _retraining_config(spec),
                {"ops": {"retraining_request": {"config": {"reason": "benchmark peer: by hand"}}}},
            )
            with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
                yaml.safe_dump(config, handle)
            dagster = Path(sys.executable).with_name("dagster")
            started = time.monotonic()
            peer = subprocess.run(
                [
                    str(dagster),
                    "job",
                    "execute",
                    "-m",
                    "mlops_assets.definitions",
                    "-j",
                    "retraining_job",
                    "-c",
                    handle.name,
                ],
                cwd=ROOT,
                env=os.environ.copy(),
                capture_output=True,
                text=True,
            )
            peer_s = time.monotonic() - started
            with EndpointClient(f"http://127.0.0.1:{spec.port}") as client:
                served = client.deployment()["champion_version"]
            result |= {"peer_cli_retraining_s": peer_s, "peer_ok": peer.returncode == 0, "peer_champion": served}
        finally:
            loop.stop_endpoint()
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--history-days", type=int, default=45)
    parser.add_argument("--rows-per-day", type=int, default=2000)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(one_repeat(Path(args.child), args.history_days, args.rows_per_day)))
        return
    results = []
    for i in range(args.repeats):
        home = WORK / f"repeat-{i}"
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                str(home),
                "--history-days",
                str(args.history_days),
                "--rows-per-day",
                str(args.rows_per_day),
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        if out.returncode != 0:
            sys.exit(f"repeat {i} failed:\n{out.stderr[-4000:]}")
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), flush=True)
    loop_s = [r["landing_to_champion_s"] for r in results if r["landing_to_champion_s"]] or [float("nan")]
    peer_s = [r["peer_cli_retraining_s"] for r in results]
    summary = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "repeats": len(results),
        "landing_to_champion_median_s": statistics.median(loop_s),
        "landing_to_champion_all_s": loop_s,
        "peer_cli_retraining_median_s": statistics.median(peer_s),
        "phases_median_s": {k: statistics.median(r["phases_s"][k] for r in results) for k in results[0]["phases_s"]},
        "promoted": sum(bool(r["promoted"]) for r in results),
        "landing_to_decision_all_s": [round(r["decision_s"], 1) for r in results],
        "goal_met": statistics.median(loop_s) < 120,
    }
    print(json.dumps(summary, indent=1))
    loop_row = row(
        "closed_loop_landing_to_champion",
        ours=summary["landing_to_champion_median_s"],
        peer=summary["peer_cli_retraining_median_s"],
        peer_name="`dagster job execute -j retraining_job` by hand on the same state (retraining and rollout alone)",
        ratio="ours/peer",
        meaning="times the peer's time",
        unit="s",
        goal="under 120 s from drifted data landing to a new champion serving",
        met=bool(summary["goal_met"]),
        details={
            k: summary[k]
            for k in (
                "repeats",
                "promoted",
                "landing_to_champion_all_s",
                "landing_to_decision_all_s",
                "phases_median_s",
            )
        }
        | {"peer_runs_s": peer_s, "history_days": args.history_days, "rows_per_day": args.rows_per_day},
    )
    record([loop_row])
    show([loop_row])


if __name__ == "__main__":
    main()
