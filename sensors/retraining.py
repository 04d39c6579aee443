"""Retraining when the world changed: drift, enough new labels, or a served model that got worse.

Two sensors, one policy:
- `retraining_sensor` reads the verdicts of check_feature_drift, check_prediction_drift and check_label_volume;
- `performance_sensor` reads check_champion_performance (concept_drift: recall on confirmed frauds,
  Page-Hinkley, calibration) and check_estimated_performance (calibrated CBPE, before labels).
The monitoring assets judge their day against the `retraining_policy` resource and write the verdict as
their WARN asset check (mlops_assets/monitoring/verdict_checks.py); a failed check asks for retraining.
`read_verdicts` reads every check evaluation since its cursor, not only the latest one, so no verdict is
missed between ticks (a plain asset_sensor sees only the newest: dagster issue 32853). The triggers of one
tick become one run tagged with all their reasons. An evaluation that is not a verdict is reported
(error log and alert), never skipped in silence.

Simultaneous triggers make one run: the run key is the newest day judged, and `request_retraining`
launches nothing while a retraining run is in flight, within the policy's cool-down after the last
sensor-launched one (in days of data), whichever sensor launched it, or while a canary is held for its A/B
verdict (a new challenger would end the test before its labels matured; the test's deadline bounds the wait). Held triggers are logged and
alerted, never silently dropped. Every launch is alerted through the `alerts` resource.
"""

import datetime as dt
import json
from dataclasses import dataclass, field

import dagster as dg

from mlops_assets.constants import RETRAINING_JOB
from mlops_assets.monitoring.ab_verdict import AB_VERDICT
from mlops_assets.monitoring.drift import FEATURE_DRIFT_CHECK
from mlops_assets.monitoring.estimated_performance import ESTIMATED_PERFORMANCE_CHECK
from mlops_assets.monitoring.labels import LABEL_VOLUME_CHECK
from mlops_assets.monitoring.model_quality import CHAMPION_PERFORMANCE_CHECK, PREDICTION_DRIFT_CHECK
from mlops_assets.monitoring.verdict_checks import verdict_of
from mlops_core import ab_tests
from mlops_core.monitoring.verdicts import MonitoringVerdict, VerdictError
from mlops_core.projects.catalog import fraud_project
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
PAGE = 100


@dataclass
class Verdicts:
    """What one tick read: the verdicts in the order they were written, the evaluations that were not
    verdicts, and how many evaluations are still running (judged on a later tick)."""

    verdicts: list[MonitoringVerdict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    pending: int = 0

    @property
    def triggers(self) -> list[MonitoringVerdict]:
        return [v for v in self.verdicts if v.triggered]


def _executions_after(storage, key: dg.AssetCheckKey, after: int | None) -> list:
    """The check's executions with an id above `after`, oldest first. The storage pages newest first
    (ids below its cursor), so this pages down until it reaches `after`."""
    records, below = [], None
    while True:
        page = storage.get_asset_check_execution_history(key, limit=PAGE, cursor=below)
        new = [r for r in page if after is None or r.id > after]
        records.extend(new)
        if len(page) < PAGE or len(new) < len(page):
            return records[::-1]
        below = page[-1].id


def _evaluation(record) -> dg.AssetCheckEvaluation | None:
    """The execution's evaluation, or None while its run has only planned it."""
    event = record.event
    if event is None or event.dagster_event_type != dg.DagsterEventType.ASSET_CHECK_EVALUATION:
        return None
    return record.evaluation


def _execution(storage, key: dg.AssetCheckKey, execution_id: int):
    """One execution by id (the storage returns ids below its cursor, newest first)."""
    page = storage.get_asset_check_execution_history(key, limit=1, cursor=execution_id + 1)
    return page[0] if page and page[0].id == execution_id else None


def read_verdicts(context: dg.SensorEvaluationContext, keys: tuple[dg.AssetCheckKey, ...]) -> Verdicts:
    """Every evaluation of the checks `keys` after the cursor, in order; moves the cursor past them.

    The cursor keeps, per check, the newest execution id read and the ids still running: an execution is
    recorded when its run plans it and may be completed in place, so one planned at the last tick is read
    again until it completes or its run ends."""
    cursor = json.loads(context.cursor) if context.cursor else {}
    storage = context.instance.event_log_storage
    read = Verdicts()
    for key in keys:
        state = cursor.get(key.to_user_string())
        state = state if isinstance(state, dict) else {}  # an older cursor held materialization storage ids
        after = state.get("after")
        waiting = [r for r in (_execution(storage, key, i) for i in state.get("pending", [])) if r is not None]
        new = _executions_after(storage, key, after)
        if new:
            after = new[-1].id
        pending = []
        for record in sorted(waiting + new, key=lambda r: r.id):
            evaluation = _evaluation(record)
            if evaluation is None:
                run = context.instance.get_run_by_id(record.run_id)
                if run is not None and not run.is_finished:
                    pending.append(record.id)
                # A planned execution of an ended run is never completed: its asset failed (the run shows it),
                # or, for these unpartitioned checks of a partitioned run, dagster 1.13 stored the evaluation
                # as a new execution (the plan has the partition, the evaluation none), read as a new one.
                continue
            try:
                read.verdicts.append(verdict_of(key, evaluation))
            except VerdictError as error:
                read.errors.append(
                    f"evaluation {record.id} of {key.to_user_string()} (run {record.run_id[:8]}) is not a verdict: {error}"
                )
        read.pending += len(pending)
        if after is not None:
            cursor[key.to_user_string()] = {"after": after, "pending": pending}
    context.update_cursor(
        json.dumps({k.to_user_string(): cursor[k.to_user_string()] for k in keys if k.to_user_string() in cursor})
    )
    return read


def report_errors(context: dg.SensorEvaluationContext, sensor_name: str, read: Verdicts, alerts: AlertResource) -> str:
    """Log and alert every evaluation that was not a verdict; the text to add to the tick's result."""
    for error in read.errors:
        context.log.error(error)
        alerts.send("Monitoring verdict unreadable", error, {"sensor": sensor_name})
    return f"; {len(read.errors)} unreadable: " + " | ".join(read.errors) if read.errors else ""


def _still_running(read: Verdicts) -> str:
    return f" ({read.pending} still being evaluated)" if read.pending else ""


def running_ab_test(instance: dg.DagsterInstance) -> dict | None:
    """The A/B test the newest ab_verdict found running (version, deadline), if it did: a canary held for its
    verdict on matured labels (mlops_core/ab_tests.py)."""
    event = instance.get_latest_materialization_event(AB_VERDICT)
    if event is None or event.asset_materialization is None:
        return None
    metadata = {k: v.value for k, v in event.asset_materialization.metadata.items()}
    if metadata.get("status") != "running":
        return None
    return {"version": metadata.get("version"), "deadline": metadata.get("deadline")}


def request_retraining(
    context: dg.SensorEvaluationContext,
    sensor_name: str,
    triggers: list[MonitoringVerdict],
    policy: RetrainingPolicy,
    alerts: AlertResource,
) -> dg.RunRequest | dg.SkipReason:
    """One retraining run for these triggers, unless one is in flight or the cool-down holds them."""
    reasons = [v.reason for v in triggers]
    newest = max(v.day for v in triggers)
    summary = " | ".join(reasons)
    testing = running_ab_test(context.instance)
    urgent = sensor_name in ab_tests.DEGRADATION_TRIGGERS and fraud_project().rollout.ab_test.unless_champion_degraded
    if testing and not urgent:
        held = (
            f"held: the A/B test of v{testing['version']} is running until its verdict (deadline {testing['deadline']}); "
            f"a new challenger would end it before its labels matured: {summary}"
        )
        context.log.info(held)
        alerts.send("Retraining trigger held", held, {"sensor": sensor_name, "triggers": len(reasons)})
        return dg.SkipReason(held)
    in_flight = context.instance.get_runs(dg.RunsFilter(job_name=RETRAINING_JOB, statuses=IN_FLIGHT), limit=1)
    if in_flight:
        held = f"held: retraining run {in_flight[0].run_id[:8]} is in flight; its rollout answers these triggers too: {summary}"
        context.log.info(held)
        return dg.SkipReason(held)
    for run in context.instance.get_runs(dg.RunsFilter(job_name=RETRAINING_JOB), limit=20):
        last_day = run.tags.get(DAY_TAG)
        if last_day and run.tags.get(TRIGGER_TAG, "").endswith("_sensor"):
            until = dt.date.fromisoformat(last_day) + dt.timedelta(days=policy.cooldown_days)
            if dt.date.fromisoformat(newest) < until:
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
    read = read_verdicts(context, (FEATURE_DRIFT_CHECK, PREDICTION_DRIFT_CHECK, LABEL_VOLUME_CHECK))
    unreadable = report_errors(context, "retraining_sensor", read, alerts)
    if not read.triggers:
        return dg.SkipReason(
            f"{len(read.verdicts)} new monitoring results, none asks for retraining{_still_running(read)}{unreadable}"
        )
    return request_retraining(context, "retraining_sensor", read.triggers, retraining_policy, alerts)


@dg.sensor(
    job_name=RETRAINING_JOB,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Retrains when the champion's recall on confirmed frauds, its matured error rate or its calibration degrades, "
    "or when its AUC-PR estimated before labels (calibrated CBPE) drops.",
)
def performance_sensor(context: dg.SensorEvaluationContext, retraining_policy: RetrainingPolicy, alerts: AlertResource):
    read = read_verdicts(context, (CHAMPION_PERFORMANCE_CHECK, ESTIMATED_PERFORMANCE_CHECK))
    unreadable = report_errors(context, "performance_sensor", read, alerts)
    if not read.triggers:
        return dg.SkipReason(
            f"{len(read.verdicts)} new concept-drift results, no degradation{_still_running(read)}{unreadable}"
        )
    return request_retraining(context, "performance_sensor", read.triggers, retraining_policy, alerts)


weekly_retraining = dg.ScheduleDefinition(
    name="weekly_retraining",
    job_name=RETRAINING_JOB,
    # The fraud project's declared schedule (projects/fraud/defs.yaml); Monday 03:00 UTC if it declares none.
    cron_schedule=fraud_project().monitoring.retrain_schedule or "0 3 * * 1",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    tags={TRIGGER_TAG: "weekly_retraining", REASONS_TAG: "weekly fallback: retrain even without a trigger"},
    description=f"Fallback: retrain on the fraud project's declared schedule ({fraud_project().monitoring.retrain_schedule or '0 3 * * 1'}, "
    "UTC) even without a trigger. Stopped by default; turn on in the UI.",
)
