"""Retraining when the world changed: drift, enough new labels, or a served model that got worse.

Two sensors, one policy:
- `retraining_sensor` reads feature_drift, prediction_drift and label_volume;
- `performance_sensor` reads concept_drift (recall on confirmed frauds, Page-Hinkley, calibration).
Each reads every materialization since its cursor (the last storage id judged per asset), not only
the latest one, so no event is missed between ticks (a plain asset_sensor sees only the newest:
dagster issue 32853). The triggers of one tick become one run tagged with all their reasons.

Simultaneous triggers make one run: the run key is the newest day judged, and `request_retraining`
launches nothing while a retraining run is in flight or within the policy's cool-down after the last
sensor-launched one (in days of data), whichever sensor launched it. Held triggers are logged and
alerted, never silently dropped. Every launch is alerted through the `alerts` resource.
"""

import datetime as dt
import json

import dagster as dg

from mlops_assets.constants import RETRAINING_JOB
from mlops_assets.monitoring.drift import FEATURE_DRIFT
from mlops_assets.monitoring.labels import LABEL_VOLUME
from mlops_assets.monitoring.model_quality import CONCEPT_DRIFT, PREDICTION_DRIFT
from resources.alerts import AlertResource
from resources.retraining import RetrainingPolicy

TRIGGER_TAG = "mlops/trigger"
REASONS_TAG = "mlops/reasons"
DAY_TAG = "mlops/day"
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def _value(record, key):
    entry = record.asset_materialization.metadata.get(key)
    return None if entry is None else entry.value


def trigger_reason(record, policy: RetrainingPolicy) -> str | None:
    """Why this monitoring materialization asks for retraining, or None."""
    day = record.partition_key
    if record.asset_key == FEATURE_DRIFT:
        share = _value(record, "share_drifted")
        if share is not None and share >= policy.drift_share:
            features = ", ".join((_value(record, "drifted_features") or [])[:5])
            return f"feature drift on {day}: {share:.0%} of features drifted ({features})"
    elif record.asset_key == LABEL_VOLUME:
        new = _value(record, "new_labels_since_cutoff")
        if new is not None and new >= policy.new_labels:
            return f"label volume on {day}: {new} labels since the champion's training cutoff (>= {policy.new_labels})"
    elif record.asset_key == PREDICTION_DRIFT:
        if _value(record, "drifted"):
            return f"prediction drift on {day}: score PSI {_value(record, 'psi'):.2f} against the champion's first days"
    elif record.asset_key == CONCEPT_DRIFT:
        if _value(record, "degraded"):
            return f"model degraded on {day}: " + "; ".join(_value(record, "reasons") or [])
    return None


def read_triggers(context: dg.SensorEvaluationContext, keys, policy: RetrainingPolicy) -> tuple[list[str], list[str], int]:
    """Every materialization of `keys` after the cursor, in order; moves the cursor past them.
    Returns (reasons, their days, how many events were judged)."""
    cursor = json.loads(context.cursor) if context.cursor else {}
    reasons: list[str] = []
    days: list[str] = []
    judged = 0
    for key in keys:
        after = cursor.get(key.to_user_string())
        while True:
            result = context.instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=key, after_storage_id=after), limit=100, ascending=True
            )
            for record in result.records:
                judged += 1
                after = record.storage_id
                reason = trigger_reason(record, policy)
                if reason:
                    reasons.append(reason)
                    days.append(record.partition_key or "")
            if not result.has_more:
                break
        if after is not None:
            cursor[key.to_user_string()] = after
    context.update_cursor(json.dumps(cursor))
    return reasons, days, judged


def request_retraining(
    context: dg.SensorEvaluationContext,
    sensor_name: str,
    reasons: list[str],
    days: list[str],
    policy: RetrainingPolicy,
    alerts: AlertResource,
) -> dg.RunRequest | dg.SkipReason:
    """One retraining run for these triggers, unless one is in flight or the cool-down holds them."""
    newest = max(days)
    summary = " | ".join(reasons)
    in_flight = context.instance.get_runs(dg.RunsFilter(job_name=RETRAINING_JOB, statuses=IN_FLIGHT), limit=1)
    if in_flight:
        held = f"held: retraining run {in_flight[0].run_id[:8]} is in flight; its rollout answers these triggers too: {summary}"
        context.log.info(held)
        return dg.SkipReason(held)
    for run in context.instance.get_runs(dg.RunsFilter(job_name=RETRAINING_JOB), limit=20):
        last_day = run.tags.get(DAY_TAG)
        if last_day and run.tags.get(TRIGGER_TAG, "").endswith("_sensor"):
            until = dt.date.fromisoformat(last_day) + dt.timedelta(days=policy.cooldown_days)
            if newest and dt.date.fromisoformat(newest) < until:
                held = f"held by the cool-down until {until} (retraining for {last_day} ran): {summary}"
                context.log.info(held)
                alerts.send("Retraining trigger held", held, {"sensor": sensor_name, "triggers": len(reasons)})
                return dg.SkipReason(held)
            break
    alerts.send("Retraining requested", summary, {"sensor": sensor_name, "day": newest, "triggers": len(reasons)})
    return dg.RunRequest(
        run_key=f"retrain-{newest}",
        tags={TRIGGER_TAG: sensor_name, REASONS_TAG: summary[:4000], DAY_TAG: newest},
    )


@dg.sensor(
    job_name=RETRAINING_JOB,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Retrains on feature drift, prediction drift or label volume (thresholds: the retraining_policy resource).",
)
def retraining_sensor(context: dg.SensorEvaluationContext, retraining_policy: RetrainingPolicy, alerts: AlertResource):
    reasons, days, judged = read_triggers(context, (FEATURE_DRIFT, PREDICTION_DRIFT, LABEL_VOLUME), retraining_policy)
    if not reasons:
        return dg.SkipReason(f"{judged} new monitoring results, none asks for retraining")
    return request_retraining(context, "retraining_sensor", reasons, days, retraining_policy, alerts)


@dg.sensor(
    job_name=RETRAINING_JOB,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Retrains when the champion's recall on confirmed frauds, its matured error rate or its calibration degrades.",
)
def performance_sensor(context: dg.SensorEvaluationContext, retraining_policy: RetrainingPolicy, alerts: AlertResource):
    reasons, days, judged = read_triggers(context, (CONCEPT_DRIFT,), retraining_policy)
    if not reasons:
        return dg.SkipReason(f"{judged} new concept-drift results, no degradation")
    return request_retraining(context, "performance_sensor", reasons, days, retraining_policy, alerts)


weekly_retraining = dg.ScheduleDefinition(
    name="weekly_retraining",
    job_name=RETRAINING_JOB,
    cron_schedule="0 3 * * 1",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    tags={TRIGGER_TAG: "weekly_retraining", REASONS_TAG: "weekly fallback: retrain even without a trigger"},
    description="Fallback: retrain every Monday 03:00 UTC. Stopped by default; turn on in the UI.",
)
