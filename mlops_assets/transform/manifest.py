"""The dbt project's sources and manifest, without importing dagster or dbt.

`mlops prepare`, `mlops ui` and `mlops demo` only need the manifest to exist and be current: importing
dagster-dbt for that (it imports dbt, 1.9 s of `python -X importtime` with dagster) cost every such command more
than the check itself. dagster-dbt is imported only when the project has to be parsed.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from mlops_core.settings import REPO_ROOT, Settings

if TYPE_CHECKING:
    from dagster_dbt import DbtProject

DBT_PROJECT_DIR = REPO_ROOT / "dbt_project"
# DbtProject's defaults (dbt_project.py in dagster-dbt): target/ in the project, manifest.json in it. A test
# compares them with the DbtProject the code location builds.
TARGET_PATH = Path("target")
MANIFEST_PATH = DBT_PROJECT_DIR / TARGET_PATH / "manifest.json"
# The venv's dbt, so nothing depends on the venv being on PATH (CI, cron, the UI).
DBT_EXECUTABLE = str(Path(sys.executable).with_name("dbt"))

# What dbt reads to build its manifest; target/, logs/ and installed packages are its output.
SOURCE_SUFFIXES = (".sql", ".yml", ".yaml", ".csv", ".md", ".py")
NOT_SOURCES = ("target", "logs", "dbt_packages")
DIGEST_FILE = "mlops_sources.sha256"


def sources_digest(project_dir: Path) -> str:
    """A hash of every file dbt parses (models, tests, seeds, macros, the project and profiles files).
    Content, not modification times: a checkout or a copy rewrites mtimes without changing anything.

    The output directories are pruned, not walked: dagster-dbt writes a target/ folder per run, and
    walking them made every load of the definitions slower with every run ever made."""
    digest = hashlib.sha256()
    files: list[str] = []
    for folder, subfolders, names in os.walk(project_dir):
        relative = os.path.relpath(folder, project_dir)
        if relative == ".":
            subfolders[:] = [name for name in subfolders if name not in NOT_SOURCES]
        files.extend(
            Path(relative, name).as_posix().removeprefix("./") for name in names if name.endswith(SOURCE_SUFFIXES)
        )
    for relative in sorted(files):
        digest.update(relative.encode() + b"\0" + (project_dir / relative).read_bytes() + b"\0")
    return digest.hexdigest()


def ensure_manifest(project: DbtProject | None = None) -> Path:
    """Parse the dbt project when its manifest is missing or older than its sources (a model added,
    a test changed), else reuse the manifest: parsing on every import would cost seconds each time.

    `dbt parse` needs neither network nor the warehouse.
    """
    project_dir = Path(project.project_dir) if project else DBT_PROJECT_DIR
    manifest_path = Path(project.manifest_path) if project else MANIFEST_PATH
    stamp = manifest_path.parent / DIGEST_FILE
    current = sources_digest(project_dir)
    if not manifest_path.exists() or not stamp.exists() or stamp.read_text().strip() != current:
        import dagster_dbt

        if project is None:
            from mlops_assets.transform.project import dbt_project as project
        # profiles.yml renders env_var('MLOPS_DUCKDB_PATH'); parsing never opens the file. Set for the parse
        # only: loading the definitions leaves the environment as it found it.
        unset = "MLOPS_DUCKDB_PATH" not in os.environ
        os.environ.setdefault("MLOPS_DUCKDB_PATH", str(Settings.from_env().duckdb_path))
        try:
            dbt = dagster_dbt.DbtCliResource(
                project_dir=project, profiles_dir=str(project.profiles_dir), dbt_executable=DBT_EXECUTABLE
            )
            dbt.cli(["parse", "--quiet"], target_path=project.target_path).wait()
        finally:
            if unset:
                os.environ.pop("MLOPS_DUCKDB_PATH", None)
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(current + "\n")
    return manifest_path
