"""The DuckDB warehouse, for the assets that query it and for dbt that builds its models.

Both create the file's directory when a run starts (a new MLOPS_HOME), not when the definitions load.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
from dagster_dbt import DbtCliResource
from dagster_duckdb import DuckDBResource
from pydantic import Field, PrivateAttr

# dbt_project/profiles.yml reads the warehouse path from this variable.
DUCKDB_PATH_ENV = "MLOPS_DUCKDB_PATH"


class WarehouseResource(DuckDBResource):
    """The warehouse file; connections through `get_connection()` as DuckDBResource's."""

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        Path(self.database).parent.mkdir(parents=True, exist_ok=True)


class WarehouseDbtResource(DbtCliResource):
    """dbt CLI over the warehouse. The dbt process inherits the environment, and profiles.yml reads the
    DuckDB path from MLOPS_DUCKDB_PATH: set for the run's lifetime from `duckdb_path`, then restored."""

    duckdb_path: str = Field(description="The warehouse file dbt builds into (MLOPS_DUCKDB_PATH for profiles.yml).")

    _previous: str | None = PrivateAttr(default=None)

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
