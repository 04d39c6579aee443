"""The platform's settings (mlops_core.settings.Settings) as a resource, chosen once in build_resources.

Assets take `settings: SettingsResource` instead of reading the environment themselves, so a code location
built for another MLOPS_HOME (a test, a simulation) is seen the same by every asset. The resource shows
the resolved locations in the UI; its setup creates the state directories when a run starts, never at import.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import dagster as dg
from pydantic import Field

from mlops_core.settings import Settings


class SettingsResource(dg.ConfigurableResource):
    """Where local state lives and the platform's calendar, as resolved from MLOPS_HOME and its overrides."""

    home: str = Field(description="MLOPS_HOME: every default location derives from it.")
    data_dir: str = Field(description="MLOPS_DATA_DIR: landing files and the online store.")
    duckdb_path: str = Field(description="MLOPS_DUCKDB_PATH: the warehouse file.")
    dagster_home: str = Field(description="DAGSTER_HOME: the Dagster instance.")
    reports_dir: str = Field(description="MLOPS_REPORTS_DIR: evaluation and drift reports.")
    mlflow_dir: str = Field(description="MLOPS_MLFLOW_DIR: the embedded MLflow store and its artifacts.")
    online_store: str = Field(default="sqlite", description="MLOPS_ONLINE_STORE: 'sqlite' (embedded) or 'redis'.")
    label_maturity_days: int = Field(
        default=45,
        description="MLOPS_LABEL_MATURITY_DAYS: a transaction without a fraud verdict after this is legitimate.",
    )
    training_lookback_days: int | None = Field(
        default=None, description="MLOPS_TRAINING_LOOKBACK_DAYS: days of mature history training takes (None: all)."
    )
    online_allowed_lateness_days: int = Field(
        default=7, description="MLOPS_ONLINE_ALLOWED_LATENESS_DAYS: how late a transaction may reach the online store."
    )
    clock: str = Field(description="MLOPS_TODAY: a date, or 'system' for the machine's clock.")
    partitions_start: str = Field(description="MLOPS_PARTITIONS_START: the first daily partition (YYYY-MM-DD).")
    serving_url: str = Field(description="MLOPS_SERVING_URL: the production endpoint.")

    @classmethod
    def of(cls, settings: Settings) -> SettingsResource:
        return cls(
            home=str(settings.home),
            data_dir=str(settings.data_dir),
            duckdb_path=str(settings.duckdb_path),
            dagster_home=str(settings.dagster_home),
            reports_dir=str(settings.reports_dir),
            mlflow_dir=str(settings.mlflow_dir),
            online_store=settings.online_store,
            label_maturity_days=settings.label_maturity_days,
            training_lookback_days=settings.training_lookback_days,
            online_allowed_lateness_days=settings.online_allowed_lateness_days,
            clock=settings.clock,
            partitions_start=settings.partitions_start.isoformat(),
            serving_url=settings.serving_url,
        )

    def get(self) -> Settings:
        """The settings, validated as mlops_core builds them."""
        return Settings(
            home=Path(self.home),
            data_dir=Path(self.data_dir),
            duckdb_path=Path(self.duckdb_path),
            dagster_home=Path(self.dagster_home),
            reports_dir=Path(self.reports_dir),
            mlflow_dir=Path(self.mlflow_dir),
            online_store=self.online_store,
            label_maturity_days=self.label_maturity_days,
            training_lookback_days=self.training_lookback_days,
            online_allowed_lateness_days=self.online_allowed_lateness_days,
            clock=self.clock,
            partitions_start=dt.date.fromisoformat(self.partitions_start),
            serving_url=self.serving_url,
        )

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # A run may be the first thing to touch a new MLOPS_HOME (`mlops prepare` not run yet).
        self.get().ensure_dirs()
