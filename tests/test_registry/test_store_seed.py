"""A new embedded MLflow store is a copy of an empty migrated one (mlops_core.registry.seed_sqlite_store)."""

import os
import sqlite3
import threading
from pathlib import Path

import pytest
from mlflow import MlflowClient

from mlops_core.registry import artifact_root_for, ensure_experiment, seed_sqlite_store, tracking_uri_for


@pytest.fixture
def cache(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "mlops-platform"


def _client(mlflow_dir: Path) -> MlflowClient:
    uri = tracking_uri_for(mlflow_dir)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _schema(db: Path) -> dict[str, object]:
    """Tables with their columns and types, index names, and the migration the store is at. (Not the SQL text: a
    table MLflow rebuilt in a migration lists a column elsewhere when the same process migrated a store before.)"""
    with sqlite3.connect(db) as con:
        names = con.execute("select type, name from sqlite_master where name not like 'sqlite_%'").fetchall()
        schema: dict[str, object] = {
            f"{kind} {name}": sorted(tuple(c[1:3]) for c in con.execute(f"pragma table_info('{name}')"))
            for kind, name in names
        }
        schema["revision"] = con.execute("select version_num from alembic_version").fetchall()
    return schema


def test_a_seeded_store_is_mlflows_own_and_its_default_experiment_is_its_own(tmp_path, cache, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first, second = tmp_path / "first" / "mlflow", tmp_path / "second" / "mlflow"
    seed_sqlite_store(first / "mlflow.db")
    (template,) = cache.glob("mlflow-*-empty-store.db")
    seed_sqlite_store(second / "mlflow.db")
    assert list(cache.iterdir()) == [template]  # built once, copied twice
    # The template keeps no experiment: each store's default one is made on first use, under its own folder,
    # never the folder the template was built in.
    with sqlite3.connect(template) as con:
        assert con.execute("select count(*) from experiments").fetchone() == (0,)
    # As MLflow makes a store itself: the same tables and the same default experiment, placed where MLflow places
    # it for this store (./mlruns for a bare client), never where the template was built.
    (tmp_path / "unseeded").mkdir()
    (made_by_mlflow,) = _client(tmp_path / "unseeded").search_experiments()
    tables = _schema(tmp_path / "unseeded" / "mlflow.db")
    assert len(tables) > 20
    for mlflow_dir in (first, second):
        assert _schema(mlflow_dir / "mlflow.db") == tables
        client = _client(mlflow_dir)
        (default,) = client.search_experiments()
        assert (default.experiment_id, default.name) == ("0", "Default")
        assert (
            default.artifact_location == made_by_mlflow.artifact_location and "cache" not in default.artifact_location
        )
        # A full store: tracking and registry work on it.
        experiment = ensure_experiment(client, "fraud", artifact_root_for(mlflow_dir))
        run = client.create_run(experiment)
        client.log_metric(run.info.run_id, "auc_pr", 0.51)
        client.create_registered_model("fraud_detector")
        assert client.get_run(run.info.run_id).data.metrics == {"auc_pr": 0.51}
    assert not list(tmp_path.glob("**/*.tmp"))


def test_an_existing_store_is_never_replaced(tmp_path, cache):
    mlflow_dir = tmp_path / "mlflow"
    seed_sqlite_store(mlflow_dir / "mlflow.db")
    client = _client(mlflow_dir)
    kept = ensure_experiment(client, "fraud", artifact_root_for(mlflow_dir))
    before = (mlflow_dir / "mlflow.db").stat().st_ino
    seed_sqlite_store(mlflow_dir / "mlflow.db")
    assert (mlflow_dir / "mlflow.db").stat().st_ino == before
    assert [e.experiment_id for e in _client(mlflow_dir).search_experiments(filter_string="name = 'fraud'")] == [kept]


def test_stores_seeded_at_once_by_many_threads_end_as_one_store(tmp_path, cache):
    """Processes of one home (a run's steps, the endpoint) may open a new store together: exactly one copy
    lands, and every caller returns with the store in place."""
    seed_sqlite_store(tmp_path / "warm" / "mlflow.db")  # the template exists: the race is on the copy
    target = tmp_path / "shared" / "mlflow.db"
    errors: list[BaseException] = []

    def seed() -> None:
        try:
            seed_sqlite_store(target)
            assert target.exists()
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=seed) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(os.listdir(target.parent)) == ["mlflow.db"]
    assert _client(target.parent).search_experiments()[0].name == "Default"


def test_without_a_writable_cache_mlflow_creates_the_store_itself(tmp_path, monkeypatch):
    """A read-only home (a container's) must never fail training: the store is MLflow's own, only slower."""
    not_a_folder = tmp_path / "cache-is-a-file"
    not_a_folder.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(not_a_folder))
    mlflow_dir = tmp_path / "mlflow"
    seed_sqlite_store(mlflow_dir / "mlflow.db")
    assert mlflow_dir.is_dir() and not (mlflow_dir / "mlflow.db").exists()
    client = _client(mlflow_dir)
    experiment = ensure_experiment(client, "fraud", artifact_root_for(mlflow_dir))
    assert [e.name for e in client.search_experiments()] == ["fraud", "Default"] and experiment
