"""A throwaway MLOPS_HOME holding a generated history loaded through the data layer."""

from __future__ import annotations

import contextlib
import shutil
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

# The gates have their own tests (test_training_assets.py); tests that only need a promoted
# champion open them wide so a small history always yields one.
OPEN_GATES = {
    "min_auc_pr": 0.0,
    "min_recall": 0.0,
    "max_recall_gap": 1.0,
    "max_false_positive_rate_gap": 1.0,
    "max_p99_latency_ms": 1000.0,
    "max_flip_rate": 1.0,
    "max_calibration_error": 1.0,
}


def promote_a_champion(settings: Settings) -> None:
    """Training set, candidate, baseline, evaluation, challenger and champion, in one run."""
    from mlops_assets.deployment.registry import champion_model, registered_challenger
    from mlops_assets.features.training_set import training_set
    from mlops_assets.training.evaluation import candidate_evaluation
    from mlops_assets.training.models import baseline_model, fraud_model_candidate

    result = dg.materialize(
        [
            training_set,
            fraud_model_candidate,
            baseline_model,
            candidate_evaluation,
            registered_challenger,
            champion_model,
        ],
        resources=build_resources(settings),
        instance=dg.DagsterInstance.ephemeral(),
        run_config={
            "ops": {
                "training_set": {"config": {"leakage_sample_size": 50}},
                "fraud_model_candidate": {"config": {"n_estimators": 60}},
                "candidate_evaluation": {"config": OPEN_GATES},
            }
        },
    )
    assert result.success


@contextlib.contextmanager
def loaded_history(
    home: Path, start: date, days: int, rows_per_day: int, seed: int, churn_share: float = 0.0
) -> Iterator[Settings]:
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
        generate_landing(
            DemoSpec(start=start, days=days, rows_per_day=rows_per_day, seed=seed, churn_share=churn_share),
            settings.landing_dir,
        )
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


class HomeTemplate:
    """A loaded home that each test gets back pristine, at the path it was built at.

    Tests that each need their own copy of one history restore it here rather than copy it to a new path:
    dbt's saved parse state holds the warehouse path (resources/warehouse.py, partial_parse_cache), so a copy
    at another path parses the whole dbt project again on its first run (2-3 s a test).
    Tests using one template run one at a time (a module's tests share an xdist worker's fixture)."""

    def __init__(self, root: Path) -> None:
        self.home = root / "home"
        self._pristine = root / "pristine"

    def freeze(self) -> None:
        shutil.copytree(self.home, self._pristine)

    def restore(self) -> Path:
        shutil.rmtree(self.home, ignore_errors=True)
        shutil.copytree(self._pristine, self.home)
        return self.home
