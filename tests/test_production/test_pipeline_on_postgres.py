"""The pipeline on the production storage configuration, against real servers on loopback.

data_layer_job and training_job ran in process on the instance that
deploy/dagster.production-local.yaml describes (Postgres storage, queued coordinator), with
MLflow behind `mlflow server` on Postgres and the Redis online store. The assertions read
Postgres, the MLflow server and Redis directly, not the run results alone.
"""

from __future__ import annotations

import dagster as dg
import pytest
from mlflow import MlflowClient
from production_world import DAYS, MLFLOW_DB

from mlops_core import registry
from mlops_core.features.stores import RedisOnlineStore

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]


def _events(result: dg.ExecuteInProcessResult, event_type: str) -> list:
    return [e for e in result.all_events if e.event_type_value == event_type]


def test_both_jobs_succeed_on_the_production_instance(production):
    print({k: round(v, 1) for k, v in production.timings.items()})
    for name, result in production.results.items():
        assert result.success, name
    with dg.DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        assert type(instance.run_launcher).__name__ == "DefaultRunLauncher"
        queue = instance.get_concurrency_config().run_queue_config
        assert queue.max_concurrent_runs == 8
        assert {"key": "mlops/retraining", "limit": 1} in queue.tag_concurrency_limits
        assert {"key": "mlops/warehouse", "value": "duckdb", "limit": 1} in queue.tag_concurrency_limits


def test_runs_materializations_and_check_results_are_rows_in_postgres(production):
    with production.dagster_db() as connection, connection.cursor() as cursor:
        for job, result in production.results.items():
            cursor.execute("SELECT pipeline_name, status FROM runs WHERE run_id = %s", [result.run_id])
            assert cursor.fetchall() == [(job, "SUCCESS")]

            materialized = [
                e.asset_key.to_user_string() + "|" + (e.partition or "")
                for e in _events(result, "ASSET_MATERIALIZATION")
            ]
            cursor.execute(
                "SELECT asset_key, partition FROM event_logs WHERE run_id = %s AND dagster_event_type = 'ASSET_MATERIALIZATION'",
                [result.run_id],
            )
            stored = [
                dg.AssetKey.from_db_string(key).to_user_string() + "|" + (partition or "")
                for key, partition in cursor.fetchall()
            ]
            assert materialized and sorted(stored) == sorted(materialized), job
            assert len(set(stored)) == len(stored), f"{job}: a materialization recorded twice"

            evaluated = _events(result, "ASSET_CHECK_EVALUATION")
            cursor.execute(
                "SELECT asset_key, check_name, execution_status FROM asset_check_executions WHERE run_id = %s",
                [result.run_id],
            )
            checks = cursor.fetchall()
            assert evaluated and len(checks) == len(evaluated), job
            expected = {
                (e.event_specific_data.asset_key, e.event_specific_data.check_name): e.event_specific_data.passed
                for e in evaluated
            }
            assert {
                (dg.AssetKey.from_db_string(key), name): status == "SUCCEEDED" for key, name, status in checks
            } == expected
            print(f"\n{job}: {len(stored)} materializations and {len(checks)} check results in Postgres")

    data_layer = production.results["data_layer_job"]
    raw_partitions = {e.partition for e in _events(data_layer, "ASSET_MATERIALIZATION") if e.partition}
    assert len(raw_partitions) == DAYS
    training_checks = {
        e.event_specific_data.check_name for e in _events(production.results["training_job"], "ASSET_CHECK_EVALUATION")
    }
    assert {"gate_onnx_parity", "check_online_offline_parity"} <= training_checks


def test_nothing_went_to_sqlite(production):
    dagster_home = production.settings.dagster_home
    stray = [p for p in dagster_home.rglob("*") if p.suffix in (".db", ".sqlite")]
    assert stray == []
    # the embedded stores of the local profile stay unused too
    assert not production.settings.online_store_path.exists()
    assert not (production.settings.mlflow_dir / "mlflow.db").exists()


def test_training_registered_the_challenger_through_the_mlflow_server(production):
    client = MlflowClient(tracking_uri=production.mlflow.uri, registry_uri=production.mlflow.uri)
    version = client.get_model_version_by_alias(registry.MODEL_NAME, registry.CHALLENGER)
    assert version.version == "1"
    run = client.get_run(version.run_id)
    assert run.data.metrics["test_auc_pr"] > 0
    # the server keeps it in its Postgres backend store, the artifacts under its artifact root
    with production.postgres.connect(MLFLOW_DB) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT name, alias, version FROM registered_model_aliases")
        assert cursor.fetchall() == [(registry.MODEL_NAME, registry.CHALLENGER, 1)]
    assert list(production.mlflow.artifacts.rglob("model.onnx"))


def test_the_online_store_is_the_redis_server(production):
    (event,) = [
        e
        for e in production.results["training_job"].get_asset_materialization_events()
        if e.asset_key == dg.AssetKey("online_features")
    ]
    meta = {k: v.value for k, v in event.materialization.metadata.items()}
    assert meta["backend"] == "redis"
    store = RedisOnlineStore(production.redis.url)
    try:
        status = store.status()
    finally:
        store.close()
    assert status.accounts == meta["accounts"] > 0
    assert status.events == meta["events"] > 0
