"""The retraining sensors over real event records of an instance, tick by tick."""

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, HTTPServer

import dagster as dg
import pytest

from mlops_assets.constants import RETRAINING_JOB
from mlops_assets.monitoring.drift import FEATURE_DRIFT
from mlops_assets.monitoring.labels import LABEL_VOLUME
from mlops_assets.monitoring.model_quality import CONCEPT_DRIFT, PREDICTION_DRIFT
from resources.alerts import AlertResource
from resources.retraining import RetrainingPolicy
from sensors.retraining import performance_sensor, retraining_sensor

POLICY = RetrainingPolicy()
DRIFT_SHARE, NEW_LABELS = POLICY.drift_share, POLICY.new_labels


@pytest.fixture
def instance():
    with dg.DagsterInstance.ephemeral() as instance:
        yield instance


def drift(instance, day: str, share: float) -> None:
    instance.report_runless_asset_event(
        dg.AssetMaterialization(FEATURE_DRIFT, partition=day, metadata={"share_drifted": share, "drifted_features": ["amount_usd", "hour_of_day"]})
    )


def labels(instance, day: str, new: int) -> None:
    instance.report_runless_asset_event(dg.AssetMaterialization(LABEL_VOLUME, partition=day, metadata={"new_labels_since_cutoff": new}))


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
    reasons = ["recall 0.10 on 40 recent frauds vs 0.80 at promotion (p=1e-20)"] if is_degraded else []
    instance.report_runless_asset_event(
        dg.AssetMaterialization(CONCEPT_DRIFT, partition=day, metadata={"degraded": is_degraded, "reasons": reasons})
    )


def test_quiet_days_launch_nothing(instance):
    drift(instance, "2026-03-01", 0.1)
    labels(instance, "2026-03-01", NEW_LABELS - 1)
    result, cursor = tick(instance, None)
    assert isinstance(result, dg.SkipReason) and "2 new monitoring results" in result.skip_message
    assert set(json.loads(cursor)) == {FEATURE_DRIFT.to_user_string(), LABEL_VOLUME.to_user_string()}


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

    by_sensor = dg.materialize([retraining_request], tags={"mlops/trigger": "retraining_sensor", "mlops/reasons": "feature drift on 2026-03-02"})
    meta = by_sensor.get_asset_materialization_events()[0].materialization.metadata
    assert (meta["trigger"].value, meta["reasons"].value) == ("retraining_sensor", "feature drift on 2026-03-02")
    by_hand = dg.materialize([retraining_request], run_config={"ops": {"retraining_request": {"config": {"reason": "new fraud ring reported"}}}})
    meta = by_hand.get_asset_materialization_events()[0].materialization.metadata
    assert (meta["trigger"].value, meta["reasons"].value) == ("manual", "new fraud ring reported")
    reasonless = dg.materialize([retraining_request], raise_on_error=False)
    assert not reasonless.success


def test_prediction_drift_triggers(instance):
    instance.report_runless_asset_event(
        dg.AssetMaterialization(PREDICTION_DRIFT, partition="2026-03-06", metadata={"drifted": True, "psi": 0.41})
    )
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
