"""Jobs: named selections users run from the UI, the CLI and CI."""

import dagster as dg

from mlops_assets.constants import (
    APPROVAL_JOB,
    DATA_LAYER_JOB,
    FEATURE_JOB,
    FEATURES,
    INGESTION,
    MONITORING,
    MONITORING_JOB,
    PROJECT_TAG,
    PROMOTE_JOB,
    RETRAINING_JOB,
    ROLLBACK_JOB,
    ROLLOUT_JOB,
    SCORING,
    SCORING_JOB,
    TRAINING,
    TRAINING_JOB,
    WAREHOUSE,
)
from mlops_core.projects.catalog import FRAUD

# Concurrency tags for the production run queue (deploy/dagster.production.yaml): every job writes the
# one DuckDB file, which takes one writer at a time; retraining runs one at a time. The model jobs are the
# fraud project's, under the same per-project limit as every declared project's; the data layer is shared.
WAREHOUSE_WRITER = {"mlops/warehouse": "duckdb"}
FRAUD_MODEL = {**WAREHOUSE_WRITER, PROJECT_TAG: FRAUD}
RETRAINING = {**FRAUD_MODEL, "mlops/retraining": "true"}

data_layer_job = dg.define_asset_job(
    DATA_LAYER_JOB,
    tags=WAREHOUSE_WRITER,
    selection=dg.AssetSelection.groups(INGESTION, WAREHOUSE),
    description="Ingest landing partitions through the data gates, then build the dbt warehouse.",
)

feature_job = dg.define_asset_job(
    FEATURE_JOB,
    tags=FRAUD_MODEL,
    selection=dg.AssetSelection.groups(FEATURES),
    description="Build the point-in-time training set and rebuild the online feature store from the warehouse.",
)

# The deployment group reads in one direction: the challenger registered, the staged rollout, the
# champion, production. Training ends with the registration (and its line in the alias history);
# the rollout and promotion run as their own jobs or after it in retraining_job.
_registration = dg.AssetSelection.assets("registered_challenger", "model_alias_history")
_promotion = dg.AssetSelection.assets("champion_model", "production_endpoint", "model_alias_history")
_rollout = dg.AssetSelection.assets("staging_endpoint", "shadow_endpoint", "canary_endpoint") | _promotion

training_job = dg.define_asset_job(
    TRAINING_JOB,
    tags=FRAUD_MODEL,
    selection=dg.AssetSelection.groups(FEATURES, TRAINING) | _registration,
    description="Features, candidate and baseline training, evaluation with the quality gates, and registration "
    "of a passing candidate as challenger.",
)

promote_job = dg.define_asset_job(
    PROMOTE_JOB,
    tags=FRAUD_MODEL,
    selection=_promotion,
    description="Move the champion alias to the current challenger by hand (recorded in the alias history) and serve it.",
)

approval_job = dg.define_asset_job(
    APPROVAL_JOB,
    tags=FRAUD_MODEL,
    selection=_promotion,
    description="The human decision on a challenger waiting for approval (rollout.approval): launch it with "
    "champion_model's config decision (approve or reject), decision_version, actor and reason. Approved: it "
    "is promoted and served; rejected: the challenger alias is removed. Both are recorded with who and why.",
)

rollout_job = dg.define_asset_job(
    ROLLOUT_JOB,
    tags=FRAUD_MODEL,
    selection=_rollout,
    description="Staged rollout of the challenger: staging smoke test, shadow, canary, promotion and production; "
    "each stage gated by a blocking check.",
)

canary_rollback_job = dg.define_asset_job(
    ROLLBACK_JOB,
    tags=FRAUD_MODEL,
    selection=dg.AssetSelection.assets("canary_rollback"),
    description="Drain a bad canary, restore the aliases, record and alert (launched by canary_rollback_sensor).",
)

scoring_job = dg.define_asset_job(
    SCORING_JOB,
    tags=FRAUD_MODEL,
    selection=dg.AssetSelection.groups(SCORING),
    description="Score one day's transactions with the champion, vectorized (scoring.batch_scores).",
)

monitoring_job = dg.define_asset_job(
    MONITORING_JOB,
    tags=FRAUD_MODEL,
    selection=dg.AssetSelection.assets("prediction_log")
    # retraining_request records a manual request; champion_hourly_watch is observed by its sensor, not built.
    | (dg.AssetSelection.groups(MONITORING) - dg.AssetSelection.assets("retraining_request", "champion_hourly_watch")),
    description="A day's monitoring: the prediction log copied in, then feature and prediction drift, label volume, "
    "live performance, concept drift and estimated performance for the day.",
)

# Daily monitoring and batch scoring simply follow their upstream (eager automation conditions on the
# assets); this sensor evaluates those conditions and is running by default, unlike Dagster's own.
monitoring_automation = dg.AutomationConditionSensorDefinition(
    "monitoring_automation",
    target=dg.AssetSelection.groups(MONITORING, SCORING) - dg.AssetSelection.assets("retraining_request"),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
    description="Materializes a day's monitoring and batch scores once its data layer (and labels) are updated.",
)

retraining_job = dg.define_asset_job(
    RETRAINING_JOB,
    tags=RETRAINING,
    selection=dg.AssetSelection.assets("retraining_request")
    | dg.AssetSelection.groups(FEATURES, TRAINING)
    | _registration
    | _rollout,
    description="Everything downstream of a trigger: training set, candidate, gates, challenger, then the staged rollout. "
    "Launched by retraining_sensor and weekly_retraining; the trigger's reasons are in the run's mlops/reasons tag.",
)

jobs = [
    data_layer_job,
    feature_job,
    training_job,
    promote_job,
    approval_job,
    rollout_job,
    canary_rollback_job,
    scoring_job,
    monitoring_job,
    retraining_job,
]
