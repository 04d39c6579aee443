"""How many labels have arrived that the champion never saw: the retraining signal of label volume."""

import datetime as dt

import dagster as dg
from dagster_duckdb import DuckDBResource

from mlops_assets.constants import MONITORING, daily_partitions
from mlops_assets.monitoring.verdict_checks import verdict_check_result, verdict_check_spec
from mlops_core.monitoring.reads import label_counts_between, label_counts_landed_on
from mlops_core.monitoring.verdicts import label_volume_verdict
from resources.registry import ModelRegistry
from resources.retraining import RetrainingPolicy

LABEL_VOLUME = dg.AssetKey("label_volume")
LABEL_VOLUME_CHECK = dg.AssetCheckKey(LABEL_VOLUME, "check_label_volume")
CUTOFF_TAG = "training_cutoff"


@dg.asset(
    key=LABEL_VOLUME,
    group_name=MONITORING,
    partitions_def=daily_partitions,
    # Follows its upstream: the monitoring_automation sensor materializes the newest day once its inputs update.
    automation_condition=dg.AutomationCondition.eager(),
    deps=[dg.AssetKey(["marts", "label_events"]), dg.AssetKey("champion_model")],
    kinds={"duckdb"},
    check_specs=[
        verdict_check_spec(
            LABEL_VOLUME_CHECK,
            "Passes while fewer than the retraining policy's new_labels labels arrived after the champion's training cutoff. "
            "A failure (WARN) asks retraining_sensor to retrain on the new evidence.",
        )
    ],
)
def label_volume(
    context: dg.AssetExecutionContext,
    warehouse: DuckDBResource,
    retraining_policy: RetrainingPolicy,
    model_registry: ModelRegistry,
):
    """Labels landed on the day, and every label known by the end of the day that came after the champion's
    training cutoff (the `training_cutoff` tag of its registry version): new evidence the champion never saw.
    The retraining verdict is check_label_volume."""
    day = dt.date.fromisoformat(context.partition_key)
    champion = model_registry.champion()
    tag = champion.tags.get(CUTOFF_TAG) if champion is not None else None
    cutoff = dt.datetime.fromisoformat(tag) if tag else None
    end_of_day = dt.datetime.combine(day + dt.timedelta(days=1), dt.time())
    since = cutoff.replace(tzinfo=None) if cutoff else dt.datetime.min
    with warehouse.get_connection() as con:
        landed = label_counts_landed_on(con, day)
        new = label_counts_between(con, since, end_of_day)
    verdict = label_volume_verdict(
        day, new.labels, retraining_policy.new_labels, cutoff.isoformat() if cutoff else None
    )
    return dg.MaterializeResult(
        metadata={
            "day": day.isoformat(),
            "labels_landed": landed.labels,
            "fraud_labels_landed": landed.frauds,
            "champion_version": None if champion is None else champion.version,
            "champion_training_cutoff": cutoff.isoformat() if cutoff else None,
            "new_labels_since_cutoff": new.labels,
            "new_fraud_labels_since_cutoff": new.frauds,
        },
        check_results=[verdict_check_result(LABEL_VOLUME_CHECK, verdict)],
    )
