"""The retraining sensor over real event records of an instance, tick by tick."""

import json

import dagster as dg
import pytest

from mlops_assets.monitoring.drift import FEATURE_DRIFT
from mlops_assets.monitoring.labels import LABEL_VOLUME
from sensors.retraining import DRIFT_SHARE, NEW_LABELS, retraining_sensor


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


def tick(instance, cursor):
    context = dg.build_sensor_context(instance=instance, cursor=cursor)
    result = retraining_sensor(context)
    return result, context.cursor


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
