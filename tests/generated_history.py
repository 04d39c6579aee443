"""A throwaway MLOPS_HOME holding a generated history loaded through the data layer."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import pytest

from mlops_assets.ingestion.assets import raw_assets
from mlops_assets.transform.assets import warehouse_assets
from mlops_core.datagen.generator import DemoSpec, generate_landing
from mlops_core.settings import Settings
from resources.environment import build_resources


@contextlib.contextmanager
def loaded_history(home: Path, start: date, days: int, rows_per_day: int, seed: int) -> Iterator[Settings]:
    """Settings of `home` with every path exported, after ingesting and building the marts."""
    settings = Settings.from_env({"MLOPS_HOME": str(home)})
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {
            "MLOPS_HOME": settings.home,
            "MLOPS_DATA_DIR": settings.data_dir,
            "MLOPS_DUCKDB_PATH": settings.duckdb_path,
            "DAGSTER_HOME": settings.dagster_home,
            "MLOPS_MLFLOW_DIR": settings.mlflow_dir,
            "MLOPS_REPORTS_DIR": settings.reports_dir,
        }.items():
            mp.setenv(key, str(value))
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        generate_landing(DemoSpec(start=start, days=days, rows_per_day=rows_per_day, seed=seed), settings.landing_dir)
        result = dg.materialize(
            [*raw_assets, *warehouse_assets],
            resources=build_resources(settings),
            instance=dg.DagsterInstance.ephemeral(),
            tags={
                "dagster/asset_partition_range_start": start.isoformat(),
                "dagster/asset_partition_range_end": (start + timedelta(days=days - 1)).isoformat(),
            },
        )
        assert result.success
        yield settings
