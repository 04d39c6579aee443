"""Start-up of the commands a user waits on, each beside its floor, measured in the same run.

Usage:
  .venv/bin/python benchmarks/startup.py [--repeats 5] [--home benchmarks/.work/startup/home]

Measures (median of --repeats, the two sides interleaved so that load hits both alike):
- `dagster definitions validate -m mlops_assets.definitions` against the same command on
  benchmarks/peers/minimal_location.py (one asset: the floor). Goal: within 2x the floor.
  Also against benchmarks/peers/minimal_dbt_location.py (the same dbt project as @dbt_assets and
  nothing else): dagster-dbt imports dbt-core, which no code location with dbt models avoids, so that
  is the floor our own code is judged against.
- `mlops demo generate` of one small day (needs no Dagster), and `mlops serve --help`, against
  `python -c pass` in the same venv. Goal: under 2 s.
- `mlops prepare` on a prepared home (what CI and `eval "$(mlops prepare --env)"` run before `dagster job
  execute`), against `mlops serve --help`. Goal: under 2 s.
- the endpoint from `mlops serve` on a demo home until /ready answers true (a restart). Goal: under 5 s.
  The home is made once with `mlops demo run --days 90 --rows-per-day 300` if it has no champion.

Writes its rows to benchmarks/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
from results import common, record, row, show

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "DAGSTER_"))}
    env.update(MLOPS_HOME=str(home), DAGSTER_HOME=str(home / "dagster_home"), MLFLOW_DISABLE_TELEMETRY="true")
    return env


def timed(cmd: list[str], env: dict[str, str], cwd: Path = ROOT) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, env=env, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - started


def endpoint_ready_seconds(home: Path, port: int) -> float:
    started = time.perf_counter()
    server = subprocess.Popen(
        [str(BIN / "mlops"), "serve", "--port", str(port)],
        env=_env(home),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        while time.perf_counter() - started < 120:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).json().get("ready") is True:
                    return time.perf_counter() - started
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.05)
        raise TimeoutError("the endpoint was not ready within 120 s")
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--home", type=Path, default=ROOT / "benchmarks" / ".work" / "startup" / "home")
    args = parser.parse_args()
    home = args.home.resolve()
    env = _env(home)
    subprocess.run([str(BIN / "mlops"), "prepare"], env=env, cwd=ROOT, check=True, capture_output=True)
    if not (home / "data" / "serving" / "production" / "traffic_plan.json").exists():
        from mlops_core.serving.server import free_port

        subprocess.run(
            [str(BIN / "mlops"), "demo", "run", "--days", "90", "--rows-per-day", "300", "--port", str(free_port())],
            env=env,
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        subprocess.run([str(BIN / "mlops"), "serve", "--stop"], env=env, cwd=ROOT, capture_output=True)
    from mlops_core.serving.server import free_port

    samples: dict[str, list[float]] = {
        k: []
        for k in (
            "validate",
            "validate_floor",
            "validate_dbt_floor",
            "generate",
            "prepare",
            "serve_help",
            "python",
            "ready",
        )
    }
    for _ in range(args.repeats):
        samples["validate"].append(
            timed([str(BIN / "dagster"), "definitions", "validate", "-m", "mlops_assets.definitions"], env)
        )
        samples["validate_floor"].append(
            timed(
                [
                    str(BIN / "dagster"),
                    "definitions",
                    "validate",
                    "-f",
                    str(ROOT / "benchmarks" / "peers" / "minimal_location.py"),
                ],
                env,
            )
        )
        samples["validate_dbt_floor"].append(
            timed(
                [
                    str(BIN / "dagster"),
                    "definitions",
                    "validate",
                    "-f",
                    str(ROOT / "benchmarks" / "peers" / "minimal_dbt_location.py"),
                ],
                env,
            )
        )
        samples["generate"].append(
            timed(
                [
                    str(BIN / "mlops"),
                    "demo",
                    "generate",
                    "--start",
                    "2026-01-01",
                    "--days",
                    "1",
                    "--rows-per-day",
                    "10",
                    "--landing-dir",
                    str(home / "startup-landing"),
                ],
                env,
            )
        )
        samples["prepare"].append(timed([str(BIN / "mlops"), "prepare"], env))
        samples["serve_help"].append(timed([str(BIN / "mlops"), "serve", "--help"], env))
        samples["python"].append(timed([sys.executable, "-c", "pass"], env))
        samples["ready"].append(endpoint_ready_seconds(home, free_port()))
    median = {k: statistics.median(v) for k, v in samples.items()}
    shared = common()
    # The machine's load is part of the figure: the goals are for a quiet machine, the ratios hold under load.
    load = os.getloadavg()[0]
    details = lambda *keys: {  # noqa: E731
        "repeats": args.repeats,
        "load_average_1min_at_end": round(load, 2),
        **{f"{k}_runs_s": samples[k] for k in keys},
    }
    rows = [
        row(
            "startup_definitions_validate",
            ours=median["validate"],
            peer=median["validate_floor"],
            peer_name="`dagster definitions validate` of a one-asset code location (the floor)",
            ratio="ours/peer",
            meaning="times the floor's time",
            unit="s",
            goal="within 2x the floor",
            met=median["validate"] <= 2 * median["validate_floor"],
            details=details("validate", "validate_floor"),
            shared=shared,
        ),
        row(
            "startup_definitions_validate_vs_dbt_floor",
            ours=median["validate"],
            peer=median["validate_dbt_floor"],
            peer_name="`dagster definitions validate` of the same dbt project as @dbt_assets alone (the dagster-dbt floor)",
            ratio="ours/peer",
            meaning="times the dagster-dbt floor's time",
            unit="s",
            goal="within 2x the floor that the dbt integration imposes",
            met=median["validate"] <= 2 * median["validate_dbt_floor"],
            details={
                **details("validate", "validate_dbt_floor", "validate_floor"),
                "dbt_floor_over_plain_floor": median["validate_dbt_floor"] / median["validate_floor"],
            },
            shared=shared,
        ),
        row(
            "startup_demo_generate",
            ours=median["generate"],
            peer=median["python"],
            peer_name="python -c pass",
            ratio="ours/peer",
            meaning="times the interpreter's start-up",
            unit="s",
            goal="under 2 s",
            met=median["generate"] < 2.0,
            details=details("generate", "python"),
            shared=shared,
        ),
        row(
            "startup_serve_help",
            ours=median["serve_help"],
            peer=median["python"],
            peer_name="python -c pass",
            ratio="ours/peer",
            meaning="times the interpreter's start-up",
            unit="s",
            goal="under 2 s",
            met=median["serve_help"] < 2.0,
            details=details("serve_help", "python"),
            shared=shared,
        ),
        row(
            "startup_mlops_prepare",
            ours=median["prepare"],
            peer=median["serve_help"],
            peer_name="`mlops serve --help` (the same CLI's start-up, the floor of any `mlops` command)",
            ratio="ours/peer",
            meaning="times the CLI's start-up",
            unit="s",
            goal="under 2 s on a prepared home",
            met=median["prepare"] < 2.0,
            details=details("prepare", "serve_help"),
            shared=shared,
        ),
        row(
            "startup_endpoint_ready",
            ours=median["ready"],
            peer=median["serve_help"],
            peer_name="`mlops serve --help` (the same CLI's start-up, the floor of any `mlops` command)",
            ratio="ours/peer",
            meaning="times the CLI's start-up",
            unit="s",
            goal="under 5 s from start to /ready",
            met=median["ready"] < 5.0,
            details=details("ready", "serve_help"),
            shared=shared,
        ),
    ]
    record(rows)
    show(rows)
    print(json.dumps(samples))
    return 0


if __name__ == "__main__":
    sys.exit(main())
