"""The dbt project, and preparing its manifest without network or a database."""

import os
import sys
from pathlib import Path

from dagster_dbt import DbtCliResource, DbtProject

from mlops_core.settings import REPO_ROOT, Settings

DBT_PROJECT_DIR = REPO_ROOT / "dbt_project"
# The venv's dbt, so nothing depends on the venv being on PATH (CI, cron, the UI).
DBT_EXECUTABLE = str(Path(sys.executable).with_name("dbt"))

dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)


def ensure_manifest() -> Path:
    """Parse the dbt project once if no manifest exists yet (first run, fresh clone, CI).

    `dbt parse` needs neither network nor the warehouse; later loads reuse the file.
    """
    if not dbt_project.manifest_path.exists():
        # profiles.yml renders env_var('MLOPS_DUCKDB_PATH'); parsing never opens the file.
        os.environ.setdefault("MLOPS_DUCKDB_PATH", str(Settings.from_env().duckdb_path))
        dbt = DbtCliResource(project_dir=dbt_project, profiles_dir=str(DBT_PROJECT_DIR), dbt_executable=DBT_EXECUTABLE)
        dbt.cli(["parse", "--quiet"], target_path=dbt_project.target_path).wait()
    return dbt_project.manifest_path
