"""Daily monitoring follows its upstream through declarative automation (eager conditions), evaluated
against a real instance the way the running monitoring_automation sensor does."""

import datetime as dt

import dagster as dg

from mlops_assets.definitions import defs
from mlops_core.settings import Settings

FEATURE_DRIFT = dg.AssetKey("feature_drift")
FEATURE_DRIFT_INPUTS = [
    dg.AssetKey(["marts", "transactions_enriched"]),
    dg.AssetKey(["marts", "account_history"]),
    dg.AssetKey("training_set"),
]


def _report(instance, keys) -> None:
    for key in keys:
        instance.report_runless_asset_event(dg.AssetMaterialization(key))


def test_the_automation_sensor_is_running_and_targets_monitoring_and_scoring():
    sensor = defs.resolve_sensor_def("monitoring_automation")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    targeted = sensor.asset_selection.resolve(defs.resolve_asset_graph())
    assert {FEATURE_DRIFT, dg.AssetKey("concept_drift"), dg.AssetKey("batch_scores")} <= targeted
    assert dg.AssetKey("retraining_request") not in targeted


def test_new_upstream_data_requests_the_newest_day_of_feature_drift_once():
    with dg.DagsterInstance.ephemeral() as instance:
        first = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, asset_selection=dg.AssetSelection.assets(FEATURE_DRIFT)
        )
        _report(instance, FEATURE_DRIFT_INPUTS)
        updated = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, asset_selection=dg.AssetSelection.assets(FEATURE_DRIFT), cursor=first.cursor
        )
        requested = updated.get_requested_partitions(FEATURE_DRIFT)
        newest = defs.resolve_assets_def(FEATURE_DRIFT).partitions_def.get_last_partition_key()
        assert requested == {newest}
        # The newest partition is the last complete day of the platform's calendar, not a day without data.
        assert dt.date.fromisoformat(newest) == Settings.from_env().last_complete_day
        # Nothing new upstream: nothing more is requested.
        quiet = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, asset_selection=dg.AssetSelection.assets(FEATURE_DRIFT), cursor=updated.cursor
        )
        assert quiet.total_requested == 0


def test_an_input_that_was_never_built_holds_feature_drift_back():
    with dg.DagsterInstance.ephemeral() as instance:
        first = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, asset_selection=dg.AssetSelection.assets(FEATURE_DRIFT)
        )
        _report(instance, FEATURE_DRIFT_INPUTS[:2])  # no training set yet: nothing to compare with
        updated = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, asset_selection=dg.AssetSelection.assets(FEATURE_DRIFT), cursor=first.cursor
        )
        assert updated.total_requested == 0
