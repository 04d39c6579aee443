"""The platform's settings (mlops_core.settings.Settings) as a resource, chosen once in build_resources.

Assets take `settings: SettingsResource` instead of reading the environment themselves, so a code location
built for another MLOPS_HOME (a test, a simulation) is seen the same by every asset. The resource shows
the resolved locations in the UI; its setup creates the state directories when a run starts, never at import.
"""

from __future__ import annotations

import datetime as dt
import typing
from pathlib import Path

import dagster as dg
from pydantic import Field

from mlops_core.settings import Settings

# Settings' fields and their types: the resource carries each one (tests/test_resources checks the sets match).
_SETTINGS_TYPES = typing.get_type_hints(Settings)


def _same(value):
    return value


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
    train_on_early_frauds: bool = Field(
        default=False,
        description="MLOPS_TRAIN_ON_EARLY_FRAUDS: training also learns the frauds confirmed inside the maturity window.",
    )
    online_allowed_lateness_days: int = Field(
        default=7, description="MLOPS_ONLINE_ALLOWED_LATENESS_DAYS: how late a transaction may reach the online store."
    )
    clock: str = Field(description="MLOPS_TODAY: a date, or 'system' for the machine's clock.")
    partitions_start: str = Field(description="MLOPS_PARTITIONS_START: the first daily partition (YYYY-MM-DD).")
    serving_url: str = Field(description="MLOPS_SERVING_URL: the production endpoint.")
    releases_dir: str = Field(default="", description="MLOPS_RELEASES_DIR: the release files (empty: none).")
    releases_git_remote: str = Field(
        default="", description="MLOPS_RELEASES_GIT_REMOTE: the GitOps repository release commits are pushed to."
    )
    releases_git_branch: str = Field(
        default="mlops/releases", description="MLOPS_RELEASES_GIT_BRANCH: the branch release commits go to."
    )
    dbt_launcher: str = Field(
        default="warm",
        description="MLOPS_DBT_LAUNCHER: 'warm' forks each dbt command from a server that imported dbt once, 'cold' "
        "starts dbt every time.",
    )
    dbt_file_log_level: str = Field(
        default="warn",
        description="MLOPS_DBT_FILE_LOG_LEVEL: what each dbt command writes to its run's dbt.log (debug, info, warn, "
        "error, none).",
    )

    @classmethod
    def of(cls, settings: Settings) -> SettingsResource:
        """Every field of `settings`, paths and dates as text (Dagster config is plain values)."""
        plain = {name: getattr(settings, name) for name in _SETTINGS_TYPES}
        return cls(
            **{
                name: value.isoformat()
                if isinstance(value, dt.date)
                else str(value)
                if isinstance(value, Path)
                else ""
                if value is None and name == "releases_dir"
                else value
                for name, value in plain.items()
            }
        )

    def get(self) -> Settings:
        """The settings, validated as mlops_core builds them."""
        parse = {Path: Path, dt.date: dt.date.fromisoformat, Path | None: lambda v: Path(v) if v else None}
        return Settings(**{name: parse.get(kind, _same)(getattr(self, name)) for name, kind in _SETTINGS_TYPES.items()})

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # A run may be the first thing to touch a new MLOPS_HOME (`mlops prepare` not run yet).
        self.get().ensure_dirs()
