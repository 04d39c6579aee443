"""The closed loop on a short simulation through the real platform: data layer, live endpoint on 127.0.0.1,
monitoring, sensors ticking in process, retraining and the staged rollout.

One run of four days after a 45-day history: a clean day, a bad landing day, then covariate drift.
- bad data (day 1, transactions without merchant_category): the data gate holds the day, nothing retrains,
  and the champion keeps serving every request;
- covariate drift (days 2 and 3): the drift sensor retrains once and a new champion serves or the rollout
  stops it, the frozen model is kept beside it, and the next day's trigger is held by the cool-down.
The two stories once ran as two simulations, each building the same history (a quarter of the suite's
longest file): one run is how a pipeline meets them, and it shows the held day blocks no later day.
The first champion's gates are opened (their own tests are in tests/test_training); every retraining faces
the default gates.
"""

import datetime as dt

import dagster as dg
import duckdb
import mlflow
import pytest
from generated_history import OPEN_GATES

from mlops_cli.simulation.loop import ClosedLoop, SimulationSpec, isolated_home
from mlops_core import registry
from mlops_core.monitoring.timeline import summarize
from mlops_core.serving.client import EndpointClient
from mlops_core.serving.server import free_port

# The policy is a deployment's to tune (resources/retraining.py). On this 45-day history, days before
# the shift measured 6-29% of features drifted and the first shifted day 48-52% at 2,000 transactions a day;
# at the 1,000 the drift test runs, the day before 7% and the shifted days 53%: 0.38 lies between, where
# the default 0.5 does not.
DRIFT_SHARE = 0.38


def _simulate(tmp_path_factory, **spec):
    home = tmp_path_factory.mktemp("loop")
    with isolated_home(home, MLOPS_RETRAIN_DRIFT_SHARE=str(DRIFT_SHARE)) as settings:
        lines: list[str] = []
        loop = ClosedLoop(
            settings,
            SimulationSpec(
                **{
                    "history_days": 45,
                    # 1,000 a day: the drift still splits the days far apart (7% vs 53%, above), and the drift
                    # fixture took 73 s of CPU instead of 96 s at 2,000.
                    "rows_per_day": 1000,
                    "training_lookback_days": 45,
                    "validation_share": 0.15,
                    "test_share": 0.15,
                    "initial_gates": OPEN_GATES,
                    "port": free_port(),
                    **spec,
                }
            ),
            echo=lines.append,
        )
        try:
            records = loop.run()
            with EndpointClient(f"http://127.0.0.1:{loop.spec.port}") as client:
                deployment = client.deployment()
        finally:
            loop.stop_endpoint()
        with dg.DagsterInstance.get() as instance:
            retraining_runs = instance.get_runs(dg.RunsFilter(job_name="retraining_job"))
            # The window each retraining's training set was cut with (None: all history).
            lookbacks = [
                entry.asset_materialization.metadata["lookback_days"].value
                for run in retraining_runs
                for entry in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
                if entry.asset_materialization.asset_key == dg.AssetKey("training_set")
            ]
        client = mlflow.MlflowClient(registry.tracking_uri(loop.settings.mlflow_dir))
        champion = registry.alias_version(client, registry.CHAMPION)
        yield loop, records, lines, deployment, retraining_runs, champion, lookbacks


@pytest.fixture(scope="module")
def loop_run(tmp_path_factory):
    # The oracle's quality has its own tests (tests/test_training/test_oracle.py); here its daily refits are
    # wired in. 60 rounds at most, as the first champion's, instead of 400: a third of this fixture's CPU.
    yield from _simulate(
        tmp_path_factory,
        days=4,
        scenario="covariate_drift",
        drift_day=DRIFT_DAY,
        bad_days=((BAD_DAY, "bad_missing_column"),),
        oracle_max_trees=60,
    )


BAD_DAY, DRIFT_DAY = 1, 2


@pytest.mark.timeout(1200)
def test_drift_launches_one_tagged_retraining_whose_outcome_is_what_serves(loop_run):
    """The drifted day triggers retraining_job through the sensor. The retrained model has not seen the
    new spending yet (its labels are not mature), so the staged rollout may promote it or stop it at a
    gate (the canary's score-shift rule often does: two models disagree most on data neither has seen).
    Either way the endpoint, the registry and the timeline agree, and the next day's trigger is held."""
    loop, records, lines, deployment, runs, champion, lookbacks = loop_run
    # The first champion learns from all the history; retraining takes the lookback window. The loop's
    # resources once kept the settings they were built with, and retraining silently took all history.
    assert lookbacks == [loop.spec.training_lookback_days] == [45]
    before, drifted, cooled = records[0], records[DRIFT_DAY], records[DRIFT_DAY + 1]
    assert not before.affected and not before.triggers and before.champion == "1" and before.drift_share < DRIFT_SHARE
    assert drifted.affected and drifted.drift_share >= DRIFT_SHARE
    assert any("retraining_sensor: feature drift on" in t for t in drifted.triggers)
    (run,) = runs
    assert run.tags["mlops/trigger"] == "retraining_sensor" and "feature drift on" in run.tags["mlops/reasons"]
    assert run.tags["dagster/run_key"] == f"retrain-{drifted.day}"
    if run.status == dg.DagsterRunStatus.SUCCESS:
        assert drifted.promoted == "2" and drifted.landing_to_champion_seconds > 0
        assert deployment["champion_version"] == champion == "2"
        assert any("PROMOTED v2" in line for line in lines)
    else:
        assert run.status == dg.DagsterRunStatus.FAILURE and drifted.promoted is None
        assert "stopped by" in drifted.retraining and (
            "gate_" in drifted.retraining
            or "_healthy" in drifted.retraining
            or "staging" in drifted.retraining
            or "shadow" in drifted.retraining
        )
        assert deployment["champion_version"] == champion == "1"
        assert deployment.get("canary_version") in (None, "")
    # The next day's drift is held by the cool-down: still one run.
    assert any("cool-down" in t for t in cooled.triggers) and cooled.promoted is None
    # Every day's monitoring_job succeeded (drift, prediction drift, labels, live performance, concept drift).
    assert [r.monitoring for r in records] == ["ok"] * len(records)
    # The frozen first champion and the oracle scored the same requests; the oracle learnt every day from
    # every label landed by its end (day d scored by the model of the end of day d - 1).
    assert all(0 <= r.frozen_recall <= 1 and 0 <= r.served_auc_pr_7d <= 1 for r in records)
    assert all(r.oracle_auc_pr_7d is not None and 0 <= r.oracle_auc_pr_7d <= 1 for r in records)
    fits = loop.oracle.fits
    assert len(fits) == 1 + len(records)
    assert [f.cutoff.date().isoformat() for f in fits[1:]] == [
        (dt.date.fromisoformat(r.day) + dt.timedelta(days=1)).isoformat() for r in records
    ]
    assert all(later.rows > earlier.rows for earlier, later in zip(fits, fits[1:]))
    assert all(1 <= f.trees <= 60 for f in fits), [f.trees for f in fits]
    # champion_watch_sensor ticked with the others: a day's hours are judged once the champion's references
    # for those hours of the day are full, which the history's rollout replay does not do.
    assert all(r.hours_judged >= 0 for r in records)
    summary = summarize(records, first_day=1)
    assert summary.mean_auc_pr["oracle"] == pytest.approx(sum(r.oracle_auc_pr for r in records[1:]) / len(records[1:]))


@pytest.mark.timeout(1200)
def test_bad_data_is_blocked_and_the_champion_keeps_serving(loop_run):
    loop, records, _, _, runs, _, _ = loop_run
    good, bad, after = records[0], records[BAD_DAY], records[BAD_DAY + 1 :]
    assert good.data_layer == "ok" and bad.affected
    assert bad.data_layer != "ok", "the day without merchant_category must not get through the data layer"
    # Nothing retrained for the held day: its only retraining is the drifted day's, later.
    assert bad.promoted is None and not bad.triggers and not bad.retraining
    assert [run.tags["dagster/run_key"] for run in runs] == [f"retrain-{records[DRIFT_DAY].day}"]
    assert good.champion == bad.champion == "1"
    # feature_drift judges the day's rows in the marts: the held day has none, so no drift verdict to act on.
    assert bad.drift_share is None
    # The endpoint answered the bad day's transactions: the landing fault does not touch serving.
    assert bad.transactions > loop.spec.rows_per_day // 2 and 0 <= bad.served_recall <= 1
    assert bad.monitoring == "ok"
    assert "check_schema" in bad.data_layer
    # The held day blocks no later day: the drifted days went through the data layer.
    assert [r.data_layer for r in after] == ["ok"] * len(after)
    with duckdb.connect(str(loop.settings.duckdb_path), read_only=True) as con:
        status = con.execute(
            "select status, failed_checks from raw.load_log where source = 'transactions' and partition_date = ?",
            [bad.day],
        ).fetchall()
        reasons = con.execute(
            "select count(*), min(reason) from quarantine.rejected_rows where source = 'transactions' and partition_date = ?",
            [bad.day],
        ).fetchall()[0]
        loaded = con.execute(
            "select count(*) from marts.transactions_enriched where event_date = ?", [bad.day]
        ).fetchall()[0][0]
        (landed,) = con.execute(
            "select n_landed from raw.load_log where source = 'transactions' and partition_date = ?", [bad.day]
        ).fetchone()
    assert status == [("held", '["check_schema"]')] or (
        status and status[0][0] == "held" and "check_schema" in status[0][1]
    )
    # Nothing is lost: every landed row is kept in quarantine with its reason; none reached the marts.
    assert reasons[0] == landed > loop.spec.rows_per_day // 2
    assert "missing column(s) ['merchant_category']" in reasons[1]
    assert loaded == 0
