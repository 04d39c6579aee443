"""The DuckDB warehouse, for the assets that query it and for dbt that builds its models.

Both create the file's directory when a run starts (a new MLOPS_HOME), not when the definitions load.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path

import dagster as dg
import duckdb
from dagster_dbt import DbtCliResource
from dagster_duckdb import DuckDBResource
from packaging import version
from pydantic import Field, PrivateAttr

# dbt_project/profiles.yml reads the warehouse path from this variable.
DUCKDB_PATH_ENV = "MLOPS_DUCKDB_PATH"
# dagster-dbt gives every invocation its own target folder, <op>-<run id[:7]>-<uuid[:7]>.
RUN_FOLDER = re.compile(r"^[A-Za-z0-9_]+-[0-9a-f]{7}-[0-9a-f]{7}$")
# dbt's saved parse state; with it a run re-parses only the files that changed (dbt checks every hash itself).
PARTIAL_PARSE = "partial_parse.msgpack"


def partial_parse_cache(duckdb_path: str | Path) -> Path:
    """Where a warehouse keeps dbt's parse state for the next run: beside the warehouse file, one per file.

    dbt's saved state holds a hash of the connection (the DuckDB path among it), so the state in
    dbt_project/target, parsed for one warehouse, is refused by a run on any other ("Unable to do partial
    parsing because profile has changed") and that run parses the whole project again (5.8 s against 3.5 s
    for `dbt parse` here). Every home but the one `mlops prepare` ran in paid that on every dbt run."""
    path = Path(duckdb_path)
    return path.with_name(f"{path.name}.dbt_{PARTIAL_PARSE}")


def prune_run_folders(target: Path, keep: int) -> list[Path]:
    """Delete all but the `keep` newest per-run folders dagster-dbt left in dbt's target/ (each holds that
    run's compiled SQL, run_results.json and manifest: about 260 files). The manifest, partial parse and
    anything not named like a run folder stay. Returns the folders deleted."""
    if not target.is_dir():
        return []
    runs = sorted(
        (p for p in target.iterdir() if p.is_dir() and RUN_FOLDER.match(p.name)),
        key=lambda p: p.stat().st_mtime_ns,
        reverse=True,
    )
    stale = runs[keep:]
    for folder in stale:
        shutil.rmtree(folder, ignore_errors=True)
    return stale


class WarehouseResource(DuckDBResource):
    """The warehouse file; connections through `get_connection()` as DuckDBResource's, closed when the block
    raises too. dagster_duckdb closes a connection only when its block ends normally: an asset that failed
    inside one (a refused decision, an endpoint down) left it open until garbage collection, and the next
    connection to the file with another configuration was refused ("different configuration than existing
    connections")."""

    @contextmanager
    def get_connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with super().get_connection() as conn:
            try:
                yield conn
            finally:
                conn.close()  # closing twice (DuckDBResource closes after a normal end) is harmless

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        Path(self.database).parent.mkdir(parents=True, exist_ok=True)


class WarehouseDbtResource(DbtCliResource):
    """dbt CLI over the warehouse. The dbt process inherits the environment, and profiles.yml reads the
    DuckDB path from MLOPS_DUCKDB_PATH: set for the run's lifetime from `duckdb_path`, then restored."""

    duckdb_path: str = Field(description="The warehouse file dbt builds into (MLOPS_DUCKDB_PATH for profiles.yml).")
    keep_run_artifacts: int = Field(
        default=20,
        ge=0,
        description="dbt artifacts (compiled SQL, run_results.json) of this many recent runs stay in dbt_project/target; "
        "older runs' folders are deleted when a run ends (a 60-day simulation left hundreds, 260 files each).",
    )

    fetch_dbt_metadata: bool = Field(
        default=False,
        description="Open a dbt adapter in this process before every dbt command, so that the command's events can "
        "chain dagster-dbt's `.fetch_row_counts()` / `.fetch_column_metadata()` (queries on the built tables). "
        "The warehouse's assets do not chain them; opening the adapter parses every dbt macro again, about 0.7 s "
        "of CPU per command. Without it those two calls add no metadata.",
    )

    _previous: str | None = PrivateAttr(default=None)
    _run_folders: list[Path] = PrivateAttr(default_factory=list)

    @cached_property
    def _cli_version(self) -> version.Version:
        """dbt's version without dagster-dbt's `dbt --version` subprocess, which imports all of dbt once more
        (1.5-2 s) before every run's `dbt build`: the executable is this venv's own dbt, so its version is
        the installed dbt-core's (`mlops-dbt` runs that same dbt). Any other executable (a dbt Fusion binary, another venv) is asked as before."""
        own = {Path(sys.executable).with_name(name).resolve() for name in ("dbt", "mlops-dbt")}
        if Path(self.dbt_executable).resolve() in own:
            return version.parse(importlib.metadata.version("dbt-core"))
        return DbtCliResource._cli_version.func(self)

    def _initialize_dbt_core_adapter(self, args):
        """dagster-dbt builds the adapter before every command whether or not the command's events will use
        it; only `.fetch_row_counts()` and `.fetch_column_metadata()` do, and both skip a command without one."""
        if not self.fetch_dbt_metadata:
            return None
        return super()._initialize_dbt_core_adapter(args)

    def cli(self, args, *, target_path: Path | None = None, context=None, **kwargs):
        """dagster-dbt's `cli`, with this warehouse's saved parse state put in the run's target folder first
        (dagster-dbt copies dbt_project/target's only where the folder has none). Stale state is harmless:
        dbt compares every file, variable and connection hash and parses in full on any difference."""
        target_path = target_path or self._get_unique_target_path(context=context)
        folder = target_path if target_path.is_absolute() else Path(self.project_dir) / target_path
        saved = partial_parse_cache(self.duckdb_path)
        if saved.is_file() and not (folder / PARTIAL_PARSE).exists():
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(saved, folder / PARTIAL_PARSE)
        self._run_folders.append(folder)
        return super().cli(args, target_path=target_path, context=context, **kwargs)

    def _save_partial_parse(self) -> None:
        """The newest parse state this resource's runs wrote becomes the warehouse's, replaced atomically (a
        concurrent run reads the old file or the new one, never half of one)."""
        for folder in reversed(self._run_folders):
            state = folder / PARTIAL_PARSE
            if state.is_file():
                saved = partial_parse_cache(self.duckdb_path)
                partial = saved.with_name(f"{saved.name}.{os.getpid()}.tmp")
                shutil.copyfile(state, partial)
                os.replace(partial, saved)
                return

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        super().setup_for_execution(context)
        Path(self.duckdb_path).parent.mkdir(parents=True, exist_ok=True)
        self._previous = os.environ.get(DUCKDB_PATH_ENV)
        os.environ[DUCKDB_PATH_ENV] = self.duckdb_path

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._previous is None:
            os.environ.pop(DUCKDB_PATH_ENV, None)
        else:
            os.environ[DUCKDB_PATH_ENV] = self._previous
        try:
            self._save_partial_parse()
        except OSError as exc:  # a cache: the next run parses in full, nothing else depends on it
            if context.log is not None:
                context.log.warning(f"dbt's parse state was not kept for the next run: {exc}")
        target = Path(self.project_dir) / os.environ.get("DBT_TARGET_PATH", "target")  # where dagster-dbt puts them
        pruned = prune_run_folders(target, self.keep_run_artifacts)
        if pruned and context.log is not None:
            context.log.debug(f"deleted the dbt artifacts of {len(pruned)} older runs from {self.project_dir}/target")
