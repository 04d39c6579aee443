import os
import shutil
from pathlib import Path

import pytest
from mlflow import MlflowClient

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"

from mlops_core.registry import artifact_root_for, ensure_experiment, tracking_uri_for  # noqa: E402


@pytest.fixture(scope="session")
def empty_mlflow_db(tmp_path_factory) -> Path:
    """A migrated, empty sqlite store: creating one takes about 2 s, copying it a few ms."""
    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    uri = f"sqlite:///{path}"
    MlflowClient(tracking_uri=uri, registry_uri=uri).search_experiments()
    return path


@pytest.fixture
def mlflow_dir(tmp_path: Path, monkeypatch, empty_mlflow_db: Path) -> Path:
    # A stray ./mlruns would land in tmp_path, where the tests can see it.
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "mlflow"
    path.mkdir()
    shutil.copy(empty_mlflow_db, path / "mlflow.db")
    return path


@pytest.fixture
def client(mlflow_dir: Path) -> MlflowClient:
    uri = tracking_uri_for(mlflow_dir)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


@pytest.fixture
def experiment_id(client: MlflowClient, mlflow_dir: Path) -> str:
    return ensure_experiment(client, "fraud", artifact_root_for(mlflow_dir))
