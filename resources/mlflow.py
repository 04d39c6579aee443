"""MLflow tracking through dagster-mlflow, pointed at the embedded store or a server."""

import os

import dagster as dg
from dagster_mlflow import mlflow_tracking

from mlops_core.settings import Settings

EXPERIMENT = "fraud_detection"
# MLflow's own HTTP client retries 7 times with backoff (minutes) before our registry retries even start
# (mlops_core/registry.py: 3 attempts, logged). Two are enough; a deployment may still set its own.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")


def tracking_uri(settings: Settings) -> str:
    """MLOPS_MLFLOW_TRACKING_URI (a server such as http://127.0.0.1:5000) or the embedded sqlite store."""
    from mlops_core.registry import tracking_uri as resolve

    return resolve(settings.mlflow_dir)


def prepare_experiment(settings: Settings) -> str:
    """Create the experiment with its artifact root under MLOPS_MLFLOW_DIR before dagster-mlflow
    sees it: its `set_experiment` would otherwise create it with artifacts in ./mlruns."""
    from mlflow import MlflowClient

    from mlops_core.registry import artifact_root_for, ensure_experiment

    uri = tracking_uri(settings)
    if uri.startswith(("http://", "https://")):
        # A tracking server keeps artifacts where it was told to and proxies them: the
        # client must not pick a local path the server cannot see.
        return ensure_experiment(MlflowClient(uri), EXPERIMENT, artifact_location=None)
    settings.mlflow_dir.mkdir(parents=True, exist_ok=True)
    return ensure_experiment(MlflowClient(uri), EXPERIMENT, artifact_root_for(settings.mlflow_dir))


def mlflow_resource(settings: Settings) -> dg.ResourceDefinition:
    """dagster-mlflow's tracking resource: one MLflow parent run per Dagster run, each model
    in a nested run under it. The experiment is prepared first, when the resource starts."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

    @dg.resource(config_schema=mlflow_tracking.config_schema, description=mlflow_tracking.description)
    def tracking(context):
        import mlflow

        prepare_experiment(settings)
        lifecycle = mlflow_tracking.resource_fn(context)
        try:
            yield next(lifecycle)
        finally:
            next(lifecycle, None)  # dagster-mlflow's own teardown (marks a failed run)
            # What its end_mlflow_on_run_finished hook does for a job, for every way a run
            # starts (jobs, dg.materialize, several runs in one process): end the parent run.
            while mlflow.active_run() is not None:
                mlflow.end_run()

    return tracking.configured(
        {
            "experiment_name": EXPERIMENT,
            "mlflow_tracking_uri": tracking_uri(settings),
            "extra_tags": {"platform": "mlops"},
        }
    )
