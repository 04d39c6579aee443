"""The code location: assembles assets, checks, jobs, sensors and resources."""

import dagster as dg

from mlops_assets.deployment.prediction_log import prediction_log
from mlops_assets.deployment.registry import champion_model, model_alias_history, registered_challenger
from mlops_assets.deployment.rollback import canary_rollback
from mlops_assets.deployment.rollout import canary_endpoint, production_endpoint, shadow_endpoint, staging_endpoint
from mlops_assets.features.online_store import online_features, online_store_fresh
from mlops_assets.features.training_set import training_set
from mlops_assets.ingestion.assets import raw_assets
from mlops_assets.jobs import jobs, monitoring_automation
from mlops_assets.monitoring.ab_verdict import ab_verdict
from mlops_assets.monitoring.drift import feature_drift
from mlops_assets.monitoring.estimated_performance import estimated_performance
from mlops_assets.monitoring.labels import label_volume
from mlops_assets.monitoring.model_quality import concept_drift, prediction_drift
from mlops_assets.monitoring.performance import live_performance_asset
from mlops_assets.monitoring.retraining import retraining_request
from mlops_assets.projects import project_definitions
from mlops_assets.projects.reference import as_project_assets
from mlops_assets.scoring.batch_scores import batch_scores
from mlops_assets.training.evaluation import candidate_evaluation
from mlops_assets.training.models import baseline_model, fraud_model_candidate
from mlops_assets.transform.assets import warehouse_assets
from mlops_core.projects.catalog import fraud_project
from mlops_core.settings import Settings
from resources.environment import build_executor, build_resources
from sensors.ab_verdict import ab_verdict_sensor
from sensors.approvals import approval_expiry_sensor
from sensors.canary import canary_rollback_sensor
from sensors.champion_watch import champion_hourly_watch, champion_watch_sensor
from sensors.retraining import performance_sensor, retraining_sensor, weekly_retraining


def build_definitions(settings: Settings | None = None) -> dg.Definitions:
    """The code location with resources for `settings` (default: from the environment). A process that
    simulates or tests another MLOPS_HOME builds its own instead of the module-level `defs`.

    Fraud's graph is the platform's reference, written out below and stamped with its declaration's owner and
    project tag; every other project under projects/ is built from its declaration (ModelProjectComponent) and
    merged in, sharing the data layer and resources."""
    fraud = dg.Definitions(
        assets=[
            *raw_assets,
            *warehouse_assets,
            *as_project_assets(
                [
                    training_set,
                    online_features,
                    fraud_model_candidate,
                    baseline_model,
                    candidate_evaluation,
                    registered_challenger,
                    champion_model,
                    model_alias_history,
                    staging_endpoint,
                    shadow_endpoint,
                    canary_endpoint,
                    production_endpoint,
                    canary_rollback,
                    prediction_log,
                    batch_scores,
                    feature_drift,
                    label_volume,
                    retraining_request,
                    live_performance_asset,
                    prediction_drift,
                    concept_drift,
                    estimated_performance,
                    ab_verdict,
                    champion_hourly_watch,
                ],
                fraud_project(),
            ),
        ],
        sensors=[
            canary_rollback_sensor,
            retraining_sensor,
            performance_sensor,
            champion_watch_sensor,
            approval_expiry_sensor,
            ab_verdict_sensor,
            monitoring_automation,
        ],
        schedules=[weekly_retraining],
        asset_checks=[online_store_fresh],
        jobs=jobs,
        resources=build_resources(settings),
        executor=build_executor(),
    )
    return dg.Definitions.merge(fraud, *project_definitions())


defs = build_definitions()
