"""The production path on one machine: real Postgres, an `mlflow server` on Postgres, a real
redis-server, and the Dagster instance loaded from deploy/dagster.production-local.yaml.

`production_world(root)` starts the servers, points every MLOPS_* / DAGSTER_* variable at them,
generates a small history and runs `data_layer_job` and `training_job` in process on the
production instance, as CI does ("in-process runs, no cluster"). The caller gets a
`ProductionWorld` with the servers, the run results, the environment (set only while the jobs
run; conftest.py sets it again for each test that uses the world) and the measured timings.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import pytest
from generated_history import OPEN_GATES
from postgres_server import USER, PostgresServer, free_port, remove, start_postgres
from server_process import stop_process_group, wait_healthy

from mlops_core.settings import REPO_ROOT, Settings

PRODUCTION_LOCAL_YAML = REPO_ROOT / "deploy" / "dagster.production-local.yaml"
PRODUCTION_YAML = REPO_ROOT / "deploy" / "dagster.production.yaml"
RUN_SERVER_SH = REPO_ROOT / "deploy" / "mlflow" / "run_server.sh"
MLFLOW_BIN = Path(sys.executable).parent / "mlflow"
MLFLOW_READY_TIMEOUT_S = 120

START = date(2026, 1, 5)
# Legitimate labels mature after 45 days: 56 days leave enough labelled transactions to train.
DAYS = 56
ROWS_PER_DAY = 300
SEED = 17
DAGSTER_DB = "dagster"
MLFLOW_DB = "mlflow"

TRAINING_RUN_CONFIG = {
    "ops": {
        "training_set": {"config": {"leakage_sample_size": 50}},
        "fraud_model_candidate": {"config": {"n_estimators": 60}},
        "candidate_evaluation": {"config": OPEN_GATES},
    }
}


def _features_conftest():
    """tests/test_features/conftest.py under a name of its own (two conftest modules would clash)."""
    name = "features_redis_fixtures"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "tests" / "test_features" / "conftest.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def partition_tags(first: date = START, days: int = DAYS) -> dict[str, str]:
    return {
        "dagster/asset_partition_range_start": first.isoformat(),
        "dagster/asset_partition_range_end": (first + timedelta(days=days - 1)).isoformat(),
    }


@dataclass
class MlflowServer:
    process: subprocess.Popen
    port: int
    artifacts: Path
    log: Path

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_healthy(self) -> None:
        wait_healthy(self.process, f"{self.uri}/health", self.log, MLFLOW_READY_TIMEOUT_S, "mlflow server")

    def stop(self) -> None:
        stop_process_group(self.process)


def launch_mlflow_server(pg: PostgresServer, root: Path) -> MlflowServer:
    """deploy/mlflow/run_server.sh with the backend store in Postgres, given as parts through the environment."""
    port = free_port()
    artifacts = root / "mlflow-artifacts"
    artifacts.mkdir(parents=True)
    log = root / "mlflow-server.log"
    env = {
        **os.environ,
        "MLOPS_MLFLOW_PG_HOST": "127.0.0.1",
        "MLOPS_MLFLOW_PG_PORT": str(pg.port),
        "MLOPS_MLFLOW_PG_USER": USER,
        "MLOPS_MLFLOW_PG_PASSWORD": pg.password,
        "MLOPS_MLFLOW_PG_DB": MLFLOW_DB,
        "MLOPS_MLFLOW_ARTIFACTS_DESTINATION": str(artifacts),
        "MLOPS_MLFLOW_PORT": str(port),
        "MLOPS_MLFLOW_WORKERS": "1",
        "MLFLOW_BIN": str(MLFLOW_BIN),
    }
    with open(log, "wb") as out:
        process = subprocess.Popen(
            ["bash", str(RUN_SERVER_SH)], stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    return MlflowServer(process, port, artifacts, log)


@dataclass
class ProductionWorld:
    postgres: PostgresServer
    redis: object  # RedisServer from tests/test_features/conftest.py
    mlflow: MlflowServer
    settings: Settings
    defs: dg.Definitions
    env: dict[str, str]
    results: dict[str, dg.ExecuteInProcessResult] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def run(self, job_name: str, **kwargs) -> dg.ExecuteInProcessResult:
        """One job as a run on $DAGSTER_HOME's instance, in process (what mlops_cli.common.run_stage does)."""
        job = self.defs.resolve_job_def(job_name)
        with dg.DagsterInstance.get() as instance:
            return job.execute_in_process(instance=instance, raise_on_error=False, **kwargs)

    def dagster_db(self):
        return self.postgres.connect(DAGSTER_DB)


@contextlib.contextmanager
def production_world(root: Path) -> Iterator[ProductionWorld]:
    # Imported before the environment below is set: other tests share the module's `defs`.
    from mlops_assets.definitions import defs
    from mlops_core.datagen.generator import DemoSpec, generate_landing
    from resources.environment import build_resources

    timings: dict[str, float] = {}
    began = time.monotonic()
    with contextlib.ExitStack() as servers:  # every server is stopped, even if another stop fails
        pg = start_postgres()
        servers.callback(remove, pg)
        pg.create_database(DAGSTER_DB)
        pg.create_database(MLFLOW_DB)
        timings["postgres_start_s"] = time.monotonic() - began
        mlflow = launch_mlflow_server(pg, root)  # boots while the data layer runs
        servers.callback(mlflow.stop)
        redis = _features_conftest().start_redis(root / "redis")
        servers.callback(redis.stop)

        home = root / "home"
        dagster_home = home / "dagster_home"
        dagster_home.mkdir(parents=True)
        shutil.copyfile(PRODUCTION_LOCAL_YAML, dagster_home / "dagster.yaml")
        env = {
            "MLOPS_HOME": str(home),
            "MLOPS_DATA_DIR": str(home / "data"),
            "MLOPS_DUCKDB_PATH": str(home / "warehouse.duckdb"),
            "MLOPS_MLFLOW_DIR": str(home / "mlflow"),
            "MLOPS_REPORTS_DIR": str(home / "reports"),
            "DAGSTER_HOME": str(dagster_home),
            "DAGSTER_PG_HOST": "127.0.0.1",
            "DAGSTER_PG_PORT": str(pg.port),
            "DAGSTER_PG_USER": USER,
            "DAGSTER_PG_PASSWORD": pg.password,
            "DAGSTER_PG_DB": DAGSTER_DB,
            "MLOPS_ONLINE_STORE": "redis",
            "MLOPS_REDIS_URL": redis.url,
            "MLOPS_MLFLOW_TRACKING_URI": mlflow.uri,
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
        }
        with pytest.MonkeyPatch.context() as mp:
            for key, value in env.items():
                mp.setenv(key, value)
            settings = Settings.from_env()
            # The code location was imported for the session's MLOPS_HOME (above, before this
            # environment): the same assets and jobs, with resources for this environment.
            located = dg.Definitions(
                assets=defs.assets,
                asset_checks=defs.asset_checks,
                jobs=defs.jobs,
                sensors=defs.sensors,
                schedules=defs.schedules,
                executor=defs.executor,
                resources=build_resources(settings),
            )
            world = ProductionWorld(pg, redis, mlflow, settings, located, env, timings=timings)
            generate_landing(
                DemoSpec(start=START, days=DAYS, rows_per_day=ROWS_PER_DAY, seed=SEED), settings.landing_dir
            )

            t = time.monotonic()
            world.results["data_layer_job"] = world.run("data_layer_job", tags=partition_tags())
            timings["data_layer_job_s"] = time.monotonic() - t

            mlflow.wait_healthy()
            timings["mlflow_ready_after_s"] = time.monotonic() - began
            t = time.monotonic()
            world.results["training_job"] = world.run("training_job", run_config=TRAINING_RUN_CONFIG)
            timings["training_job_s"] = time.monotonic() - t
            timings["world_s"] = time.monotonic() - began
        # The environment is restored here: tests set it again for themselves (conftest.py), so
        # tests elsewhere in the session never see this world's variables.
        yield world
