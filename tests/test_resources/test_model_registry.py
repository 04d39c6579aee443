"""The ModelRegistry resource against a real MLflow sqlite store in tmp_path (no mocks): champion and
challenger, registration, promotion and history; one parent run per Dagster run with nested model runs."""

import dagster as dg
import duckdb
import mlflow
import pytest

from mlops_core import registry
from mlops_core.settings import Settings
from resources.registry import DAGSTER_RUN_TAG, ModelRegistry


@pytest.fixture
def settings(tmp_path, monkeypatch) -> Settings:
    monkeypatch.chdir(tmp_path)  # a stray ./mlruns would land here, where the tests see it
    monkeypatch.delenv("MLOPS_MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    previous = mlflow.get_tracking_uri()
    yield Settings.from_env({"MLOPS_HOME": str(tmp_path / "home")})
    mlflow.set_tracking_uri(previous)


def _model_run(client, experiment_id: str, tmp_path, name: str) -> str:
    path = tmp_path / f"{name}.onnx"
    path.write_bytes(b"not a real graph: the registry only needs an artifact")
    run = client.create_run(experiment_id, run_name=name)
    client.log_artifact(run.info.run_id, str(path), artifact_path="model")
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def test_the_registry_resource_answers_champion_and_challenger(settings, tmp_path):
    resource = ModelRegistry.for_settings(settings)
    assert resource.tracking_uri == registry.tracking_uri_for(settings.mlflow_dir)
    with dg.build_resources({"model_registry": resource}) as built:
        model_registry: ModelRegistry = built.model_registry
        # setup_for_execution made the store and the experiment, with artifacts under MLOPS_MLFLOW_DIR
        experiment = model_registry.client().get_experiment_by_name(model_registry.experiment_name)
        assert experiment.artifact_location == registry.artifact_root_for(settings.mlflow_dir)
        assert model_registry.champion() is None and model_registry.challenger() is None

        first = _model_run(model_registry.client(), experiment.experiment_id, tmp_path, "first")
        second = _model_run(model_registry.client(), experiment.experiment_id, tmp_path, "second")
        with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as con:
            model_registry.register(
                con, registry.CHALLENGER, first, "model", "passed the gates", {"auc": 0.5}, tags={"threshold": "0.4"}
            )
            assert model_registry.challenger().version == "1" and model_registry.champion() is None
            model_registry.promote_challenger(con, "canary passed", {"auc": 0.5})
            model_registry.register(con, registry.CHALLENGER, second, "model", "passed the gates", {"auc": 0.6})
            champion, challenger = model_registry.champion(), model_registry.challenger()
            history = model_registry.history(con)

    assert (champion.version, champion.run_id, champion.tags["threshold"]) == ("1", first, "0.4")
    assert (challenger.version, challenger.run_id) == ("2", second)
    assert model_registry.champion(registry.MODEL_NAME).version == "1"
    moves = list(zip(history["alias"], history["from_version"], history["to_version"]))
    assert moves == [(registry.CHALLENGER, None, "1"), (registry.CHAMPION, None, "1"), (registry.CHALLENGER, "1", "2")]
    assert not (tmp_path / "mlruns").exists()


def test_model_runs_nest_under_one_parent_run_per_dagster_run_which_ends_failed_when_a_step_fails(settings):
    @dg.asset
    def good_model(model_registry: ModelRegistry) -> None:
        with model_registry.model_run("good-candidate"):
            mlflow.log_metric("auc", 0.7)

    @dg.asset(deps=[good_model])
    def bad_model(model_registry: ModelRegistry) -> None:
        with model_registry.model_run("bad-candidate"):
            raise RuntimeError("the disk is full")

    resources = {"model_registry": ModelRegistry.for_settings(settings)}
    passed = dg.materialize([good_model], resources=resources, instance=dg.DagsterInstance.ephemeral())
    failed = dg.materialize(
        [good_model, bad_model], resources=resources, instance=dg.DagsterInstance.ephemeral(), raise_on_error=False
    )
    assert passed.success and not failed.success
    assert mlflow.active_run() is None

    client = resources["model_registry"].client()
    experiment = client.get_experiment_by_name(resources["model_registry"].experiment_name)
    runs = client.search_runs([experiment.experiment_id])
    for result, statuses in (
        (passed, {"good-candidate": "FINISHED"}),
        (failed, {"good-candidate": "FINISHED", "bad-candidate": "FAILED"}),
    ):
        (parent,) = [r for r in runs if r.data.tags.get(DAGSTER_RUN_TAG) == result.run_id]
        assert parent.data.tags["platform"] == "mlops"
        assert parent.info.status == ("FINISHED" if result.success else "FAILED")
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert {r.info.run_name: r.info.status for r in children} == statuses
