"""Pressure test of issue "many models": training all 100 template projects through the queued run coordinator.

A real Dagster deployment on this machine: `dagster-webserver` and `dagster-daemon` on 127.0.0.1 over one code
location holding fraud and 100 projects generated from the template (benchmarks/projects_at_scale.py's
generator), the production profile's queue and limits (deploy/dagster.production-local.yaml's
`run_coordinator` and `concurrency`, with sqlite storage instead of Postgres), and the default run launcher.
Every project's `<name>_training_job` (snapshots, candidate, gates, registration with the batch shadow,
promotion) is submitted at once through the GraphQL API, as the UI would; the daemon dequeues them.

Measured: the wall time from the first submission to the last run's end, each run's queue wait and duration,
the most runs ever in flight (from the runs' start and end times), and how each run ended. Peer, same run:
the same project's training job submitted alone, three times, through the same coordinator over a code location
with one project. The embedded warehouse is one DuckDB file that takes one writer process (the limit
`mlops/warehouse: 1`), so the 100 trainings run one after another: the ratio compares the 100-project wall time
with 100 times one training, and shows what the code location's size costs each run.

Run: .venv/bin/python benchmarks/projects_queued_training.py [--projects 100]
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml
from projects_at_scale import BIN, ROOT, _env, generate_projects
from results import common, record, row, show

START = dt.date(2026, 1, 1)
DAYS = 160  # the template's longest window (90 days), three labelled weekly snapshots and its 28-day horizon
ROWS_PER_DAY = 1000
TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_history(home: Path, projects: Path) -> None:
    """Demo data through the shared data layer (landing, raw, marts), in a child process with the home's env."""
    code = f"""
import datetime as dt
import dagster as dg
from mlops_core.datagen.generator import DemoSpec, generate_landing
from mlops_core.settings import Settings
from mlops_assets.ingestion.assets import raw_assets
from mlops_assets.transform.assets import warehouse_assets
from resources.environment import build_resources
settings = Settings.from_env()
start = dt.date.fromisoformat({START.isoformat()!r})
generate_landing(DemoSpec(start=start, days={DAYS}, rows_per_day={ROWS_PER_DAY}, seed=7), settings.landing_dir)
result = dg.materialize(
    [*raw_assets, *warehouse_assets],
    resources=build_resources(settings),
    instance=dg.DagsterInstance.ephemeral(),
    tags={{
        "dagster/asset_partition_range_start": start.isoformat(),
        "dagster/asset_partition_range_end": (start + dt.timedelta(days={DAYS} - 1)).isoformat(),
    }},
)
assert result.success
"""
    subprocess.run([sys.executable, "-c", code], env=_env(home, projects), cwd=ROOT, check=True)


def queued_instance_yaml(dagster_home: Path) -> None:
    """The production profile's queue and limits over local sqlite storage."""
    production = yaml.safe_load((ROOT / "deploy" / "dagster.production-local.yaml").read_text())
    local = {
        "telemetry": {"enabled": False},
        "run_coordinator": production["run_coordinator"],
        "concurrency": production["concurrency"],
    }
    dagster_home.mkdir(parents=True, exist_ok=True)
    (dagster_home / "dagster.yaml").write_text(yaml.safe_dump(local, sort_keys=False))


class Deployment:
    """dagster-webserver and dagster-daemon over the code location, on 127.0.0.1; stopped by PID."""

    def __init__(self, home: Path, projects: Path, log: Path) -> None:
        self.port = _free_port()
        self.env = _env(home, projects)
        self.log = log.open("ab")
        target = ["-m", "mlops_assets.definitions"]
        self.webserver = subprocess.Popen(
            [str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(self.port), *target],
            env=self.env,
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.daemon = subprocess.Popen(
            [str(BIN / "dagster-daemon"), "run", *target],
            env=self.env,
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/server_info", timeout=2):
                    break
            except OSError:
                if self.webserver.poll() is not None:
                    raise RuntimeError(
                        f"dagster-webserver exited with {self.webserver.returncode}; see {log}"
                    ) from None
                time.sleep(1)
        else:
            raise RuntimeError(f"dagster-webserver did not answer within 300 s; see {log}")

    def submit(self, job_names: list[str]) -> list[str]:
        from dagster_graphql import DagsterGraphQLClient

        client = DagsterGraphQLClient("127.0.0.1", port_number=self.port, timeout=120)
        return [client.submit_job_execution(job_name) for job_name in job_names]

    def stop(self) -> None:
        for process in (self.daemon, self.webserver):
            process.terminate()
        for process in (self.daemon, self.webserver):
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.log.close()


def wait_for(dagster_home: Path, run_ids: list[str], timeout: float) -> list[dict]:
    """Each run's status, queue wait and duration once every run has ended."""
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    import dagster as dg

    deadline = time.monotonic() + timeout
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        while True:
            records = instance.get_run_records(dg.RunsFilter(run_ids=run_ids))
            if len(records) == len(run_ids) and all(r.dagster_run.status.value in TERMINAL for r in records):
                break
            if time.monotonic() > deadline:
                pending = [r.dagster_run.run_id for r in records if r.dagster_run.status.value not in TERMINAL]
                raise RuntimeError(f"{len(pending)} runs still not finished after {timeout:.0f} s: {pending[:5]}")
            time.sleep(2)
        return [
            {
                "job": r.dagster_run.job_name,
                "status": r.dagster_run.status.value,
                "created": r.create_timestamp.timestamp(),
                "started": r.start_time,
                "ended": r.end_time,
                "failed_gates": failed_gates(instance, r.dagster_run.run_id),
            }
            for r in records
        ]


def failed_gates(instance, run_id: str) -> list[str]:
    """The blocking checks that stopped a run (a gate stopping a model is the platform working)."""
    import dagster as dg

    events = instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
    return sorted(
        e.dagster_event.event_specific_data.check_name for e in events if not e.dagster_event.event_specific_data.passed
    )


def most_in_flight(runs: list[dict]) -> int:
    events = sorted([(r["started"], 1) for r in runs if r["started"]] + [(r["ended"], -1) for r in runs if r["ended"]])
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    return peak


def leg(home: Path, projects: Path, job_names: list[str], work: Path, timeout: float) -> dict:
    deployment = Deployment(home, projects, work / "deployment.log")
    try:
        submitted = time.time()
        run_ids = deployment.submit(job_names)
        runs = wait_for(home / "dagster_home", run_ids, timeout)
    finally:
        deployment.stop()
    ended = max(r["ended"] for r in runs if r["ended"])
    durations = [r["ended"] - r["started"] for r in runs if r["started"] and r["ended"]]
    waits = [r["started"] - r["created"] for r in runs if r["started"]]
    return {
        "runs": len(runs),
        "succeeded": sum(r["status"] == "SUCCESS" for r in runs),
        "failed": sorted(r["job"] for r in runs if r["status"] != "SUCCESS"),
        "stopped_by_gate": dict(
            collections.Counter(gate for r in runs if r["status"] != "SUCCESS" for gate in r["failed_gates"])
        ),
        "failed_without_a_gate": sum(r["status"] != "SUCCESS" and not r["failed_gates"] for r in runs),
        "wall_s": ended - submitted,
        "median_run_s": statistics.median(durations),
        "max_run_s": max(durations),
        "median_queue_wait_s": statistics.median(waits),
        "max_queue_wait_s": max(waits),
        "most_in_flight": most_in_flight(runs),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--projects", type=int, default=100)
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / ".work" / "projects_queued_training")
    args = parser.parse_args()
    work = args.work.resolve()
    shutil.rmtree(work, ignore_errors=True)
    many, one = work / f"projects-{args.projects}", work / "projects-1"
    names = generate_projects(many, args.projects)
    generate_projects(one, 1)
    home = work / "home"
    subprocess.run([str(BIN / "mlops"), "prepare"], env=_env(home, many), cwd=ROOT, check=True, capture_output=True)
    queued_instance_yaml(home / "dagster_home")
    started = time.perf_counter()
    load_history(home, many)
    print(f"history of {DAYS} days loaded in {time.perf_counter() - started:.0f} s", flush=True)

    # The peer first: one project's training, alone in the queue, three times (versions 1 to 3 of model_000).
    single_runs = [leg(home, one, [f"{names[0]}_training_job"], work, 900) for _ in range(3)]
    single = statistics.median(r["wall_s"] for r in single_runs)
    print(f"one project alone: {[round(r['wall_s'], 1) for r in single_runs]} s", flush=True)
    result = leg(home, many, [f"{name}_training_job" for name in names], work, 4 * 3600)
    print({k: v for k, v in result.items()}, flush=True)

    shared = common()
    limits = yaml.safe_load((home / "dagster_home" / "dagster.yaml").read_text())["concurrency"]["runs"]
    warehouse_limit = next(t["limit"] for t in limits["tag_concurrency_limits"] if t["key"] == "mlops/warehouse")
    rows = [
        row(
            f"projects_queued_training_{args.projects}",
            ours=result["wall_s"],
            peer=args.projects * single,
            peer_name=f"{args.projects} x one project's training submitted alone (median of 3) through the same "
            "coordinator over a 1-project code location, same run",
            ratio="ours/peer",
            unit="s",
            goal=f"all {args.projects} training runs submitted at once finish through the queued run coordinator, "
            "never more in flight than the warehouse's one-writer limit allows, none failing but by a gate",
            met=result["runs"] == args.projects
            and result["most_in_flight"] <= warehouse_limit
            and result["failed_without_a_gate"] == 0,
            meaning=f"what training {args.projects} projects through the queue costs against {args.projects} lone trainings",
            details={**result, "single_runs": single_runs, "days": DAYS, "rows_per_day": ROWS_PER_DAY},
            shared=shared,
        )
    ]
    record(rows)
    show(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
