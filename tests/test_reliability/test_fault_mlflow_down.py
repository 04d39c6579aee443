"""Fault: the MLflow server goes away mid-training, between logging the model and registering it.

A real `mlflow server` (tests/conftest.py) sits behind a proxy that can make it unreachable
(connection refused) or refuse one kind of request. The model is trained and logged by the
real training code in a Dagster run; then the server becomes unreachable and the real
registered_challenger asset runs. The registry layer retries, then fails cleanly; once the
server is back, there is no version without its alias, and the aliases and their history
are as before.
"""

import logging
import time
from pathlib import Path

import dagster as dg
import mlflow
import pytest
from dagster_duckdb import DuckDBResource
from fault_proxy import FaultProxy
from reliability_results import record

from mlops_assets.deployment.registry import registered_challenger
from mlops_assets.training.models import log_to_mlflow
from mlops_core import registry
from mlops_core.settings import Settings
from mlops_core.training.candidates import TrainedModel, fit
from mlops_core.training.models import XGBoostParams
from resources.registry import ModelRegistry

pytestmark = pytest.mark.slow


def _frame():
    import sys

    sys.path.insert(0, str(Path(__file__).parents[1] / "test_training"))
    from synthetic_training_set import make_training_frame

    return make_training_frame(n_rows=2000, seed=3)


@pytest.fixture
def world(mlflow_server, tmp_path, monkeypatch):
    """A home whose MLflow is the real server behind the proxy; version 1 is champion."""
    uri, _, _ = mlflow_server
    host, port = uri.removeprefix("http://").split(":")
    proxy = FaultProxy(host, int(port))
    proxy.up()
    settings = Settings.from_env({"MLOPS_HOME": str(tmp_path / "home")})
    settings.ensure_dirs()
    for key, value in {
        "MLOPS_HOME": settings.home,
        "MLOPS_DATA_DIR": settings.data_dir,
        "MLOPS_DUCKDB_PATH": settings.duckdb_path,
        "DAGSTER_HOME": settings.dagster_home,
        "MLOPS_MLFLOW_DIR": settings.mlflow_dir,
        "MLOPS_REPORTS_DIR": settings.reports_dir,
        "MLOPS_MLFLOW_TRACKING_URI": proxy.url,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        # MLflow's own HTTP retries (7, minutes of backoff) off: the registry's bounded retries decide.
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    }.items():
        monkeypatch.setenv(key, str(value))
    frame = _frame()
    trained = fit(frame, "xgboost", "v-test", xgboost_params=XGBoostParams(n_estimators=20))
    client = mlflow.MlflowClient(proxy.url)
    previous_uri = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(proxy.url)
    registry.ensure_experiment(client, "fraud_detection", None)
    mlflow.set_experiment("fraud_detection")
    with mlflow.start_run():
        first = log_to_mlflow(ModelRegistry(tracking_uri=proxy.url), trained, frame)
    with DuckDBResource(database=str(settings.duckdb_path)).get_connection() as con:
        registry.register_as(
            client,
            con,
            registry.CHAMPION,
            first.run_id,
            "model",
            "test: first champion",
            {},
            tags={"threshold": "0.5"},
            model_uri=first.model_uri,
        )
    try:
        yield settings, proxy, client, trained, frame
    finally:
        while mlflow.active_run() is not None:  # a run whose end could not reach the server
            mlflow.end_run("FAILED")
        mlflow.set_tracking_uri(previous_uri)
        proxy.down()


def _state(client, settings):
    versions = sorted(str(v.version) for v in client.search_model_versions(f"name = '{registry.MODEL_NAME}'"))
    # Through the resource: DuckDB refuses a second connection to the file with other settings.
    with DuckDBResource(database=str(settings.duckdb_path)).get_connection() as con:
        history = len(registry.history(con))
    return {
        "versions": versions,
        "champion": registry.alias_version(client, registry.CHAMPION),
        "challenger": registry.alias_version(client, registry.CHALLENGER),
        "history_rows": history,
    }


def _run(settings, trained, frame, outage):
    """One Dagster run: the candidate is trained and logged, then `outage()` happens, then registration."""

    @dg.asset(name="fraud_model_candidate")
    def candidate(model_registry: ModelRegistry) -> TrainedModel:
        logged = log_to_mlflow(model_registry, trained, frame)
        outage()
        return logged

    return dg.materialize(
        [candidate, registered_challenger],
        resources={
            "model_registry": ModelRegistry.for_settings(settings),
            "warehouse": DuckDBResource(database=str(settings.duckdb_path)),
        },
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def _failure(result) -> str:
    (event,) = [
        e for e in result.all_events if e.event_type_value == "STEP_FAILURE" and e.step_key == "registered_challenger"
    ]
    return event.event_specific_data.error.to_string()


def test_mlflow_down_mid_training_is_retried_then_fails_cleanly_without_a_half_registered_model(world, caplog):
    """Two outages against one server (starting one takes ~30 s): unreachable before registration,
    then failing between creating the version and setting its alias."""
    settings, proxy, client, trained, frame = world
    before = _state(client, settings)
    caplog.set_level(logging.WARNING, logger="mlops_core.registry")
    started = time.monotonic()
    result = _run(settings, trained, frame, outage=proxy.down)
    elapsed = time.monotonic() - started
    proxy.up()
    after = _state(client, settings)

    assert not result.success
    error = _failure(result)
    assert "RegistryUnavailable" in error and proxy.url in error and "gave up after 3 attempts" in error
    retries = [r.getMessage() for r in caplog.records if "retrying in" in r.getMessage()]
    assert len(retries) == 2, retries
    assert elapsed < 60
    assert after == before, "no version may appear and no alias or history row may move"
    assert before["champion"] == "1" and before["versions"] == ["1"]
    _record_unreachable(retries, elapsed, after)
    _mid_registration(settings, proxy, client, trained, frame, caplog)
    _lost_answer(settings, proxy, client, trained, frame, caplog)


def _record_unreachable(retries, elapsed, after):
    record(
        "faults",
        "MLflow server down mid-training",
        what="real `mlflow server` behind a proxy; the candidate is trained and logged in a Dagster run, then the server is made "
        "unreachable (connection refused) before registered_challenger runs",
        expected="registration retried, then a clean failure naming the server; no new version, aliases and history unchanged",
        observed=f"{len(retries) + 1} attempts ({len(retries)} logged retries), run failed with RegistryUnavailable after {elapsed:.1f} s; "
        f"versions {after['versions']}, champion {after['champion']}, challenger {after['challenger']}, history rows {after['history_rows']}",
        test="test_fault_mlflow_down.py::test_mlflow_down_mid_training_is_retried_then_fails_cleanly_without_a_half_registered_model",
    )


def _mid_registration(settings, proxy, client, trained, frame, caplog):
    """The version is created, then every alias request fails: the new version is deleted again."""
    caplog.clear()
    before = _state(client, settings)
    caplog.set_level(logging.WARNING, logger="mlops_core.registry")
    result = _run(settings, trained, frame, outage=lambda: proxy.fail("POST", "/registered-models/alias"))
    proxy.fail(None)
    after = _state(client, settings)

    assert not result.success
    error = _failure(result)
    assert "RegistryUnavailable" in error and "set alias 'challenger'" in error
    assert len(proxy.refused) == 3, proxy.refused  # the alias call, retried twice
    deleted = [r.getMessage() for r in caplog.records if "deleted again" in r.getMessage()]
    assert len(deleted) == 1 and "version 2 deleted again" in deleted[0]
    assert after == before
    # Every version left has its alias, its threshold tag and its ONNX graph.
    for version in after["versions"]:
        details = client.get_model_version(registry.MODEL_NAME, version)
        assert version in (after["champion"], after["challenger"]) and "threshold" in details.tags
        assert any(f.endswith(".onnx") for f in registry.artifact_files(client, details.source))
    record(
        "faults",
        "MLflow server failing mid-registration",
        what="as above, but the server answers 503 to every alias request: the version is created, the challenger alias cannot be set",
        expected="alias call retried, then the new version deleted again; no version without its alias, tags and ONNX graph",
        observed=f"{len(proxy.refused)} alias attempts refused, version 2 deleted again, run failed with RegistryUnavailable; "
        f"versions {after['versions']} (each with alias, threshold tag, .onnx), champion {after['champion']}",
        test="test_fault_mlflow_down.py::test_mlflow_down_mid_training_is_retried_then_fails_cleanly_without_a_half_registered_model",
    )


def _lost_answer(settings, proxy, client, trained, frame, caplog):
    """The server creates the version but its answer is lost: the retry finds that version
    instead of creating a second one, and registration completes."""
    caplog.clear()
    before = _state(client, settings)
    result = _run(settings, trained, frame, outage=lambda: proxy.lose_answer("POST", "/model-versions/create"))
    after = _state(client, settings)

    assert result.success
    assert len(proxy.lost) == 1
    assert any("retrying in" in r.getMessage() and "register" in r.getMessage() for r in caplog.records)
    new = sorted(set(after["versions"]) - set(before["versions"]))
    assert len(new) == 1, after["versions"]
    assert after["challenger"] == new[0] and after["champion"] == before["champion"]
    assert after["history_rows"] == before["history_rows"] + 1
    record(
        "faults",
        "MLflow answer lost mid-registration",
        what="as above, but the server creates the version and its answer is dropped (connection closed)",
        expected="the retry finds the version the lost attempt created: exactly one new version, with the challenger alias",
        observed=f"1 answer lost, 1 logged retry; versions {before['versions']} -> {after['versions']}, challenger {after['challenger']}, "
        f"champion {after['champion']}, one history row added",
        test="test_fault_mlflow_down.py::test_mlflow_down_mid_training_is_retried_then_fails_cleanly_without_a_half_registered_model",
    )
