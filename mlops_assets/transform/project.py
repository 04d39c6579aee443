"""The dbt project, and preparing its manifest without network or a database."""

from pathlib import Path

from dagster_dbt import DbtProject

from mlops_core.settings import REPO_ROOT

DBT_PROJECT_DIR = REPO_ROOT / "dbt_project"

dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)


def ensure_manifest() -> Path:
    """Parse the dbt project once if no manifest exists yet (first run, fresh clone, CI).

    `dbt parse` needs neither network nor the warehouse; later loads reuse the file.
    """
    if not dbt_project.manifest_path.exists():
        dbt_project.preparer.prepare(dbt_project)
    return dbt_project.manifest_path
