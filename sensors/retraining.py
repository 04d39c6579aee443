"""Retraining when the world changed: drift in the day's features, or enough new labels.

One sensor reads every new materialization of `feature_drift` and `label_volume` since its
cursor (the last storage id it judged per asset), not only the latest one, so no event is
missed between ticks (a plain asset_sensor sees only the newest: dagster issue 32853).
Triggers found in one tick become one run tagged with all their reasons; the run key is the
newest day judged, so a trigger for a day that already launched a run launches nothing more.
"""

import json

import dagster as dg

from mlops_assets.constants import RETRAINING_JOB
from mlops_assets.monitoring.drift import FEATURE_DRIFT
from mlops_assets.monitoring.labels import LABEL_VOLUME

# Retrain when at least this share of features drifted on a day (Evidently's dataset-drift share) ...
DRIFT_SHARE = 0.5
# ... or when this many labels the champion never saw have arrived.
NEW_LABELS = 2000
WATCHED = (FEATURE_DRIFT, LABEL_VOLUME)


def _value(record, key):
    entry = record.asset_materialization.metadata.get(key)
    return None if entry is None else entry.value


def trigger_reason(record) -> str | None:
    """Why this materialization asks for retraining, or None."""
    day = record.partition_key
    if record.asset_key == FEATURE_DRIFT:
        share = _value(record, "share_drifted")
        if share is not None and share >= DRIFT_SHARE:
            features = ", ".join((_value(record, "drifted_features") or [])[:5])
            return f"feature drift on {day}: {share:.0%} of features drifted ({features})"
    elif record.asset_key == LABEL_VOLUME:
        new = _value(record, "new_labels_since_cutoff")
        if new is not None and new >= NEW_LABELS:
            return f"label volume on {day}: {new} labels since the champion's training cutoff (>= {NEW_LABELS})"
    return None


@dg.sensor(
    job_name=RETRAINING_JOB,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=f"Retrains on feature drift (share >= {DRIFT_SHARE:.0%}) or label volume (>= {NEW_LABELS} new labels).",
)
def retraining_sensor(context: dg.SensorEvaluationContext):
    cursor = json.loads(context.cursor) if context.cursor else {}
    reasons: list[str] = []
    days: list[str] = []
    judged = 0
    for key in WATCHED:
        after = cursor.get(key.to_user_string())
        while True:
            result = context.instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=key, after_storage_id=after), limit=100, ascending=True
            )
            for record in result.records:
                judged += 1
                after = record.storage_id
                reason = trigger_reason(record)
                if reason:
                    reasons.append(reason)
                    days.append(record.partition_key or "")
            if not result.has_more:
                break
        if after is not None:
            cursor[key.to_user_string()] = after
    context.update_cursor(json.dumps(cursor))
    if not reasons:
        return dg.SkipReason(f"{judged} new monitoring results, none asks for retraining")
    return dg.RunRequest(
        run_key=f"retrain-{max(days)}",
        tags={"mlops/trigger": "retraining_sensor", "mlops/reasons": " | ".join(reasons)[:4000]},
    )


weekly_retraining = dg.ScheduleDefinition(
    name="weekly_retraining",
    job_name=RETRAINING_JOB,
    cron_schedule="0 3 * * 1",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    tags={"mlops/trigger": "weekly_retraining", "mlops/reasons": "weekly fallback: retrain even without a trigger"},
    description="Fallback: retrain every Monday 03:00 UTC. Stopped by default; turn on in the UI.",
)
