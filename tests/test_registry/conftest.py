import os
from pathlib import Path

import pytest
from mlflow import MlflowClient

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"

from mlops_core.registry import artifact_root_for, ensure_experiment, seed_sqlite_store, tracking_uri_for  # noqa: E402


@pytest.fixture
def mlflow_dir(tmp_path: Path, monkeypatch) -> Path:
    # A stray ./mlruns would land in tmp_path, where the tests can see it.
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "mlflow"
    path.mkdir()
    seed_sqlite_store(path / "mlflow.db")  # a copy of a migrated empty store: ms instead of 1-2 s
    return path


@pytest.fixture
def client(mlflow_dir: Path) -> MlflowClient:
    uri = tracking_uri_for(mlflow_dir)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


@pytest.fixture
def experiment_id(client: MlflowClient, mlflow_dir: Path) -> str:
    return ensure_experiment(client, "fraud", artifact_root_for(mlflow_dir))
