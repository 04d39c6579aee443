import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import duckdb
import pytest
from registry_helpers import free_port, log_model_run
from mlflow import MlflowClient

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

MLFLOW_BIN = Path(sys.executable).parent / "mlflow"
READY_TIMEOUT_S = 90


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=15)


@pytest.fixture
def mlflow_server(tmp_path: Path):
    """A real `mlflow server` on 127.0.0.1; yields (uri, data dir, seconds until /health answered)."""
    port = free_port()
    data = tmp_path / "server"
    data.mkdir()
    log_path = tmp_path / "mlflow-server.log"
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    cmd = [
        str(MLFLOW_BIN), "server",
        "--backend-store-uri", f"sqlite:///{data}/mlflow.db",
        "--default-artifact-root", str(data / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]
    started = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() - started > READY_TIMEOUT_S:
                pytest.fail(f"mlflow server not healthy after {READY_TIMEOUT_S} s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        ready_s = time.monotonic() - started
        yield f"http://127.0.0.1:{port}", data, ready_s
    finally:
        _stop(proc)


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
    started = time.monotonic()
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as con:
        ensure_history_table(con)
        with pytest.raises(RegistryUnavailable, match=uri):
            register_version(client, "0" * 32, "model")
        with pytest.raises(RegistryUnavailable, match=uri):
            move_alias(client, con, CHAMPION, "1", "initial", {})
        with pytest.raises(RegistryUnavailable, match=uri):
            alias_version(client, CHAMPION)
        with pytest.raises(RegistryUnavailable, match=uri):
            ensure_experiment(client, "fraud", "file:///nowhere")
        assert history(con).empty
    assert time.monotonic() - started < 20
