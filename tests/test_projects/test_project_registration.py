"""A project's registration refuses a model whose ONNX graph is not in the artifact store, as fraud's does:
`mlops serve` loads nothing else, so such a version would register, pass, and then fail on its first request."""

import dataclasses

import dagster as dg
import mlflow
import numpy as np
import onnx
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mlops_assets.deployment.registry import require_onnx
from mlops_core.registry import tracking_uri_for
from mlops_core.training.candidates import TrainedModel
from mlops_core.training.onnx_export import to_onnx


@pytest.fixture
def logged(tmp_path, monkeypatch):
    """A real sqlite MLflow store with one run that logged the same model twice: once as its ONNX graph, once as
    a pickled scikit-learn model only."""
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    uri = tracking_uri_for(tmp_path / "mlflow")
    (tmp_path / "mlflow").mkdir()
    mlflow.set_tracking_uri(uri)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 3)).astype(np.float32)
    fitted = make_pipeline(StandardScaler(), LogisticRegression()).fit(x, x[:, 0] > 0)
    graph = to_onnx(fitted, 3)
    # An sqlite store puts artifacts under ./mlruns unless told otherwise: keep them in tmp_path.
    experiment = mlflow.create_experiment("require-onnx", artifact_location=(tmp_path / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=experiment) as run:
        as_onnx = mlflow.onnx.log_model(onnx.load_from_string(graph), name="model")
        as_pickle = mlflow.sklearn.log_model(fitted, name="pickled")
    assert mlflow.get_run(run.info.run_id).info.artifact_uri.startswith((tmp_path / "artifacts").as_uri())
    trained = TrainedModel(
        kind="logistic_regression",
        onnx=graph,
        feature_columns=("a", "b", "c"),
        threshold=0.5,
        params={},
        validation_metrics={},
        onnx_max_difference=0.0,
        feature_importance={},
        data_version="v",
        run_id=run.info.run_id,
        model_uri=as_onnx.model_uri,
    )
    yield mlflow.MlflowClient(uri), trained, as_pickle.model_uri
    mlflow.set_tracking_uri(None)


def test_registration_requires_the_onnx_graph_in_the_artifact_store(logged):
    client, trained, pickled_uri = logged
    require_onnx(client, trained)  # the ONNX flavour: registrable
    with pytest.raises(dg.Failure, match=r"holds no \.onnx file") as refused:
        require_onnx(client, dataclasses.replace(trained, model_uri=pickled_uri))
    assert pickled_uri in str(refused.value)
    with pytest.raises(dg.Failure, match=f"MLflow run {trained.run_id} logged no model"):
        require_onnx(client, dataclasses.replace(trained, model_uri=None))


def test_every_declared_projects_registration_checks_the_onnx_graph():
    """The project graph's registered_model calls the same check as fraud's (read from its source, so a
    refactor that drops the call fails here)."""
    import inspect

    from mlops_assets.projects import snapshot_graph

    source = inspect.getsource(snapshot_graph)
    body = source[source.index("def registered_model(") :]
    body = body[: body.index("model_registry.register(")]
    assert "require_onnx(client, candidate_model)" in body
