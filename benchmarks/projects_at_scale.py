"""Pressure test of issue "many models": 100 model projects generated from the template.

Projects come from `mlops project new`'s template, each with its own feature subset, model family and seed
(xgboost, logistic regression and HistGradientBoosting in turn). Measured, each against a peer in the same run:

- code-location load (`dagster definitions validate -m mlops_assets.definitions`) with 1, 10 and 100
  projects beside fraud; goal: 100 projects load in at most 1.5x the 1-project time plus 10 s;
- one tick of every project's drift sensor over 100 projects, each with a new drift verdict to read; goal: at
  most 2 s; peer: the same tick with one project;
- serving with 100 models: 100 registered models (each trained on its own synthetic snapshots and logged to a
  real MLflow store with its ONNX graph), 1000 published entities each, one `mlops serve` on 127.0.0.1;
  its memory (VmRSS) once every project is loaded, goal under 2 GB, peer the same server with one project
  loaded; and p99 at 500 requests/s spread over the 100 projects (open loop, benchmarks/loadgen.py, latency
  charged from each request's scheduled time), goal at most 10 ms, peer the same rate to one project.

Measured beside it: the asset graph rendered in headless Chromium (benchmarks/projects_ui.py) and training all
100 projects through the queued run coordinator (benchmarks/projects_queued_training.py).

Run: .venv/bin/python benchmarks/projects_at_scale.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from results import common, record, row, show

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TEMPLATE = ROOT / "mlops_core" / "projects" / "templates"
FAMILIES = (
    ("xgboost", {"n_estimators": 60, "max_depth": 3, "scale_pos_weight": 1.0, "n_jobs": 1}),
    ("logistic_regression", {"class_weight": None}),
    ("hist_gradient_boosting", {"max_iter": 60, "class_weight": None}),
)
AGGREGATES = [
    {"aggregation": "count", "windows": ["7d", "30d"]},
    {"aggregation": "sum", "column": "amount_usd", "windows": ["30d", "90d"]},
    {"aggregation": "max", "column": "amount_usd", "windows": ["30d"]},
    {"aggregation": "distinct_count", "column": "merchant_category", "windows": ["30d"]},
    {"aggregation": "mean", "column": "is_online", "windows": ["90d"]},
    {"aggregation": "seconds_since_last", "windows": ["90d"]},
]


def generate_projects(root: Path, n: int) -> list[str]:
    """fraud and churn as in the repository, plus n projects from the template: a feature subset, a family and a
    seed each."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(ROOT / "projects" / "fraud", root / "fraud")
    names = []
    for i in range(n):
        name = f"model_{i:03d}"
        folder = root / name
        folder.mkdir()
        document = yaml.safe_load(
            (TEMPLATE / "defs.yaml").read_text().format(name=name, owner=f"team{i % 7}@example.com")
        )
        attributes = document["attributes"]
        chosen = [a for j, a in enumerate(AGGREGATES) if (i >> j) % 2 == 0 or j == 0]
        attributes["features"] = {"windowed": chosen}
        family, params = FAMILIES[i % len(FAMILIES)]
        seed_key = {"xgboost": "seed", "hist_gradient_boosting": "random_state"}.get(family)
        attributes["model"] = {
            "family": family,
            "false_negative_cost": 3.0,
            "hyperparameters": {**params, **({seed_key: i} if seed_key else {})},
        }
        (folder / "defs.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
        (folder / "snapshots.sql").write_text((TEMPLATE / "snapshots.sql").read_text().replace("{name}", name))
        names.append(name)
    return names


def _env(home: Path, projects: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "DAGSTER_"))}
    env.update(
        MLOPS_HOME=str(home),
        DAGSTER_HOME=str(home / "dagster_home"),
        MLOPS_PROJECTS_DIR=str(projects),
        MLFLOW_DISABLE_TELEMETRY="true",
        **extra,
    )
    return env


def load_seconds(home: Path, projects: Path) -> float:
    started = time.perf_counter()
    subprocess.run(
        [str(BIN / "dagster"), "definitions", "validate", "-m", "mlops_assets.definitions"],
        env=_env(home, projects),
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started


def sensor_tick_seconds(projects: Path, names: list[str]) -> float:
    """One tick of each named project's drift sensor, each with one new drift verdict to read."""
    import dagster as dg

    os.environ["MLOPS_PROJECTS_DIR"] = str(projects)
    from mlops_assets.definitions import build_definitions
    from mlops_assets.projects.snapshot_graph import project_key

    defs = build_definitions()
    instance = dg.DagsterInstance.ephemeral()
    for name in names:
        instance.report_runless_asset_event(
            dg.AssetMaterialization(project_key(name, "feature_drift"), metadata={"drifted": True})
        )
    sensors = [defs.resolve_sensor_def(f"{name}_drift_retraining") for name in names]
    started = time.perf_counter()
    requested = 0
    for sensor in sensors:
        with dg.build_sensor_context(instance=instance, definitions=defs) as context:
            requested += len(sensor.evaluate_tick(context).run_requests)
    elapsed = time.perf_counter() - started
    if requested != len(names):
        raise RuntimeError(f"expected one retraining request per project, got {requested} for {len(names)}")
    return elapsed


def _synthetic_snapshots(project, rows: int, seed: int):
    """Snapshots whose label depends on the first two features, over four weekly dates."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    features = project.feature_names()
    frame = pd.DataFrame({f: rng.gamma(2.0, 3.0, rows) for f in features})
    logit = 0.4 * (frame[features[0]] - 6.0) - 0.2 * (frame[features[-1]] - 6.0) + rng.normal(0, 1, rows)
    frame["label"] = logit > 0.8
    frame["account_id"] = [f"acct{i % 1000:05d}" for i in range(rows)]
    frame["snapshot_date"] = pd.to_datetime("2026-05-04") + pd.to_timedelta((np.arange(rows) * 5) // rows * 7, "D")
    return frame


def register_models(settings, projects: Path, names: list[str]) -> None:
    """Train each project's declared family on its own synthetic snapshots, log the ONNX graph to MLflow,
    register it as version 1 with alias champion, and publish 1000 entities' features for serving."""
    import mlflow
    import onnx
    from mlflow import MlflowClient

    from mlops_core import registry
    from mlops_core.projects import training
    from mlops_core.projects.declaration import load_project
    from mlops_core.serving.projects import features_root, publish_features

    uri = registry.tracking_uri(settings.mlflow_dir)
    settings.mlflow_dir.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri, uri)
    experiment = registry.ensure_experiment(
        client, "projects-at-scale", registry.artifact_root_for(settings.mlflow_dir)
    )
    for i, name in enumerate(names):
        project = load_project(projects / name)
        frame = training.assign_splits(_synthetic_snapshots(project, 3000, i))
        trained = training.fit_candidate(project, frame, f"synthetic-{i}")
        with mlflow.start_run(experiment_id=experiment, run_name=name) as run:
            mlflow.set_tag("threshold", repr(trained.threshold))
            info = mlflow.onnx.log_model(onnx.load_from_string(trained.onnx), name="model")
        version = registry.register_version(
            client, run.info.run_id, "model", project.registered_model, model_uri=info.model_uri
        )
        client.set_registered_model_alias(project.registered_model, registry.CHAMPION, version)
        latest = frame.drop_duplicates("account_id")[["account_id", "snapshot_date", *project.feature_names()]].copy()
        latest["snapshot_date"] = "2026-06-01"
        publish_features(latest, features_root(settings.data_dir), project)


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def serve_and_measure(home: Path, projects: Path, names: list[str], duration: float) -> dict:
    import httpx

    from mlops_core.serving.server import free_port

    port = free_port()
    env = _env(home, projects, MLOPS_SERVING_MEMORY_BUDGET_MB="2048")
    server = subprocess.Popen(
        [str(BIN / "mlops"), "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    out: dict = {}
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                httpx.get(f"{url}/health", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        with httpx.Client(timeout=60) as client:
            first = client.post(f"{url}/v1/models/{names[0]}/predict", json={"account_id": "acct00001"})
            first.raise_for_status()
            out["rss_one_project_mb"] = _rss_mb(server.pid)
            started = time.perf_counter()
            for name in names:
                client.post(f"{url}/v1/models/{name}/predict", json={"account_id": "acct00001"}).raise_for_status()
            out["load_all_seconds"] = time.perf_counter() - started
            out["rss_all_projects_mb"] = _rss_mb(server.pid)
            listed = client.get(f"{url}/v1/models").json()["models"]
            out["loaded_projects"] = sum(1 for m in listed if m.get("loaded") and m["project"] != "fraud")
        with tempfile.TemporaryDirectory() as tmp:
            spread = [
                [f"/v1/models/{names[i % len(names)]}/predict", json.dumps({"account_id": f"acct{(i * 7) % 1000:05d}"})]
                for i in range(5000)
            ]
            single = [[f"/v1/models/{names[0]}/predict", body] for _, body in spread]
            for label, bodies in (("spread", spread), ("single", single)):
                path = Path(tmp) / f"{label}.json"
                path.write_text(json.dumps(bodies))
                result = subprocess.run(
                    [
                        sys.executable,
                        str(ROOT / "benchmarks" / "loadgen.py"),
                        "--port",
                        str(port),
                        "--path",
                        "/unused",
                        "--bodies",
                        str(path),
                        "--mode",
                        "open",
                        "--rate",
                        "500",
                        "--duration",
                        str(duration),
                        "--warmup",
                        "1",
                        "--connections",
                        "32",
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                out[label] = json.loads(result.stdout)
        out["rss_after_load_mb"] = _rss_mb(server.pid)
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds of each serving leg")
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / ".work" / "projects_at_scale")
    args = parser.parse_args()
    work = args.work.resolve()
    shutil.rmtree(work, ignore_errors=True)
    roots = {}
    for n in (1, 10, 100):
        roots[n] = work / f"projects-{n}"
        generate_projects(roots[n], n)
    names = [f"model_{i:03d}" for i in range(100)]
    home = work / "home"
    subprocess.run(
        [str(BIN / "mlops"), "prepare"], env=_env(home, roots[100]), cwd=ROOT, check=True, capture_output=True
    )

    loads: dict[int, list[float]] = {n: [] for n in roots}
    for _ in range(args.repeats):
        for n, root in roots.items():  # side by side in each repeat: the machine's noise hits all three
            loads[n].append(load_seconds(home, root))
    load = {n: statistics.median(v) for n, v in loads.items()}
    print(f"load medians: {load}", flush=True)

    ticks_100 = [sensor_tick_seconds(roots[100], names) for _ in range(args.repeats)]
    ticks_1 = [sensor_tick_seconds(roots[1], names[:1]) for _ in range(args.repeats)]
    print(f"tick medians: 100 -> {statistics.median(ticks_100):.3f} s, 1 -> {statistics.median(ticks_1):.4f} s")

    from mlops_core.settings import Settings

    settings = Settings.from_env({"MLOPS_HOME": str(home)})
    started = time.perf_counter()
    register_models(settings, roots[100], names)
    register_seconds = time.perf_counter() - started
    print(f"registered 100 models in {register_seconds:.0f} s", flush=True)
    serving = serve_and_measure(home, roots[100], names, args.duration)
    print(json.dumps({k: v for k, v in serving.items() if k not in ("spread", "single")}), flush=True)

    shared = common()
    goal_load = 1.5 * load[1] + 10.0
    spread, single = serving["spread"], serving["single"]
    rows = [
        row(
            "projects_load_100",
            ours=load[100],
            peer=load[1],
            peer_name="the same code location with 1 project (beside fraud), side by side",
            ratio="ours/peer",
            unit="s",
            goal="100 projects load in at most 1.5x the 1-project time plus 10 s",
            met=load[100] <= goal_load,
            meaning="how much longer 100 projects take to load than 1",
            details={
                "runs": {str(n): v for n, v in loads.items()},
                "median_10_projects_s": load[10],
                "bound_s": goal_load,
            },
            shared=shared,
        ),
        row(
            "projects_sensor_tick_100",
            ours=statistics.median(ticks_100),
            peer=statistics.median(ticks_1),
            peer_name="the same tick over 1 project",
            ratio="ours/peer",
            unit="s",
            goal="one tick over 100 projects takes at most 2 s",
            met=statistics.median(ticks_100) <= 2.0,
            meaning="cost of 100 projects' ticks against one",
            details={"runs_100": ticks_100, "runs_1": ticks_1},
            shared=shared,
        ),
        row(
            "projects_serving_memory_100",
            ours=serving["rss_all_projects_mb"],
            peer=serving["rss_one_project_mb"],
            peer_name="the same server with 1 project loaded",
            ratio="ours/peer",
            unit="MB",
            goal="serving memory with 100 models loaded stays under 2 GB",
            met=serving["rss_all_projects_mb"] < 2048 and serving["loaded_projects"] == 100,
            meaning="memory of 100 loaded projects against 1",
            details={k: serving[k] for k in ("loaded_projects", "load_all_seconds", "rss_after_load_mb")},
            shared=shared,
        ),
        row(
            "projects_serving_p99_500rps_100",
            ours=spread["latency"]["p99_ms"],
            peer=single["latency"]["p99_ms"],
            peer_name="the same rate to 1 project, same server, same run",
            ratio="ours/peer",
            unit="ms",
            goal="p99 at most 10 ms at 500 req/s spread over 100 projects",
            met=spread["latency"]["p99_ms"] <= 10.0 and spread["errors"] == 0,
            meaning="tail latency of 100 projects against 1",
            details={"spread": spread, "single": single},
            shared=shared,
        ),
    ]
    record(rows)
    show(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
