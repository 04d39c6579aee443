"""The dbt project, and preparing its manifest without network or a database."""

import hashlib
import os
import sys
from pathlib import Path

from dagster_dbt import DbtCliResource, DbtProject

from mlops_core.settings import REPO_ROOT, Settings

DBT_PROJECT_DIR = REPO_ROOT / "dbt_project"
# The venv's dbt, so nothing depends on the venv being on PATH (CI, cron, the UI).
DBT_EXECUTABLE = str(Path(sys.executable).with_name("dbt"))
# The same dbt through a server that imported it once (mlops_core/warm_dbt.py).
WARM_DBT_EXECUTABLE = str(Path(sys.executable).with_name("mlops-dbt"))


def dbt_executable(launcher: str) -> str:
    """The executable dagster-dbt runs for MLOPS_DBT_LAUNCHER: "warm" or "cold" (Settings.dbt_launcher)."""
    return WARM_DBT_EXECUTABLE if launcher == "warm" and Path(WARM_DBT_EXECUTABLE).exists() else DBT_EXECUTABLE


dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)


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
    project = project or dbt_project
    stamp = project.manifest_path.parent / DIGEST_FILE
    current = sources_digest(Path(project.project_dir))
    if not project.manifest_path.exists() or not stamp.exists() or stamp.read_text().strip() != current:
        # profiles.yml renders env_var('MLOPS_DUCKDB_PATH'); parsing never opens the file. Set for the parse
        # only: loading the definitions leaves the environment as it found it.
        unset = "MLOPS_DUCKDB_PATH" not in os.environ
        os.environ.setdefault("MLOPS_DUCKDB_PATH", str(Settings.from_env().duckdb_path))
        try:
            dbt = DbtCliResource(
                project_dir=project, profiles_dir=str(project.profiles_dir), dbt_executable=DBT_EXECUTABLE
            )
            dbt.cli(["parse", "--quiet"], target_path=project.target_path).wait()
        finally:
            if unset:
                os.environ.pop("MLOPS_DUCKDB_PATH", None)
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(current + "\n")
    return project.manifest_path
