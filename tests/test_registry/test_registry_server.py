import time
from pathlib import Path

import duckdb
import pytest
from mlflow import MlflowClient
from registry_helpers import free_port, log_model_run

from mlops_core import registry as registry_module
from mlops_core.registry import (
    CHALLENGER,
    CHAMPION,
    RegistryUnavailable,
    alias_version,
    artifact_root_for,
    ensure_experiment,
    ensure_history_table,
    history,
    move_alias,
    promote_challenger,
    register_version,
    rollback_champion,
)


@pytest.mark.slow
def test_against_real_mlflow_server(mlflow_server, tmp_path: Path):
    uri, data, ready_s = mlflow_server
    print(f"mlflow server healthy after {ready_s:.1f} s")
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment_id = ensure_experiment(client, "fraud", artifact_root_for(data))
    v1 = register_version(client, log_model_run(client, experiment_id, tmp_path, "a"), "model")
    v2 = register_version(client, log_model_run(client, experiment_id, tmp_path, "b"), "model")

    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as con:
        ensure_history_table(con)
        move_alias(client, con, CHAMPION, v1, "initial", {"auc": 0.9})
        move_alias(client, con, CHALLENGER, v2, "trained", {"auc": 0.94})
        promoted = promote_challenger(client, con, "beats champion", {"auc": 0.94})
        assert (promoted.from_version, promoted.to_version) == (v1, v2)
        assert alias_version(client, CHAMPION) == v2
        assert rollback_champion(client, con, "incident").to_version == v1
        assert alias_version(client, CHAMPION) == v1
        assert history(con)["to_version"].tolist() == [v1, v2, v2, v1]
    assert list((data / "artifacts").rglob("model.onnx"))


def test_unreachable_server_raises_registry_unavailable(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    uri = f"http://127.0.0.1:{free_port()}"  # bound then released: nothing listens there
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    gave_up = rf"{uri}.*gave up after 3 attempts"
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as con:
        ensure_history_table(con)
        # One call with the real pauses (1 s, then 2 s): bounded, not MLflow's minutes of backoff.
        started = time.monotonic()
        with pytest.raises(RegistryUnavailable, match=gave_up):
            register_version(client, "0" * 32, "model")
        assert 2.9 < time.monotonic() - started < 10
        # The others with the same three attempts and short pauses (9 s of sleeping saved).
        monkeypatch.setattr(registry_module, "RETRY_DELAYS_S", (0.01, 0.02))
        with pytest.raises(RegistryUnavailable, match=gave_up):
            move_alias(client, con, CHAMPION, "1", "initial", {})
        with pytest.raises(RegistryUnavailable, match=gave_up):
            alias_version(client, CHAMPION)
        with pytest.raises(RegistryUnavailable, match=gave_up):
            ensure_experiment(client, "fraud", "file:///nowhere")
        assert history(con).empty
