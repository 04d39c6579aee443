"""The dbt project as dagster-dbt sees it: the project the code location's dbt assets and the warehouse
resource are built from. What only checks the manifest lives in manifest.py, which imports neither dagster nor dbt."""

import sys
from pathlib import Path

from dagster_dbt import DbtProject

from mlops_assets.transform.manifest import (
    DBT_EXECUTABLE,
    DBT_PROJECT_DIR,
    DIGEST_FILE,
    TARGET_PATH,
    ensure_manifest,
    sources_digest,
)

__all__ = [
    "DBT_EXECUTABLE",
    "DBT_PROJECT_DIR",
    "DIGEST_FILE",
    "WARM_DBT_EXECUTABLE",
    "dbt_executable",
    "dbt_project",
    "ensure_manifest",
    "sources_digest",
]

# The same dbt through a server that imported it once (mlops_core/warm_dbt.py).
WARM_DBT_EXECUTABLE = str(Path(sys.executable).with_name("mlops-dbt"))


def dbt_executable(launcher: str) -> str:
    """The executable dagster-dbt runs for MLOPS_DBT_LAUNCHER: "warm" or "cold" (Settings.dbt_launcher)."""
    return WARM_DBT_EXECUTABLE if launcher == "warm" and Path(WARM_DBT_EXECUTABLE).exists() else DBT_EXECUTABLE


dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR, target_path=TARGET_PATH)
