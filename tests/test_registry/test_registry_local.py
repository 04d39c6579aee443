import json
from pathlib import Path

import duckdb
import pytest
from mlflow import MlflowClient
from registry_helpers import log_model_run

from mlops_core import registry
from mlops_core.registry import (
    CHALLENGER,
    CHAMPION,
    MODEL_NAME,
    AliasChange,
    RegistryError,
    VersionNotFound,
    alias_version,
    artifact_root_for,
    ensure_experiment,
    ensure_history_table,
    history,
    move_alias,
    promote_challenger,
    register_version,
    remove_alias,
    rollback_champion,
    tracking_uri_for,
)


@pytest.fixture
def versions(client: MlflowClient, experiment_id: str, tmp_path: Path) -> tuple[str, str]:
    v1 = register_version(client, log_model_run(client, experiment_id, tmp_path, "a"), "model")
    v2 = register_version(client, log_model_run(client, experiment_id, tmp_path, "b"), "model", tags={"k": "v"})
    return v1, v2


@pytest.fixture
def hcon(tmp_path: Path):
    connection = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    ensure_history_table(connection)
    yield connection
    connection.close()


def test_uris_and_experiment_location(mlflow_dir: Path, client: MlflowClient, experiment_id: str, tmp_path: Path):
    assert tracking_uri_for(mlflow_dir) == f"sqlite:///{mlflow_dir.resolve()}/mlflow.db"
    assert artifact_root_for(mlflow_dir) == (mlflow_dir.resolve() / "artifacts").as_uri()
    assert client.get_experiment(experiment_id).artifact_location == artifact_root_for(mlflow_dir)
    assert ensure_experiment(client, "fraud", "file:///elsewhere") == experiment_id
    run_id = log_model_run(client, experiment_id, tmp_path, "a")
    assert (mlflow_dir / "artifacts" / run_id / "artifacts" / "model" / "model.onnx").is_file()
    assert not (tmp_path / "mlruns").exists()


def test_register_two_versions(client: MlflowClient, versions: tuple[str, str]):
    v1, v2 = versions
    assert (v1, v2) == ("1", "2")
    mv = client.get_model_version(MODEL_NAME, v2)
    assert mv.status == "READY"
    assert mv.source.endswith("/model")
    assert mv.tags["k"] == "v"
    assert alias_version(client, CHAMPION) is None


def test_challenger_promote_records_history(client, hcon, versions):
    v1, v2 = versions
    first = move_alias(client, hcon, CHAMPION, v1, "initial", {"auc": 0.90})
    assert first == AliasChange(
        first.changed_at, MODEL_NAME, CHAMPION, None, v1, "initial", "dagster", {"auc": 0.90}, first.run_id
    )
    assert first.run_id == client.get_model_version(MODEL_NAME, v1).run_id
    move_alias(client, hcon, CHALLENGER, v2, "trained", {"auc": 0.93}, actor="ci")
    promoted = promote_challenger(client, hcon, "beats champion", {"auc": 0.93, "auc_champion": 0.90})

    assert (promoted.from_version, promoted.to_version) == (v1, v2)
    assert alias_version(client, CHAMPION) == v2
    # the sqlite store returns the version as an int here, the layer always returns str
    assert str(client.get_model_version_by_alias(MODEL_NAME, CHAMPION).version) == v2

    rows = history(hcon)
    assert list(rows.columns) == [
        "changed_at",
        "model_name",
        "alias",
        "from_version",
        "to_version",
        "reason",
        "actor",
        "metrics",
        "run_id",
    ]
    assert rows[["alias", "from_version", "to_version", "reason", "actor"]].values.tolist() == [
        [CHAMPION, None, v1, "initial", "dagster"],
        [CHALLENGER, None, v2, "trained", "ci"],
        [CHAMPION, v1, v2, "beats champion", "dagster"],
    ]
    assert json.loads(rows["metrics"].iloc[2]) == {"auc": 0.93, "auc_champion": 0.90}
    assert rows["changed_at"].is_monotonic_increasing
    assert history(hcon, model_name="other").empty


def test_rollback_restores_previous_champion(client, hcon, versions):
    v1, v2 = versions
    move_alias(client, hcon, CHAMPION, v1, "initial", {})
    move_alias(client, hcon, CHALLENGER, v2, "trained", {})
    promote_challenger(client, hcon, "better", {"auc": 0.95})

    change = rollback_champion(client, hcon, "precision dropped in production")

    assert (change.from_version, change.to_version) == (v2, v1)
    assert alias_version(client, CHAMPION) == v1
    last = history(hcon).iloc[-1]
    assert (last["alias"], last["from_version"], last["to_version"]) == (CHAMPION, v2, v1)
    assert last["reason"] == "precision dropped in production"


def test_promote_without_challenger_names_alias(client, hcon, versions):
    move_alias(client, hcon, CHAMPION, versions[0], "initial", {})
    with pytest.raises(RegistryError, match="challenger"):
        promote_challenger(client, hcon, "x", {})
    assert len(history(hcon)) == 1


def test_promote_when_model_missing(client, hcon):
    with pytest.raises(RegistryError, match="challenger"):
        promote_challenger(client, hcon, "x", {})


def test_rollback_without_previous_champion(client, hcon, versions):
    with pytest.raises(RegistryError, match="no previous 'champion'"):
        rollback_champion(client, hcon, "x")
    move_alias(client, hcon, CHAMPION, versions[0], "first ever", {})
    with pytest.raises(RegistryError, match="no previous 'champion'"):
        rollback_champion(client, hcon, "x")
    assert alias_version(client, CHAMPION) == versions[0]


def test_rollback_refuses_when_mlflow_and_history_disagree(client, hcon, versions):
    v1, v2 = versions
    move_alias(client, hcon, CHAMPION, v1, "initial", {})
    move_alias(client, hcon, CHAMPION, v2, "next", {})
    client.set_registered_model_alias(MODEL_NAME, CHAMPION, v1)  # changed behind the layer's back
    with pytest.raises(RegistryError, match="history says 2"):
        rollback_champion(client, hcon, "x")


def test_unknown_version_is_named(client, hcon, versions):
    with pytest.raises(VersionNotFound, match="'fraud_detector' has no version '99'"):
        move_alias(client, hcon, CHAMPION, "99", "typo", {})
    assert alias_version(client, CHAMPION) is None
    assert history(hcon).empty


def test_rollback_to_deleted_version_is_named(client, hcon, versions):
    v1, v2 = versions
    move_alias(client, hcon, CHAMPION, v1, "initial", {})
    move_alias(client, hcon, CHAMPION, v2, "next", {})
    client.delete_model_version(MODEL_NAME, v1)
    with pytest.raises(VersionNotFound, match=f"no version '{v1}'"):
        rollback_champion(client, hcon, "x")
    assert alias_version(client, CHAMPION) == v2


def test_remove_alias_is_recorded(client, hcon, versions):
    move_alias(client, hcon, CHALLENGER, versions[1], "trained", {})
    change = remove_alias(client, hcon, CHALLENGER, "rejected by evaluation", {"auc": 0.5})
    assert (change.from_version, change.to_version, change.run_id) == (versions[1], None, None)
    assert alias_version(client, CHALLENGER) is None
    last = history(hcon).iloc[-1]
    assert last["to_version"] is None and last["from_version"] == versions[1]
    with pytest.raises(RegistryError, match="'challenger' of 'fraud_detector' is not set"):
        remove_alias(client, hcon, CHALLENGER, "again")


def test_history_survives_reopening(tmp_path, client, versions):
    path = str(tmp_path / "reopen.duckdb")
    with duckdb.connect(path) as first:
        move_alias(client, first, CHAMPION, versions[0], "initial", {"auc": 0.9})
        move_alias(client, first, CHAMPION, versions[1], "better", {"auc": 0.95})
    with duckdb.connect(path) as second:
        rows = history(second)
        assert rows["to_version"].tolist() == list(versions)
        assert json.loads(rows["metrics"].iloc[1]) == {"auc": 0.95}
        assert rollback_champion(client, second, "reopened").to_version == versions[0]


def test_failed_history_write_restores_previous_alias(client, hcon, versions, monkeypatch):
    v1, v2 = versions
    move_alias(client, hcon, CHAMPION, v1, "initial", {})

    def broken(con, change):
        raise duckdb.IOException("disk full")

    monkeypatch.setattr(registry, "_append_history", broken)
    with pytest.raises(duckdb.IOException, match="disk full"):
        move_alias(client, hcon, CHAMPION, v2, "better", {})
    assert alias_version(client, CHAMPION) == v1
    with pytest.raises(duckdb.IOException):
        move_alias(client, hcon, CHALLENGER, v2, "new", {})
    assert alias_version(client, CHALLENGER) is None
    assert len(history(hcon)) == 1


def test_closed_connection_restores_previous_alias(tmp_path, client, versions):
    con = duckdb.connect(str(tmp_path / "closed.duckdb"))
    move_alias(client, con, CHAMPION, versions[0], "initial", {})
    con.close()
    with pytest.raises(duckdb.ConnectionException):
        move_alias(client, con, CHAMPION, versions[1], "better", {})
    assert alias_version(client, CHAMPION) == versions[0]
    with duckdb.connect(str(tmp_path / "closed.duckdb")) as reopened:
        assert len(history(reopened)) == 1
