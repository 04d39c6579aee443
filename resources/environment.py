"""The one place that chooses the environment's resources (local, CI; production in a later profile)."""

import dagster as dg
from dagster_dbt import DbtCliResource
from dagster_duckdb import DuckDBResource

from mlops_assets.transform.project import DBT_EXECUTABLE, dbt_project
from mlops_core.settings import Settings
from resources.landing import LandingZone
from resources.mlflow import mlflow_resource
from resources.online_store import OnlineStoreResource


def build_resources(settings: Settings | None = None) -> dict[str, object]:
    """Embedded defaults under MLOPS_HOME: a DuckDB file, a landing directory, a sqlite online store."""
    settings = settings or Settings.from_env()
    settings.export()
    settings.ensure_dirs()
    if settings.online_store == "redis":
        online_store = OnlineStoreResource(backend="redis", redis_url=dg.EnvVar("MLOPS_REDIS_URL"))
    else:
        online_store = OnlineStoreResource(backend="sqlite", sqlite_path=str(settings.online_store_path))
    return {
        "mlflow": mlflow_resource(settings),
        "online_store": online_store,
        "warehouse": DuckDBResource(database=str(settings.duckdb_path)),
        "landing": LandingZone(root=str(settings.landing_dir)),
        "dbt": DbtCliResource(
            project_dir=dbt_project, profiles_dir=str(dbt_project.profiles_dir), dbt_executable=DBT_EXECUTABLE
        ),
    }
