"""The one place that chooses the environment's resources (local, CI; production in a later profile)."""

import os

import dagster as dg
from dagster_dbt import DbtCliResource
from dagster_duckdb import DuckDBResource

from mlops_assets.transform.project import DBT_EXECUTABLE, dbt_project
from mlops_core.serving.server import ServingPaths, ensure_admin_token
from mlops_core.settings import Settings
from resources.alerts import AlertResource
from resources.landing import LandingZone
from resources.mlflow import mlflow_resource
from resources.online_store import OnlineStoreResource
from resources.retraining import RetrainingPolicy
from resources.serving import ServingEndpointResource


def build_resources(settings: Settings | None = None) -> dict[str, object]:
    """Embedded defaults under MLOPS_HOME: a DuckDB file, a landing directory, a sqlite online store."""
    settings = settings or Settings.from_env()
    settings.export()
    settings.ensure_dirs()
    ensure_admin_token(settings)
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
    return {
        "mlflow": mlflow_resource(settings),
        "online_store": online_store,
        "warehouse": DuckDBResource(database=str(settings.duckdb_path)),
        "landing": LandingZone(root=str(settings.landing_dir)),
        "serving_endpoint": ServingEndpointResource(
            url=settings.serving_url,
            admin_token=dg.EnvVar("MLOPS_ADMIN_TOKEN"),
            prediction_log_path=str(serving.predictions),
            plan_path=str(serving.plan),
        ),
        "retraining_policy": RetrainingPolicy.from_env(),
        # The webhook's path is a secret: read through EnvVar (hidden in the UI) whenever it is configured.
        "alerts": AlertResource(
            webhook_url=dg.EnvVar("MLOPS_ALERT_WEBHOOK_URL") if os.environ.get("MLOPS_ALERT_WEBHOOK_URL") else ""
        ),
        "dbt": DbtCliResource(
            project_dir=dbt_project, profiles_dir=str(dbt_project.profiles_dir), dbt_executable=DBT_EXECUTABLE
        ),
    }


def build_executor() -> dg.ExecutorDefinition:
    """In process by default (one DuckDB writer, no per-step start-up). MLOPS_EXECUTOR=k8s runs each step
    as its own Kubernetes Job (dagster-k8s), one at a time for the same reason."""
    choice = os.environ.get("MLOPS_EXECUTOR", "in_process")
    if choice == "k8s":
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor.configured({"max_concurrent": 1}, name="k8s_job_executor")
    if choice != "in_process":
        raise ValueError(f"MLOPS_EXECUTOR must be 'in_process' or 'k8s', got {choice!r}")
    return dg.in_process_executor
