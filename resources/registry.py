"""The MLflow model registry and tracking store as one resource: aliases, registration, history, model runs.

A thin typed face over mlops_core.registry (pure functions, retries, the alias history in DuckDB): assets
take `model_registry: ModelRegistry` and ask it for a client, the champion or the challenger of a project,
and move aliases through it, so no asset builds its own MlflowClient or reads the global tracking URI.

Tracking runs: one MLflow parent run per Dagster run (tagged `dagster_run_id`, named after the job), and
one nested run per model inside it (`model_run`). The parent starts the first time a step opens a model
run; a step in another process (multiprocess or k8s executor) finds it by its tag and resumes it. When
the resource is torn down the parent ends FAILED if a step of the Dagster run failed, else FINISHED; a
model run whose step raised ends FAILED on its own (MLflow's context manager).

dagster-mlflow is not used. Its `mlflow_tracking` is a legacy `@resource` (BetaWarning), so it cannot be
a typed parameter, and what it adds was either unused or wrong here: it sets the global tracking URI
and environment variables when it starts, `set_experiment` creates a missing experiment with its
artifacts in ./mlruns, its hand-rolled teardown ends the run from `sys.exc_info()`, which Dagster never
sets at teardown (step errors are caught), so a failed run was recorded FINISHED, and its
`end_mlflow_on_run_finished` hook only applies to jobs, not to `dg.materialize`. The one thing worth
keeping, resuming the parent run by its `dagster_run_id` tag across step processes, is `_parent_run`.

Side effects happen at run time only, in `setup_for_execution`: the experiment is created with its
artifact root (sqlite store) or the server's (tracking server), MLflow's fluent API is pointed at the
store (the training assets log models through it), and MLflow's own HTTP retries are lowered so the
registry's bounded, logged retries decide (docs/reliability.md). Importing this module changes nothing.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import Field, PrivateAttr

from mlops_core import registry, releases
from mlops_core.serving.analysis import OfflineExpectation
from mlops_core.settings import Settings

if TYPE_CHECKING:
    import duckdb
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.entities import Run

EXPERIMENT = "fraud_detection"
DAGSTER_RUN_TAG = "dagster_run_id"
# MLflow's HTTP client retries 7 times with backoff (minutes) before the registry's own retries start
# (mlops_core/registry.py: 3 attempts, logged). Two are enough; a deployment may still set its own.
HTTP_RETRIES_ENV = "MLFLOW_HTTP_REQUEST_MAX_RETRIES"


class ModelRegistry(dg.ConfigurableResource):
    """The MLflow registry and tracking store (an embedded sqlite file or an MLflow server)."""

    tracking_uri: str = Field(
        description="Tracking and registry URI: sqlite:///<MLOPS_MLFLOW_DIR>/mlflow.db, or a server such as "
        "http://127.0.0.1:5000 (MLOPS_MLFLOW_TRACKING_URI). Credentials come from MLflow's own variables, never the URI."
    )
    artifact_location: str = Field(
        default="",
        description="Artifact root of a new experiment (file URI under MLOPS_MLFLOW_DIR); empty with a tracking "
        "server, which keeps artifacts where it was told to and proxies them.",
    )
    experiment_name: str = Field(default=EXPERIMENT, description="Experiment of the training runs.")
    run_tags: dict[str, str] = Field(
        default={"platform": "mlops"}, description="Tags of every parent run, beside dagster_run_id."
    )
    http_max_retries: int = Field(
        default=2,
        ge=0,
        description="MLflow's own HTTP retries (MLFLOW_HTTP_REQUEST_MAX_RETRIES) when the environment sets none.",
    )
    releases_dir: str = Field(
        default="",
        description="Where promotions and rollbacks write the release file of the model (MLOPS_RELEASES_DIR; "
        "mlops_core/releases.py); empty: no release files.",
    )
    releases_git_remote: str = Field(
        default="", description="GitOps repository each release change is committed and pushed to (optional)."
    )
    releases_git_branch: str = Field(default="mlops/releases", description="Branch release commits are pushed to.")

    _experiment_id: str | None = PrivateAttr(default=None)
    _dagster_run_id: str | None = PrivateAttr(default=None)
    _job_name: str | None = PrivateAttr(default=None)
    _parent_run_id: str | None = PrivateAttr(default=None)

    @classmethod
    def for_settings(cls, settings: Settings) -> ModelRegistry:
        """The embedded store under settings.mlflow_dir, or the server MLOPS_MLFLOW_TRACKING_URI names."""
        uri = registry.tracking_uri(settings.mlflow_dir)
        on_server = uri.startswith(("http://", "https://"))
        return cls(
            tracking_uri=uri,
            artifact_location="" if on_server else registry.artifact_root_for(settings.mlflow_dir),
            releases_dir=str(settings.releases_dir or ""),
            releases_git_remote=settings.releases_git_remote,
            releases_git_branch=settings.releases_git_branch,
        )

    def client(self) -> MlflowClient:
        """A client of this store (tracking and registry); cheap, one per use is fine."""
        from mlflow import MlflowClient

        if self.tracking_uri.startswith("sqlite:///"):
            registry.seed_sqlite_store(Path(self.tracking_uri.removeprefix("sqlite:///")))
        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def version(self, project: str, alias: str) -> registry.AliasedVersion | None:
        """The version `alias` names in `project` (a registered model), or None when it is unset."""
        return registry.aliased_version(self.client(), alias, project)

    def champion(self, project: str = registry.MODEL_NAME) -> registry.AliasedVersion | None:
        """The version serving production (alias `champion`): number, run id, tags; None before the first promotion."""
        return self.version(project, registry.CHAMPION)

    def challenger(self, project: str = registry.MODEL_NAME) -> registry.AliasedVersion | None:
        """The version waiting for its rollout (alias `challenger`); None when none passed the gates yet."""
        return self.version(project, registry.CHALLENGER)

    def offline_expectation(self, version: registry.AliasedVersion | None) -> OfflineExpectation | None:
        """How `version` behaved on its own test split (flag rate, score shares), from the scores its evaluation
        logged; None for a version evaluated before that artifact existed, or without a run."""
        if version is None or not version.run_id:
            return None
        reference = registry.run_json_artifact(self.client(), version.run_id, registry.CBPE_REFERENCE_ARTIFACT)
        return None if reference is None else OfflineExpectation.from_reference(reference)

    def register(
        self,
        con: duckdb.DuckDBPyConnection,
        alias: str,
        run_id: str,
        artifact_path: str,
        reason: str,
        metrics: dict[str, Any],
        tags: dict[str, str] | None = None,
        model_uri: str | None = None,
        actor: str = "dagster",
        project: str = registry.MODEL_NAME,
    ) -> registry.AliasChange:
        """Register the model of `run_id` as a new version and point `alias` at it, all or nothing."""
        return registry.register_as(
            self.client(), con, alias, run_id, artifact_path, reason, metrics, tags, model_uri, actor, project
        )

    def move_alias(
        self,
        con: duckdb.DuckDBPyConnection,
        alias: str,
        version: str,
        reason: str,
        metrics: dict[str, Any],
        actor: str = "dagster",
        project: str = registry.MODEL_NAME,
    ) -> registry.AliasChange:
        """Point `alias` at `version` and record the move in the alias history."""
        return registry.move_alias(self.client(), con, alias, version, reason, metrics, actor, project)

    def remove_alias(
        self,
        con: duckdb.DuckDBPyConnection,
        alias: str,
        reason: str,
        metrics: dict[str, Any] | None = None,
        actor: str = "dagster",
        project: str = registry.MODEL_NAME,
    ) -> registry.AliasChange:
        """Remove `alias` and record it; RegistryError when it is unset."""
        return registry.remove_alias(self.client(), con, alias, reason, metrics, actor, project)

    def promote_challenger(
        self,
        con: duckdb.DuckDBPyConnection,
        reason: str,
        metrics: dict[str, Any],
        actor: str = "dagster",
        project: str = registry.MODEL_NAME,
    ) -> registry.AliasChange:
        """Move `champion` to the challenger's version; the previous champion stays in the history for rollback.
        The release file follows (and, with a git remote, a pushed commit)."""
        change = registry.promote_challenger(self.client(), con, reason, metrics, actor, project)
        self._record_release(con, change, releases.PROMOTE)
        return change

    def rollback_champion(
        self, con: duckdb.DuckDBPyConnection, reason: str, actor: str = "dagster", project: str = registry.MODEL_NAME
    ) -> registry.AliasChange:
        """Undo the latest champion move, as recorded in the alias history; the release file follows."""
        change = registry.rollback_champion(self.client(), con, reason, actor, project)
        self._record_release(con, change, releases.ROLLBACK)
        return change

    def _record_release(self, con: duckdb.DuckDBPyConnection, change: registry.AliasChange, action: str) -> None:
        """Write the release file of a champion move. If it cannot be written (or pushed), the alias goes back,
        recorded as such, and the error is raised: the registry never serves what the GitOps record does not say."""
        if not self.releases_dir or change.to_version is None:
            return
        client = self.client()
        try:
            release = releases.release_of(
                client,
                change.model_name,
                change.to_version,
                action=action,
                previous_version=change.from_version,
                actor=change.actor,
                reason=change.reason,
                changed_at=change.changed_at,
            )
            releases.write(Path(self.releases_dir), release, self.releases_git_remote, self.releases_git_branch)
        except Exception as exc:
            undone = f"release file not written, {action} undone: {exc}"
            if change.from_version is not None:
                registry.move_alias(
                    client, con, registry.CHAMPION, change.from_version, undone, {}, "release_record", change.model_name
                )
            else:
                registry.remove_alias(client, con, registry.CHAMPION, undone, {}, "release_record", change.model_name)
            raise registry.RegistryError(
                f"{action} of {change.model_name!r} to version {change.to_version}: the release file could not be "
                f"written to {self.releases_dir}: {exc}"
            ) from exc

    def history(self, con: duckdb.DuckDBPyConnection, project: str | None = None) -> pd.DataFrame:
        """Every recorded alias move (of `project`, or of all), oldest first."""
        return registry.history(con, project)

    @contextlib.contextmanager
    def model_run(self, run_name: str, experiment: str | None = None) -> Iterator[Run]:
        """A nested MLflow run for one model, under the Dagster run's parent run; log through MLflow's fluent API
        inside it. It ends FAILED if the block raises. `experiment` names another experiment than the resource's
        (a model project's runs go to the project's own experiment, created on first use)."""
        import mlflow

        experiment_id = self._prepare()
        if experiment is not None and experiment != self.experiment_name:
            experiment_id = registry.ensure_experiment(self.client(), experiment, self.artifact_location or None)
        self._parent_run(experiment_id)
        with mlflow.start_run(run_name=run_name, nested=True, experiment_id=experiment_id) as run:
            yield run

    def _prepare(self) -> str:
        """The experiment, created with an explicit artifact root so nothing lands in ./mlruns; MLflow's
        fluent API pointed at this store."""
        import mlflow

        if self._experiment_id is None:
            os.environ.setdefault(HTTP_RETRIES_ENV, str(self.http_max_retries))
            os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
            self._experiment_id = registry.ensure_experiment(
                self.client(), self.experiment_name, self.artifact_location or None
            )
        mlflow.set_tracking_uri(self.tracking_uri)
        return self._experiment_id

    def _parent_run(self, experiment_id: str) -> None:
        """Start the Dagster run's MLflow run, or resume it (started by an earlier step, maybe in another process)."""
        import mlflow

        if self._dagster_run_id is None:
            return  # used outside a Dagster run (a direct call in a test): the model run has no parent
        active = mlflow.active_run()
        if active is not None and active.data.tags.get(DAGSTER_RUN_TAG) == self._dagster_run_id:
            return
        existing = self.client().search_runs(
            [experiment_id], filter_string=f"tags.{DAGSTER_RUN_TAG} = '{self._dagster_run_id}'", max_results=1
        )
        mlflow.start_run(
            run_id=existing[0].info.run_id if existing else None,
            experiment_id=experiment_id,
            nested=active is not None,  # a run the caller opened around the Dagster run keeps it inside
            run_name=None if existing else self._job_name,
            tags={DAGSTER_RUN_TAG: self._dagster_run_id, **self.run_tags},
        )
        self._parent_run_id = mlflow.active_run().info.run_id

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._experiment_id = self._parent_run_id = None  # nothing carried over from an earlier run
        self._dagster_run_id = context.run_id
        self._job_name = context.dagster_run.job_name if context.dagster_run else None
        self._prepare()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        import mlflow

        if self._parent_run_id is None:
            return
        status = "FAILED" if _run_has_failed_steps(context) else "FINISHED"
        # Down to the parent run: a model run a crash left open, then the parent; a run the caller holds stays.
        while (active := mlflow.active_run()) is not None:
            mlflow.end_run(status)
            if active.info.run_id == self._parent_run_id:
                break
        self._parent_run_id = None


def _run_has_failed_steps(context: dg.InitResourceContext) -> bool:
    if context.instance is None or context.run_id is None:
        return False
    failures = context.instance.get_records_for_run(context.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
    return bool(failures.records)
