"""The retraining sensors over real check evaluations of an instance, tick by tick.

Each monitoring verdict is reported the way its asset writes it: the metadata of a WARN check evaluation
that fails when the verdict asks for retraining (mlops_assets/monitoring/verdict_checks.py), built by the
same verdict builders the assets call, with the policy's thresholds.
"""

import datetime as dt
import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, HTTPServer

import dagster as dg
import pytest
from dagster._core.definitions.asset_checks.asset_check_evaluation import AssetCheckEvaluationPlanned

from mlops_assets.constants import RETRAINING_JOB
from mlops_assets.monitoring.drift import FEATURE_DRIFT_CHECK
from mlops_assets.monitoring.labels import LABEL_VOLUME_CHECK
from mlops_assets.monitoring.model_quality import CHAMPION_PERFORMANCE_CHECK, PREDICTION_DRIFT_CHECK
from mlops_core.monitoring.verdicts import (
    MonitoringVerdict,
    concept_drift_verdict,
    feature_drift_verdict,
    label_volume_verdict,
    prediction_drift_verdict,
)
from resources.alerts import AlertResource
from resources.retraining import RetrainingPolicy
from sensors.retraining import performance_sensor, retraining_sensor

POLICY = RetrainingPolicy()
DRIFT_SHARE, NEW_LABELS = POLICY.drift_share, POLICY.new_labels
CHECK_OF = {
    "feature_drift": FEATURE_DRIFT_CHECK,
    "label_volume": LABEL_VOLUME_CHECK,
    "prediction_drift": PREDICTION_DRIFT_CHECK,
    "concept_drift": CHAMPION_PERFORMANCE_CHECK,
}


@pytest.fixture
def instance():
    with dg.DagsterInstance.ephemeral() as instance:
        yield instance


def evaluation(verdict: MonitoringVerdict, metadata: dict | None = None) -> dg.AssetCheckEvaluation:
    key = CHECK_OF[verdict.asset]
    return dg.AssetCheckEvaluation(
        asset_key=key.asset_key,
        check_name=key.name,
        passed=not verdict.triggered,
        severity=dg.AssetCheckSeverity.WARN,
        description=verdict.reason,
        metadata=verdict.to_metadata() if metadata is None else metadata,
    )


def report(instance, verdict: MonitoringVerdict) -> None:
    instance.report_runless_asset_event(evaluation(verdict))


def drift(instance, day: str, share: float) -> None:
    report(
        instance,
        feature_drift_verdict(
            dt.date.fromisoformat(day), share, ["amount_usd", "hour_of_day"], 2000, POLICY.drift_share
        ),
    )


def labels(instance, day: str, new: int) -> None:
    report(instance, label_volume_verdict(dt.date.fromisoformat(day), new, POLICY.new_labels, "2026-02-01T00:00:00"))


SENT: list[tuple[str, str]] = []


class RecordedAlerts(AlertResource):
    """Alerts kept in SENT instead of posted."""

    def send(self, title: str, text: str, fields: dict | None = None) -> bool:
        SENT.append((title, text))
        return False


def tick(instance, cursor, sensor=retraining_sensor, alerts=None):
    resources = {"retraining_policy": POLICY, "alerts": alerts or AlertResource()}
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources)
    result = sensor(context)
    return result, context.cursor


def launched(instance, request: dg.RunRequest, status=dg.DagsterRunStatus.SUCCESS) -> None:
    """Record the run the daemon would create for a request."""
    tags = {**request.tags, "dagster/run_key": request.run_key}
    instance.add_run(dg.DagsterRun(job_name=RETRAINING_JOB, run_id=str(uuid.uuid4()), tags=tags, status=status))


def degraded(instance, day: str, is_degraded: bool) -> None:
    recall = {"recall": 0.10, "frauds": 40, "p_value": 1e-20 if is_degraded else 0.4, "drop": is_degraded}
    verdict = concept_drift_verdict(
        dt.date.fromisoformat(day),
        confidence=POLICY.confidence,
        page_hinkley_threshold=POLICY.page_hinkley_threshold,
        recall=recall,
        reference_recall=0.80,
    )
    report(instance, verdict)


def test_quiet_days_launch_nothing(instance):
    drift(instance, "2026-03-01", 0.1)
    labels(instance, "2026-03-01", NEW_LABELS - 1)
    result, cursor = tick(instance, None)
    assert isinstance(result, dg.SkipReason) and "2 new monitoring results" in result.skip_message
    assert set(json.loads(cursor)) == {FEATURE_DRIFT_CHECK.to_user_string(), LABEL_VOLUME_CHECK.to_user_string()}


def test_two_events_between_ticks_are_both_judged(instance):
    """A drifted day followed by a quiet one before the next tick: the drifted one still triggers
    (an asset_sensor on the latest event would see only the quiet day)."""
    _, cursor = tick(instance, None)
    drift(instance, "2026-03-02", DRIFT_SHARE + 0.1)
    drift(instance, "2026-03-03", 0.0)
    result, cursor = tick(instance, cursor)
    assert isinstance(result, dg.RunRequest)
    assert "feature drift on 2026-03-02" in result.tags["mlops/reasons"]
    assert result.run_key == "retrain-2026-03-02"
    again, _ = tick(instance, cursor)
    assert isinstance(again, dg.SkipReason)


def test_simultaneous_triggers_make_one_run_with_every_reason(instance):
    drift(instance, "2026-03-04", 0.8)
    labels(instance, "2026-03-04", NEW_LABELS + 500)
    result, _ = tick(instance, None)
    assert isinstance(result, dg.RunRequest)
    reasons = result.tags["mlops/reasons"]
    assert "feature drift on 2026-03-04: 80%" in reasons and f"{NEW_LABELS + 500} labels" in reasons
    assert result.run_key == "retrain-2026-03-04"


def test_a_trigger_for_a_day_already_retrained_keeps_its_run_key(instance):
    """Label volume crossing the bound one tick after drift on the same day asks for the same run key,
    which Dagster launches once."""
    drift(instance, "2026-03-05", 0.9)
    first, cursor = tick(instance, None)
    labels(instance, "2026-03-05", NEW_LABELS)
    second, _ = tick(instance, cursor)
    assert isinstance(first, dg.RunRequest) and isinstance(second, dg.RunRequest)
    assert first.run_key == second.run_key


def test_retraining_request_records_the_reasons_and_refuses_a_reasonless_manual_run():
    from mlops_assets.monitoring.retraining import retraining_request

    by_sensor = dg.materialize(
        [retraining_request],
        tags={"mlops/trigger": "retraining_sensor", "mlops/reasons": "feature drift on 2026-03-02"},
    )
    meta = by_sensor.get_asset_materialization_events()[0].materialization.metadata
    assert (meta["trigger"].value, meta["reasons"].value) == ("retraining_sensor", "feature drift on 2026-03-02")
    by_hand = dg.materialize(
        [retraining_request],
        run_config={"ops": {"retraining_request": {"config": {"reason": "new fraud ring reported"}}}},
    )
    meta = by_hand.get_asset_materialization_events()[0].materialization.metadata
    assert (meta["trigger"].value, meta["reasons"].value) == ("manual", "new fraud ring reported")
    reasonless = dg.materialize([retraining_request], raise_on_error=False)
    assert not reasonless.success


def test_prediction_drift_triggers(instance):
    report(instance, prediction_drift_verdict(dt.date(2026, 3, 6), 0.41, POLICY.prediction_psi))
    result, _ = tick(instance, None)
    assert isinstance(result, dg.RunRequest) and "score PSI 0.41" in result.tags["mlops/reasons"]


def test_performance_sensor_retrains_on_degradation_only(instance):
    degraded(instance, "2026-03-07", False)
    quiet, cursor = tick(instance, None, performance_sensor)
    assert isinstance(quiet, dg.SkipReason)
    degraded(instance, "2026-03-08", True)
    result, _ = tick(instance, cursor, performance_sensor)
    assert isinstance(result, dg.RunRequest)
    assert result.tags["mlops/trigger"] == "performance_sensor" and "recall 0.10" in result.tags["mlops/reasons"]
    assert result.tags["mlops/day"] == "2026-03-08"


def test_two_sensors_firing_for_the_same_day_make_one_run(instance):
    drift(instance, "2026-03-09", 0.9)
    degraded(instance, "2026-03-09", True)
    first, _ = tick(instance, None, retraining_sensor)
    assert isinstance(first, dg.RunRequest)
    launched(instance, first)
    second, _ = tick(instance, None, performance_sensor)
    assert isinstance(second, dg.SkipReason) and "cool-down" in second.skip_message
    assert len(instance.get_runs(dg.RunsFilter(job_name=RETRAINING_JOB))) == 1


def test_triggers_while_a_retraining_runs_are_held_then_the_cooldown_ends(instance):
    drift(instance, "2026-03-10", 0.9)
    first, cursor = tick(instance, None)
    launched(instance, first, status=dg.DagsterRunStatus.STARTED)
    labels(instance, "2026-03-11", NEW_LABELS * 2)
    held, cursor = tick(instance, cursor)
    assert isinstance(held, dg.SkipReason) and "in flight" in held.skip_message
    run = instance.get_runs(dg.RunsFilter(job_name=RETRAINING_JOB))[0]
    instance.report_run_failed(run)  # it ends; the cool-down still counts from its day
    within = f"2026-03-{10 + POLICY.cooldown_days - 1:02d}"
    drift(instance, within, 0.9)
    still, cursor = tick(instance, cursor)
    assert isinstance(still, dg.SkipReason) and "cool-down" in still.skip_message
    after = f"2026-03-{10 + POLICY.cooldown_days:02d}"
    drift(instance, after, 0.9)
    again, _ = tick(instance, cursor)
    assert isinstance(again, dg.RunRequest) and again.run_key == f"retrain-{after}"


class _Receiver(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        _Receiver.received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_a_retraining_request_is_alerted_to_the_webhook(instance):
    receiver = HTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=receiver.serve_forever, daemon=True)
    thread.start()
    _Receiver.received.clear()
    try:
        alerts = AlertResource(webhook_url=f"http://127.0.0.1:{receiver.server_address[1]}/hook")
        drift(instance, "2026-03-20", 0.75)
        result, _ = tick(instance, None, alerts=alerts)
    finally:
        receiver.shutdown()
        receiver.server_close()
    assert isinstance(result, dg.RunRequest)
    (payload,) = _Receiver.received
    assert payload["text"].startswith("Retraining requested: feature drift on 2026-03-20: 75%")
    assert any("retraining_sensor" in block.get("text", {}).get("text", "") for block in payload["blocks"])


def test_an_evaluation_that_is_not_a_verdict_is_reported_and_the_others_still_count(instance):
    """A writer that renamed `triggered`: the sensor names the field in its result and alerts, moves past
    that evaluation, and still retrains on a readable trigger of the same tick."""
    SENT.clear()
    renamed = feature_drift_verdict(dt.date(2026, 3, 21), 0.9, ["amount_usd"], 2000, DRIFT_SHARE)
    metadata = renamed.to_metadata()
    metadata["retrain"] = metadata.pop("triggered")
    instance.report_runless_asset_event(evaluation(renamed, metadata))
    quiet, cursor = tick(instance, None, alerts=RecordedAlerts())
    assert isinstance(quiet, dg.SkipReason)
    assert "0 new monitoring results" in quiet.skip_message and "field 'triggered' is missing" in quiet.skip_message
    ((title, text),) = SENT
    assert title == "Monitoring verdict unreadable" and "feature_drift:check_feature_drift" in text
    labels(instance, "2026-03-21", NEW_LABELS)
    instance.report_runless_asset_event(evaluation(renamed, {**renamed.to_metadata(), "share_drifted": "90%"}))
    result, cursor = tick(instance, cursor, alerts=RecordedAlerts())
    assert isinstance(result, dg.RunRequest) and "label volume on 2026-03-21" in result.tags["mlops/reasons"]
    assert "feature drift" not in result.tags["mlops/reasons"]
    unreadable = [text for title, text in SENT if title == "Monitoring verdict unreadable"]
    assert len(unreadable) == 2 and "field 'share_drifted' must be a finite number or null, got '90%'" in unreadable[1]
    again, _ = tick(instance, cursor, alerts=RecordedAlerts())
    assert isinstance(again, dg.SkipReason) and "unreadable" not in again.skip_message


def test_a_check_outcome_that_contradicts_its_verdict_is_reported(instance):
    verdict = feature_drift_verdict(dt.date(2026, 3, 22), 0.9, ["amount_usd"], 2000, DRIFT_SHARE)
    contradicting = dg.AssetCheckEvaluation(
        asset_key=FEATURE_DRIFT_CHECK.asset_key,
        check_name=FEATURE_DRIFT_CHECK.name,
        passed=True,
        metadata=verdict.to_metadata(),
    )
    instance.report_runless_asset_event(contradicting)
    result, _ = tick(instance, None)
    assert isinstance(result, dg.SkipReason) and "field 'triggered' is True but the check passed" in result.skip_message


def _planned(instance, key: dg.AssetCheckKey, status: dg.DagsterRunStatus, day: str | None = None) -> str:
    """A monitoring run that has planned the check and not evaluated it yet (as while its asset computes),
    for the run's partition `day` when given."""
    run_id = str(uuid.uuid4())
    instance.add_run(dg.DagsterRun(job_name="monitoring_job", run_id=run_id, status=status))
    subset = (
        dg.DailyPartitionsDefinition(start_date="2026-01-01").subset_with_partition_keys([day]).to_serializable_subset()
        if day
        else None
    )
    planned = dg.DagsterEvent(
        dg.DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED.value,
        "monitoring_job",
        event_specific_data=AssetCheckEvaluationPlanned(
            asset_key=key.asset_key, check_name=key.name, partitions_subset=subset
        ),
    )
    instance.report_dagster_event(planned, run_id)
    return run_id


@pytest.mark.parametrize("planned_for_day", [False, True], ids=["completed-in-place", "completed-as-a-new-execution"])
def test_an_evaluation_still_running_at_a_tick_is_judged_when_it_completes(instance, planned_for_day):
    """The storage records a check execution when its run plans it. Planned without a partition, the
    evaluation completes that record in place, and a cursor that only moved forward would pass over it;
    planned for the run's partition (what a run of these daily assets does), dagster 1.13 stores the
    unpartitioned check's evaluation as a new execution and leaves the plan behind."""
    day = "2026-03-23"
    run_id = _planned(instance, FEATURE_DRIFT_CHECK, dg.DagsterRunStatus.STARTED, day if planned_for_day else None)
    labels(instance, day, NEW_LABELS - 1)  # a later execution, completed at once
    first, cursor = tick(instance, None)
    assert isinstance(first, dg.SkipReason)
    assert "1 new monitoring results" in first.skip_message and "(1 still being evaluated)" in first.skip_message
    verdict = feature_drift_verdict(dt.date.fromisoformat(day), 0.9, ["amount_usd"], 2000, DRIFT_SHARE)
    completed = dg.DagsterEvent(
        dg.DagsterEventType.ASSET_CHECK_EVALUATION.value, "monitoring_job", event_specific_data=evaluation(verdict)
    )
    instance.report_dagster_event(completed, run_id)
    instance.report_dagster_event(dg.DagsterEvent(dg.DagsterEventType.RUN_SUCCESS.value, "monitoring_job"), run_id)
    executions = instance.event_log_storage.get_asset_check_execution_history(FEATURE_DRIFT_CHECK, limit=10)
    assert len(executions) == (2 if planned_for_day else 1)
    result, cursor = tick(instance, cursor)
    assert (
        isinstance(result, dg.RunRequest)
        and result.tags["mlops/reasons"] == f"feature drift on {day}: 90% of features drifted (amount_usd)"
    )
    assert json.loads(cursor)[FEATURE_DRIFT_CHECK.to_user_string()]["pending"] == []
    again, _ = tick(instance, cursor)
    assert isinstance(again, dg.SkipReason) and again.skip_message.startswith("0 new monitoring results")


def test_an_execution_whose_run_ended_without_evaluating_it_is_dropped(instance):
    run_id = _planned(instance, FEATURE_DRIFT_CHECK, dg.DagsterRunStatus.STARTED)
    _, cursor = tick(instance, None)
    assert json.loads(cursor)[FEATURE_DRIFT_CHECK.to_user_string()]["pending"] != []
    instance.report_run_failed(instance.get_run_by_id(run_id))  # the asset raised: no evaluation will come
    result, cursor = tick(instance, cursor)
    assert isinstance(result, dg.SkipReason) and "still being evaluated" not in result.skip_message
    assert json.loads(cursor)[FEATURE_DRIFT_CHECK.to_user_string()]["pending"] == []


def test_more_evaluations_than_a_page_between_ticks_are_all_judged(instance):
    """The storage pages newest first; the one trigger among 250 quiet days, oldest of all, still counts."""
    _, cursor = tick(instance, None)
    start = dt.date(2026, 4, 1)
    drift(instance, start.isoformat(), 0.9)
    for i in range(1, 250):
        drift(instance, (start + dt.timedelta(days=i)).isoformat(), 0.0)
    result, cursor = tick(instance, cursor)
    assert (
        isinstance(result, dg.RunRequest)
        and result.tags["mlops/reasons"]
        == f"feature drift on {start}: 90% of features drifted (amount_usd, hour_of_day)"
    )
    again, _ = tick(instance, cursor)
    assert isinstance(again, dg.SkipReason) and again.skip_message.startswith("0 new monitoring results")


def test_a_cursor_of_the_materialization_reader_is_replaced(instance):
    """A cursor written before the verdicts were checks held materialization storage ids per asset."""
    drift(instance, "2026-03-24", 0.9)
    result, cursor = tick(instance, json.dumps({"feature_drift": 12345, "label_volume": 678}))
    assert isinstance(result, dg.RunRequest)
    assert set(json.loads(cursor)) == {FEATURE_DRIFT_CHECK.to_user_string()}


def _ab_status(instance, day: str, status: str) -> None:
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            "ab_verdict", partition=day, metadata={"status": status, "version": "7", "deadline": "2026-04-20"}
        )
    )


def test_a_trigger_is_held_while_a_canary_waits_for_its_ab_verdict_and_launches_once_it_ended(instance):
    SENT.clear()
    _ab_status(instance, "2026-03-09", "running")
    drift(instance, "2026-03-09", 0.9)
    held, cursor = tick(instance, None, alerts=RecordedAlerts())
    assert isinstance(held, dg.SkipReason) and "held: the A/B test of v7 is running" in held.skip_message
    assert "2026-04-20" in held.skip_message and SENT[-1][0] == "Retraining trigger held"
    # The test ended (the newest verdict says so): the next trigger launches.
    _ab_status(instance, "2026-03-10", "failed")
    drift(instance, "2026-03-10", 0.9)
    launched_now, _ = tick(instance, cursor)
    assert isinstance(launched_now, dg.RunRequest)


def test_a_degraded_champion_is_not_held_by_an_ab_test(instance):
    """The champion failing on confirmed frauds cannot wait weeks for a canary's matured labels
    (rollout.ab_test.unless_champion_degraded): the performance trigger launches; a drift trigger still waits."""
    _ab_status(instance, "2026-03-11", "running")
    degraded(instance, "2026-03-11", True)
    urgent, _ = tick(instance, None, sensor=performance_sensor)
    assert isinstance(urgent, dg.RunRequest) and urgent.tags["mlops/trigger"] == "performance_sensor"
    drift(instance, "2026-03-11", 0.9)
    held, _ = tick(instance, None)
    assert isinstance(held, dg.SkipReason) and "A/B test of v7" in held.skip_message
