"""The production instance profiles and the MLflow launch script, checked without servers.

The pipeline itself runs on deploy/dagster.production-local.yaml against real Postgres in
test_pipeline_on_postgres.py; these tests keep the two profiles in step, hold every credential
to the environment, and validate the Kubernetes run launcher's settings against dagster-k8s.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
import yaml
from dagster._config import process_config
from dagster._core.instance.config import dagster_instance_config
from dagster_k8s import K8sRunLauncher
from production_world import PRODUCTION_LOCAL_YAML, PRODUCTION_YAML, RUN_SERVER_SH

PG_ENV = {
    "DAGSTER_PG_HOST": "postgres.mlops.svc",
    "DAGSTER_PG_PORT": "5432",
    "DAGSTER_PG_USER": "dagster",
    "DAGSTER_PG_PASSWORD": "from-a-secret",
    "DAGSTER_PG_DB": "dagster",
}
K8S_ENV = {"MLOPS_K8S_NAMESPACE": "mlops-runs", "MLOPS_CODE_IMAGE": "registry.example/mlops-code:1.2.3"}


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_the_local_production_profile_is_production_without_the_kubernetes_launcher():
    production, local = _load(PRODUCTION_YAML), _load(PRODUCTION_LOCAL_YAML)
    assert production["run_launcher"]["class"] == "K8sRunLauncher"
    assert "run_launcher" not in local
    del production["run_launcher"]
    assert local == production


@pytest.mark.parametrize("path", [PRODUCTION_YAML, PRODUCTION_LOCAL_YAML], ids=lambda p: p.name)
def test_credentials_come_only_from_the_environment(path: Path):
    profile = _load(path)
    assert profile["telemetry"] == {"enabled": False}
    db = profile["storage"]["postgres"]["postgres_db"]
    assert {key: value for key, value in db.items() if key != "scheme"} == {
        "hostname": {"env": "DAGSTER_PG_HOST"},
        "port": {"env": "DAGSTER_PG_PORT"},
        "username": {"env": "DAGSTER_PG_USER"},
        "password": {"env": "DAGSTER_PG_PASSWORD"},
        "db_name": {"env": "DAGSTER_PG_DB"},
    }
    assert "postgres_url" not in profile["storage"]["postgres"]  # a URL would carry the password inline
    launcher = profile.get("run_launcher", {}).get("config", {})
    # env_vars name variables copied from the launching process; KEY=VALUE would write a value here
    assert all("=" not in name for name in launcher.get("env_vars", []))
    assert "PASSWORD" not in path.read_text().replace("DAGSTER_PG_PASSWORD", "")


@pytest.mark.parametrize("path", [PRODUCTION_YAML, PRODUCTION_LOCAL_YAML], ids=lambda p: p.name)
def test_the_profile_validates_against_dagsters_instance_schema(path: Path, tmp_path: Path, monkeypatch):
    for key, value in {**PG_ENV, **K8S_ENV}.items():
        monkeypatch.setenv(key, value)
    (tmp_path / "dagster.yaml").write_text(path.read_text())
    config, _instance_class = dagster_instance_config(str(tmp_path))
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    runs = config["concurrency"]["runs"]
    assert runs["max_concurrent_runs"] >= 1
    limits = {(limit["key"], str(limit.get("value"))): limit["limit"] for limit in runs["tag_concurrency_limits"]}
    assert limits[("mlops/warehouse", "duckdb")] == 1
    assert limits[("mlops/retraining", "None")] == 1
    assert config.get("run_retries", {}).get("enabled", False) is False


def test_the_kubernetes_run_launcher_takes_namespace_image_and_secrets_from_the_environment(
    tmp_path: Path, monkeypatch
):
    for key, value in {**PG_ENV, **K8S_ENV}.items():
        monkeypatch.setenv(key, value)
    config = _load(PRODUCTION_YAML)["run_launcher"]["config"]
    processed = process_config(K8sRunLauncher.config_type(), config)
    assert processed.success, processed.errors
    # No cluster here: a kubeconfig that names one is enough for the client to be built.
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "test",
                "clusters": [{"name": "test", "cluster": {"server": "https://127.0.0.1:6443"}}],
                "users": [{"name": "test", "user": {"token": "not-a-secret"}}],
                "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
            }
        )
    )
    launcher = K8sRunLauncher(**{**processed.value, "load_incluster_config": False, "kubeconfig_file": str(kubeconfig)})
    assert launcher.job_namespace == "mlops-runs"
    assert launcher.job_image == "registry.example/mlops-code:1.2.3"
    assert launcher.env_secrets == ["mlops-secrets"]
    assert launcher.postgres_password_secret == "mlops-postgres"
    assert launcher.instance_config_map == "dagster-instance"
    assert "from-a-secret" not in repr(processed.value)


def _fake_mlflow(tmp_path: Path) -> Path:
    """Stands in for the mlflow executable: records its arguments and the backend URI it was given."""
    fake = tmp_path / "mlflow"
    fake.write_text(
        '#!/usr/bin/env bash\nprintf "%s\\n" "$@" > "$RECORD.args"\nprintf "%s" "$MLFLOW_BACKEND_STORE_URI" > "$RECORD.uri"\n'
        'printf "%s" "${MLFLOW_SERVER_ENABLE_JOB_EXECUTION-unset}" > "$RECORD.jobs"\n'
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    return fake


def _run_server(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    base = {"PATH": os.environ["PATH"], "MLFLOW_BIN": str(_fake_mlflow(tmp_path)), "RECORD": str(tmp_path / "record")}
    return subprocess.run(["bash", str(RUN_SERVER_SH)], env={**base, **env}, capture_output=True, text=True, timeout=30)


def test_run_server_binds_loopback_and_keeps_the_password_off_the_command_line(tmp_path: Path):
    done = _run_server(
        tmp_path,
        MLOPS_MLFLOW_PG_HOST="db.internal",
        MLOPS_MLFLOW_PG_USER="mlflow",
        MLOPS_MLFLOW_PG_PASSWORD="p@ss:w/rd",
        MLOPS_MLFLOW_ARTIFACTS_DESTINATION="s3://bucket/mlflow",
    )
    assert done.returncode == 0, done.stderr
    args = (tmp_path / "record.args").read_text().split("\n")
    assert args[args.index("--host") + 1] == "127.0.0.1"
    assert args[args.index("--port") + 1] == "5000"
    assert args[args.index("--artifacts-destination") + 1] == "s3://bucket/mlflow"
    assert "--serve-artifacts" in args
    assert not any("p@ss" in a or "p%40ss" in a for a in args)
    assert (
        tmp_path / "record.uri"
    ).read_text() == "postgresql+psycopg2://mlflow:p%40ss%3Aw%2Frd@db.internal:5432/mlflow"
    # No GenAI job runner beside the registry (8 processes, about 25 s of CPU per start), unless asked for.
    assert (tmp_path / "record.jobs").read_text() == "false"
    asked = _run_server(
        tmp_path,
        MLOPS_MLFLOW_BACKEND_STORE_URI="postgresql://u:p@h/db",
        MLOPS_MLFLOW_ARTIFACTS_DESTINATION=str(tmp_path),
        MLFLOW_SERVER_ENABLE_JOB_EXECUTION="true",
    )
    assert asked.returncode == 0 and (tmp_path / "record.jobs").read_text() == "true"


def test_run_server_refuses_to_start_without_a_backend_or_an_artifact_root(tmp_path: Path):
    no_artifacts = _run_server(tmp_path, MLOPS_MLFLOW_BACKEND_STORE_URI="postgresql://u:p@h/db")
    assert no_artifacts.returncode == 2 and "MLOPS_MLFLOW_ARTIFACTS_DESTINATION" in no_artifacts.stderr
    no_backend = _run_server(tmp_path, MLOPS_MLFLOW_ARTIFACTS_DESTINATION=str(tmp_path))
    assert no_backend.returncode == 2 and "MLOPS_MLFLOW_PG_HOST" in no_backend.stderr
    assert not (tmp_path / "record.args").exists()
    # a bare postgresql:// URI is given the psycopg2 driver SQLAlchemy 2.1 no longer picks by default
    done = _run_server(
        tmp_path,
        MLOPS_MLFLOW_BACKEND_STORE_URI="postgresql://u:p@h/db",
        MLOPS_MLFLOW_ARTIFACTS_DESTINATION=str(tmp_path),
    )
    assert done.returncode == 0 and (tmp_path / "record.uri").read_text() == "postgresql+psycopg2://u:p@h/db"
