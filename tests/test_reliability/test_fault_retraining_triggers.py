"""Fault: two retraining triggers at once make one run.

The sensor runs through the Dagster daemon's own sensor iteration against the real code
location, on an instance whose QueuedRunCoordinator keeps submitted runs in its queue, so
what is counted is what the daemon would have launched: its run-key de-duplication included.
"""

import datetime as dt
import logging

import dagster as dg
import pytest
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.scheduler.instigation import TickStatus
from dagster._core.test_utils import InProcessTestWorkspaceLoadTarget, create_test_daemon_workspace_context, freeze_time
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._daemon.sensor import execute_sensor_iteration
from reliability_results import record

from mlops_assets.constants import RETRAINING_JOB
from mlops_assets.monitoring.drift import FEATURE_DRIFT_CHECK
from mlops_assets.monitoring.labels import LABEL_VOLUME_CHECK
from mlops_core.monitoring.verdicts import MonitoringVerdict, feature_drift_verdict, label_volume_verdict
from mlops_core.settings import REPO_ROOT
from resources.retraining import RetrainingPolicy

POLICY = RetrainingPolicy()  # the code location's thresholds (no MLOPS_RETRAIN_* set in tests)
DRIFT_SHARE, NEW_LABELS = POLICY.drift_share, POLICY.new_labels
QUEUED = {"run_coordinator": {"module": "dagster._core.run_coordinator", "class": "QueuedRunCoordinator"}}
T0 = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def daemon():
    """(instance, tick): tick(at) runs one sensor-daemon iteration at time `at`."""
    origin = InProcessCodeLocationOrigin(
        loadable_target_origin=LoadableTargetOrigin(
            module_name="mlops_assets.definitions", working_directory=str(REPO_ROOT)
        ),
        location_name="mlops",
    )
    with dg.instance_for_test(overrides=QUEUED) as instance:
        with create_test_daemon_workspace_context(InProcessTestWorkspaceLoadTarget(origin), instance) as workspace:

            def tick(at: dt.datetime) -> None:
                with freeze_time(at):
                    list(execute_sensor_iteration(workspace, logging.getLogger("sensor-daemon"), None, None))

            yield instance, tick


def report(instance, key: dg.AssetCheckKey, verdict: MonitoringVerdict) -> None:
    """The verdict as its monitoring asset writes it: the metadata of its WARN check, failed when it triggers."""
    instance.report_runless_asset_event(
        dg.AssetCheckEvaluation(
            asset_key=key.asset_key,
            check_name=key.name,
            passed=not verdict.triggered,
            severity=dg.AssetCheckSeverity.WARN,
            description=verdict.reason,
            metadata=verdict.to_metadata(),
        )
    )


def drift(instance, day: str, share: float) -> None:
    report(
        instance,
        FEATURE_DRIFT_CHECK,
        feature_drift_verdict(dt.date.fromisoformat(day), share, ["amount_usd"], 2000, DRIFT_SHARE),
    )


def labels(instance, day: str, new: int) -> None:
    report(instance, LABEL_VOLUME_CHECK, label_volume_verdict(dt.date.fromisoformat(day), new, NEW_LABELS, None))


def retraining_runs(instance) -> list:
    return instance.get_runs(filters=dg.RunsFilter(job_name=RETRAINING_JOB))


def test_two_triggers_in_one_tick_and_again_next_tick_queue_one_run(daemon):
    instance, tick = daemon
    day = "2026-11-22"
    with freeze_time(T0 - dt.timedelta(minutes=5)):
        drift(instance, day, DRIFT_SHARE + 0.3)
        labels(instance, day, NEW_LABELS + 1)
    tick(T0)
    after_first = retraining_runs(instance)
    # The same triggers fire again before the next tick (the monitoring job re-ran the day).
    with freeze_time(T0 + dt.timedelta(seconds=30)):
        labels(instance, day, NEW_LABELS + 50)
        drift(instance, day, 0.9)
    tick(T0 + dt.timedelta(seconds=61))
    runs = retraining_runs(instance)

    (state,) = [s for s in instance.all_instigator_state() if s.name == "retraining_sensor"]
    ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id)
    assert len(ticks) == 2, "both daemon iterations must have evaluated the sensor"
    assert len(after_first) == 1
    assert len(runs) == 1, [r.tags for r in runs]
    (run,) = runs
    assert run.status == dg.DagsterRunStatus.QUEUED
    assert run.tags["dagster/run_key"] == f"retrain-{day}"
    assert (
        "feature drift on 2026-11-22" in run.tags["mlops/reasons"]
        and "labels since the champion" in run.tags["mlops/reasons"]
    )
    # Nothing lost: the second tick judged the new events and launched nothing (the sensor holds
    # triggers while a retraining run is queued or running; the run key would de-duplicate too).
    second = max(ticks, key=lambda t: t.timestamp)
    assert second.status == TickStatus.SKIPPED and second.run_ids == []
    held = second.skip_reason or f"run key {second.run_keys} already launched"
    assert "in flight" in held or second.run_keys == [f"retrain-{day}"], held
    record(
        "faults",
        "two retraining triggers at once",
        what="feature_drift and label_volume both trigger for one day, in one tick; the same triggers again in the next tick; "
        "sensor run by the daemon's own iteration on an instance with a QueuedRunCoordinator",
        expected="exactly one queued retraining_job run, tagged with both reasons",
        observed=f"{len(runs)} run ({run.status.value}), run key {run.tags['dagster/run_key']}, both reasons in its tags; 2nd tick "
        f"{second.status.value}: `{held[:90]}`",
        test="test_fault_retraining_triggers.py::test_two_triggers_in_one_tick_and_again_next_tick_queue_one_run",
    )
