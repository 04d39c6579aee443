"""The code location loads and is wired as designed."""

import graphlib

import dagster as dg
import pytest

from mlops_assets.constants import DATA_LAYER_JOB, INGESTION, WAREHOUSE
from mlops_assets.definitions import defs
from mlops_assets.ingestion.summary import CHECK_NO_HELD_DAYS, SUMMARY_KEY
from mlops_core.contracts import SOURCES
from mlops_core.ingestion import CHECK_LANDING_UNCHANGED, gate_checks


def test_definitions_load():
    dg.Definitions.validate_loadable(defs)
    assert defs.resolve_job_def(DATA_LAYER_JOB) is not None


def test_raw_assets_carry_gates_and_held_days_fail_the_run_after_the_marts():
    """Each raw asset carries its data gates as checks, judged per day; they do not block (Dagster would
    block every day of a multi-day run for one held day). The run fails at daily_load_summary's blocking
    check_no_held_days, after the marts, naming the held days."""
    graph = defs.resolve_asset_graph()
    for name, contract in SOURCES.items():
        key = dg.AssetKey(f"raw_{name}")
        node = graph.get(key)
        assert node.group_name == INGESTION
        assert node.partitions_def is not None
        specs = {spec.name: spec for spec in defs.resolve_assets_def(key).check_specs}
        assert set(gate_checks(contract)) <= set(specs)
        assert not any(s.blocking for s in specs.values())
        assert CHECK_LANDING_UNCHANGED in specs
    summary = defs.resolve_assets_def(SUMMARY_KEY)
    (held_check,) = [s for s in summary.check_specs if s.name == CHECK_NO_HELD_DAYS]
    assert held_check.blocking
    assert dg.AssetKey(["marts", "transactions_enriched"]) in graph.get(SUMMARY_KEY).parent_keys


def test_dbt_sources_are_the_raw_assets_and_tests_are_checks():
    graph = defs.resolve_asset_graph()
    staging = dg.AssetKey(["staging", "stg_landing__transactions"])
    assert dg.AssetKey("raw_transactions") in graph.get(staging).parent_keys
    mart = dg.AssetKey(["marts", "transactions_enriched"])
    assert graph.get(mart).group_name == WAREHOUSE
    mart_checks = {k.name for k in graph.asset_check_keys if k.asset_key == mart}
    assert "unique_transactions_enriched_transaction_id" in mart_checks


def test_references_order_ingestion():
    graph = defs.resolve_asset_graph()
    assert dg.AssetKey("raw_accounts") in graph.get(dg.AssetKey("raw_transactions")).parent_keys
    assert dg.AssetKey("raw_transactions") in graph.get(dg.AssetKey("raw_labels")).parent_keys


def test_feature_assets_follow_the_marts_and_gate_with_blocking_checks():
    from mlops_assets.constants import FEATURE_JOB, FEATURES

    graph = defs.resolve_asset_graph()
    training = graph.get(dg.AssetKey("training_set"))
    assert training.group_name == FEATURES
    assert {
        dg.AssetKey(["marts", "transactions_enriched"]),
        dg.AssetKey(["marts", "label_events"]),
        dg.AssetKey(["marts", "account_history"]),
    } <= set(training.parent_keys)
    blocking = {
        spec.name
        for key in ("training_set", "online_features")
        for spec in defs.resolve_assets_def(dg.AssetKey(key)).check_specs
        if spec.blocking
    }
    assert blocking == {
        "check_point_in_time_correct",
        "check_one_row_per_labelled_transaction",
        "check_online_offline_parity",
    }
    online_checks = {k.name for k in graph.asset_check_keys if k.asset_key == dg.AssetKey("online_features")}
    assert "check_online_store_fresh" in online_checks
    assert defs.resolve_job_def(FEATURE_JOB) is not None


def test_training_chain_is_gated_and_promotion_is_separate():
    from mlops_assets.constants import PROMOTE_JOB, TRAINING, TRAINING_JOB
    from mlops_core.training.gates import GATES

    graph = defs.resolve_asset_graph()
    evaluation = dg.AssetKey("candidate_evaluation")
    assert graph.get(evaluation).group_name == TRAINING
    specs = defs.resolve_assets_def(evaluation).check_specs
    assert {s.name for s in specs if s.blocking} == set(GATES)
    assert evaluation in graph.get(dg.AssetKey("registered_challenger")).parent_keys
    training = {k.to_user_string() for k in defs.resolve_job_def(TRAINING_JOB).asset_layer.selected_asset_keys}
    assert {
        "training_set",
        "fraud_model_candidate",
        "baseline_model",
        "candidate_evaluation",
        "registered_challenger",
    } <= training
    assert "champion_model" not in training
    promote = {k.to_user_string() for k in defs.resolve_job_def(PROMOTE_JOB).asset_layer.selected_asset_keys}
    assert promote == {"champion_model", "production_endpoint", "model_alias_history"}


def test_rollout_is_staged_and_every_stage_is_gated():
    from mlops_assets.constants import DEPLOYMENT, ROLLBACK_JOB, ROLLOUT_JOB

    graph = defs.resolve_asset_graph()
    order = [
        "registered_challenger",
        "staging_endpoint",
        "shadow_endpoint",
        "canary_endpoint",
        "champion_model",
        "production_endpoint",
    ]
    for parent, child in zip(order, order[1:]):
        assert dg.AssetKey(parent) in graph.get(dg.AssetKey(child)).parent_keys, (parent, child)
    for stage in ("staging_endpoint", "shadow_endpoint", "canary_endpoint"):
        assert graph.get(dg.AssetKey(stage)).group_name == DEPLOYMENT
        specs = defs.resolve_assets_def(dg.AssetKey(stage)).check_specs
        assert specs and all(s.blocking for s in specs)
    rollout = {k.to_user_string() for k in defs.resolve_job_def(ROLLOUT_JOB).asset_layer.selected_asset_keys}
    assert set(order[1:]) <= rollout and "registered_challenger" not in rollout
    rollback = {k.to_user_string() for k in defs.resolve_job_def(ROLLBACK_JOB).asset_layer.selected_asset_keys}
    assert rollback == {"canary_rollback"}
    sensor = defs.resolve_sensor_def("canary_rollback_sensor")
    assert sensor.job_name == ROLLBACK_JOB and sensor.default_status == dg.DefaultSensorStatus.RUNNING


def test_promotion_reads_in_one_direction_through_the_groups():
    """Training ends at the gated evaluation; registration, rollout, promotion and the alias history are
    one deployment group, so the drift-to-champion path never goes back to a group it left. Between
    groups the graph has no cycle apart from the loop's own restart (retraining_request feeds no data)."""
    from mlops_assets.constants import DEPLOYMENT, FEATURES, TRAINING

    graph = defs.resolve_asset_graph()
    keys = [key for key in graph.get_all_asset_keys() if not graph.get(key).is_external]
    training = {key.to_user_string() for key in keys if graph.get(key).group_name == TRAINING}
    assert training == {"fraud_model_candidate", "baseline_model", "candidate_evaluation"}
    path = [
        "training_set",
        "fraud_model_candidate",
        "candidate_evaluation",
        "registered_challenger",
        "staging_endpoint",
        "shadow_endpoint",
        "canary_endpoint",
        "champion_model",
        "production_endpoint",
        "model_alias_history",
    ]
    order = [FEATURES, TRAINING, DEPLOYMENT]
    ranks = [order.index(graph.get(dg.AssetKey(name)).group_name) for name in path]
    assert ranks == sorted(ranks), list(zip(path, ranks))
    between_groups = graphlib.TopologicalSorter()
    for key in keys:
        for parent in graph.get(key).parent_keys - {dg.AssetKey("retraining_request")}:
            if graph.get(parent).group_name != graph.get(key).group_name:
                between_groups.add(graph.get(key).group_name, graph.get(parent).group_name)
    between_groups.prepare()  # raises CycleError naming the groups of a cycle


def test_batch_scoring_is_daily_partitioned():
    from mlops_assets.constants import SCORING, SCORING_JOB

    scores = defs.resolve_assets_def(dg.AssetKey("batch_scores"))
    assert scores.partitions_def is not None and scores.group_names_by_key[dg.AssetKey("batch_scores")] == SCORING
    assert defs.resolve_job_def(SCORING_JOB) is not None


def test_monitoring_assets_are_daily_and_in_their_job():
    from mlops_assets.constants import MONITORING, MONITORING_JOB

    daily = {
        "feature_drift",
        "prediction_drift",
        "label_volume",
        "live_performance",
        "concept_drift",
        "estimated_performance",
        "ab_verdict",
    }
    for name in daily:
        asset = defs.resolve_assets_def(dg.AssetKey(name))
        assert asset.partitions_def is not None and asset.group_names_by_key[dg.AssetKey(name)] == MONITORING
        # They follow their upstream through declarative automation.
        assert asset.automation_conditions_by_key[dg.AssetKey(name)] is not None
    selected = {k.to_user_string() for k in defs.resolve_job_def(MONITORING_JOB).asset_layer.selected_asset_keys}
    assert selected == daily | {"prediction_log"}
    assert defs.resolve_assets_def(dg.AssetKey("retraining_request")) is not None
    # Observed each hour by champion_watch_sensor, never built by a job.
    watch = defs.resolve_assets_def(dg.AssetKey("champion_hourly_watch"))
    assert not watch.is_executable and watch.group_names_by_key[dg.AssetKey("champion_hourly_watch")] == MONITORING
    assert defs.resolve_sensor_def("champion_watch_sensor").job_name == "retraining_job"


def test_retraining_runs_everything_downstream_of_a_trigger():
    from mlops_assets.constants import RETRAINING_JOB

    selected = {k.to_user_string() for k in defs.resolve_job_def(RETRAINING_JOB).asset_layer.selected_asset_keys}
    assert {
        "retraining_request",
        "training_set",
        "fraud_model_candidate",
        "candidate_evaluation",
        "registered_challenger",
        "staging_endpoint",
        "canary_endpoint",
        "champion_model",
        "production_endpoint",
    } <= selected
    assert not selected & {"raw_transactions", "feature_drift", "label_volume"}
    sensor = defs.resolve_sensor_def("retraining_sensor")
    assert sensor.job_name == RETRAINING_JOB and sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert defs.resolve_schedule_def("weekly_retraining").job_name == RETRAINING_JOB


def test_executor_is_chosen_by_environment(monkeypatch):
    from resources.environment import build_executor

    monkeypatch.delenv("MLOPS_EXECUTOR", raising=False)
    assert build_executor() is dg.in_process_executor
    monkeypatch.setenv("MLOPS_EXECUTOR", "k8s")
    assert build_executor().name == "k8s_job_executor"
    monkeypatch.setenv("MLOPS_EXECUTOR", "multiprocess")
    with pytest.raises(ValueError, match="MLOPS_EXECUTOR"):
        build_executor()


def test_every_job_carries_the_queue_concurrency_tags():
    for job in defs.resolve_all_job_defs():
        if job.name.startswith("__"):
            continue
        assert job.tags.get("mlops/warehouse") == "duckdb", job.name
    assert defs.resolve_job_def("retraining_job").tags["mlops/retraining"] == "true"
