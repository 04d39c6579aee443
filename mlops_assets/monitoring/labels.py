"""How many labels have arrived that the champion never saw: the retraining signal of label volume."""

import datetime as dt

import dagster as dg
from dagster_duckdb import DuckDBResource

from mlops_assets.constants import MONITORING, daily_partitions, latest_metadata_text
from mlops_assets.monitoring.verdict_checks import verdict_check_result, verdict_check_spec
from mlops_assets.training.models import FRAUD_MODEL_CANDIDATE, TRAINING_CUTOFF
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
            "Passes while fewer than the retraining policy's new_labels labels arrived after the newest training cutoff "
            "(the champion's, or the last candidate's when newer). A failure (WARN) asks retraining_sensor to retrain on "
            "the new evidence.",
        )
    ],
)
def label_volume(
    context: dg.AssetExecutionContext,
    warehouse: DuckDBResource,
    retraining_policy: RetrainingPolicy,
    model_registry: ModelRegistry,
):
    """Labels landed on the day, and every label known by the end of the day that no model has learnt from yet:
    those after the champion's training cutoff (the `training_cutoff` tag of its registry version), or after
    the last candidate's when that is newer. The retraining verdict is check_label_volume.

    A candidate stopped by a gate, or rolled back at the canary, already learnt from the labels before its
    cutoff: retraining on those plus a few days' more would meet the same gate. Counting from the champion
    alone relaunched a retraining after every cool-down (three in six days on a plain history)."""
    day = dt.date.fromisoformat(context.partition_key)
    champion = model_registry.champion()
    tag = champion.tags.get(CUTOFF_TAG) if champion is not None else None
    champion_cutoff = _aware(tag)
    candidate_cutoff = _aware(latest_metadata_text(context.instance, FRAUD_MODEL_CANDIDATE, TRAINING_CUTOFF))
    cutoff, counted_from = champion_cutoff, "champion"
    if candidate_cutoff is not None and (cutoff is None or candidate_cutoff > cutoff):
        cutoff, counted_from = candidate_cutoff, "last candidate"
    end_of_day = dt.datetime.combine(day + dt.timedelta(days=1), dt.time())
    since = cutoff.astimezone(dt.UTC).replace(tzinfo=None) if cutoff else dt.datetime.min
    with warehouse.get_connection() as con:
        landed = label_counts_landed_on(con, day)
        new = label_counts_between(con, since, end_of_day)
    verdict = label_volume_verdict(
        day, new.labels, retraining_policy.new_labels, cutoff.isoformat() if cutoff else None, counted_from
    )
    return dg.MaterializeResult(
        metadata={
            "day": day.isoformat(),
            "labels_landed": landed.labels,
            "fraud_labels_landed": landed.frauds,
            "champion_version": None if champion is None else champion.version,
            "champion_training_cutoff": champion_cutoff.isoformat() if champion_cutoff else None,
            "last_candidate_training_cutoff": candidate_cutoff.isoformat() if candidate_cutoff else None,
            "counted_since": f"{cutoff.isoformat()} ({counted_from})" if cutoff else "the first label",
            "new_labels_since_cutoff": new.labels,
            "new_fraud_labels_since_cutoff": new.frauds,
        },
        check_results=[verdict_check_result(LABEL_VOLUME_CHECK, verdict)],
    )


def _aware(stamp: str | None) -> dt.datetime | None:
    """A cutoff as an aware UTC instant (tags and metadata are ISO strings; naive ones are UTC)."""
    if not stamp or stamp == "-":
        return None
    moment = dt.datetime.fromisoformat(stamp)
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
