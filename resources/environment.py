"""The one place that chooses the environment's resources (local, CI; production through its variables).

Building them reads the environment and changes nothing: no directory, token or variable is written
here. State is created by `mlops prepare` or, when a run starts, by the resources' own setup.
"""

import os
import re
from collections.abc import Mapping

import dagster as dg

from mlops_assets.transform.project import dbt_executable, dbt_project
from mlops_core.projects.catalog import fraud_project
from mlops_core.serving.server import ADMIN_TOKEN_ENV, ServingPaths, admin_token_file
from mlops_core.settings import Settings
from resources.alerts import AlertResource
from resources.landing import LandingZone
from resources.online_store import OnlineStoreResource
from resources.registry import ModelRegistry
from resources.retraining import RetrainingPolicy
from resources.serving import ServingEndpointResource
from resources.settings import SettingsResource
from resources.warehouse import WarehouseDbtResource, WarehouseResource


def build_resources(settings: Settings | None = None) -> dict[str, object]:
    """Embedded defaults under MLOPS_HOME: a DuckDB file, a landing directory, a sqlite online store, a sqlite
    MLflow store; a Redis online store and an MLflow server when their variables name them."""
    settings = settings or Settings.from_env()
    serving = ServingPaths.for_role(settings, "production")
    if settings.online_store == "redis":
        online_store = OnlineStoreResource(
            backend="redis",
            redis_url=dg.EnvVar("MLOPS_REDIS_URL"),
            allowed_lateness_days=settings.online_allowed_lateness_days,
        )
    else:
        online_store = OnlineStoreResource(
            backend="sqlite",
            sqlite_path=str(settings.online_store_path),
            allowed_lateness_days=settings.online_allowed_lateness_days,
        )
    # Production sets the token from its secret store; a laptop keeps one in MLOPS_HOME, shared with `mlops serve`.
    admin_token = (
        {"admin_token": dg.EnvVar(ADMIN_TOKEN_ENV)}
        if os.environ.get(ADMIN_TOKEN_ENV)
        else {"admin_token_file": str(admin_token_file(settings))}
    )
    return {
        "settings": SettingsResource.of(settings),
        "model_registry": ModelRegistry.for_settings(settings),
        "online_store": online_store,
        "warehouse": WarehouseResource(database=str(settings.duckdb_path)),
        "landing": LandingZone(root=str(settings.landing_dir)),
        "serving_endpoint": ServingEndpointResource(
            url=settings.serving_url,
            prediction_log_path=str(serving.predictions),
            plan_path=str(serving.plan),
            **admin_token,
        ),
        # The fraud project's declared policy (projects/fraud/defs.yaml), each threshold overridable by environment.
        "retraining_policy": RetrainingPolicy.from_env(fraud_project().monitoring.model_dump()),
        # The webhook's path is a secret: read through EnvVar (hidden in the UI) whenever it is configured.
        "alerts": AlertResource(
            webhook_url=dg.EnvVar("MLOPS_ALERT_WEBHOOK_URL") if os.environ.get("MLOPS_ALERT_WEBHOOK_URL") else ""
        ),
        "dbt": WarehouseDbtResource(
            project_dir=dbt_project,
            profiles_dir=str(dbt_project.profiles_dir),
            dbt_executable=dbt_executable(settings.dbt_launcher),
            duckdb_path=str(settings.duckdb_path),
            global_config_flags=["--log-level-file", settings.dbt_file_log_level],
        ),
    }


# The op that builds one bucket of the training set (mlops_assets/features/training_set.py): on Kubernetes each
# is a pod, and its memory is set here from the production profile, not in code.
TRAINING_BUCKET_OP = "build_training_set_bucket"
# A bucket step's memory, requested and the limit: DuckDB's 2GB cap for the build (offline.DEFAULT_WAREHOUSE_MEMORY)
# plus Python and Arrow (benchmarks/memory.py measures a bucket step's peak).
DEFAULT_TRAINING_BUCKET_MEMORY = "3Gi"


def k8s_executor_config(environ: Mapping[str, str] = os.environ) -> dict:
    """k8s_job_executor's config: one step at a time (one DuckDB writer), and the bucket steps' memory from
    MLOPS_TRAINING_BUCKET_MEMORY (a Kubernetes quantity, e.g. 3Gi), requested and as the limit so the scheduler
    places each bucket pod where that much is free and the pod cannot grow past it."""
    memory = environ.get("MLOPS_TRAINING_BUCKET_MEMORY", DEFAULT_TRAINING_BUCKET_MEMORY)
    if not re.fullmatch(r"[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|K|M|G|T)?", memory):
        raise ValueError(
            f"MLOPS_TRAINING_BUCKET_MEMORY must be a Kubernetes memory quantity such as 3Gi, got {memory!r}"
        )
    resources = {"requests": {"memory": memory}, "limits": {"memory": memory}}
    return {
        "max_concurrent": 1,
        "per_step_k8s_config": {TRAINING_BUCKET_OP: {"container_config": {"resources": resources}}},
    }


def build_executor() -> dg.ExecutorDefinition:
    """In process by default (one DuckDB writer, no per-step start-up). MLOPS_EXECUTOR=k8s runs each step
    as its own Kubernetes Job (dagster-k8s), one at a time for the same reason (`k8s_executor_config`)."""
    choice = os.environ.get("MLOPS_EXECUTOR", "in_process")
    if choice == "k8s":
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor.configured(k8s_executor_config(), name="k8s_job_executor")
    if choice != "in_process":
        raise ValueError(f"MLOPS_EXECUTOR must be 'in_process' or 'k8s', got {choice!r}")
    return dg.in_process_executor
