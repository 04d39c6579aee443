"""Fault: the artifact disk is full while a model is logged.

The MLflow artifact root is a real 1 MiB tmpfs, filled to the last byte (mount needs root
or CAP_SYS_ADMIN: it skips locally without it and fails under CI). The real training and
registration assets run in one Dagster run; the run must fail saying the disk is full, and
nothing of the half-written model may become current.
"""

import errno
import os
import subprocess

import dagster as dg
import mlflow
import pytest
from dagster_duckdb import DuckDBResource
from reliability_results import record

from mlops_assets.deployment.registry import registered_challenger
from mlops_assets.training.models import log_to_mlflow
from mlops_core import registry
from mlops_core.settings import Settings
from mlops_core.training.candidates import TrainedModel, fit
from mlops_core.training.models import XGBoostParams
from resources.registry import ModelRegistry

pytestmark = pytest.mark.slow


@pytest.fixture
def small_disk(tmp_path):
    """A mounted 1 MiB tmpfs; unmounted afterwards."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if done.returncode != 0:
        reason = f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode}): needs root or CAP_SYS_ADMIN"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(path) -> int:
    """Write until the filesystem refuses; returns the bytes written."""
    written = 0
    with open(path / "filler", "wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
                written += 65536
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return written


def test_full_artifact_disk_fails_the_run_clearly_and_keeps_the_current_model(small_disk, tmp_path, monkeypatch):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "test_training"))
    from synthetic_training_set import make_training_frame

    settings = Settings.from_env({"MLOPS_HOME": str(tmp_path / "home"), "MLOPS_MLFLOW_DIR": str(tmp_path / "mlflow")})
    settings.ensure_dirs()
    settings.mlflow_dir.mkdir(parents=True)
    (settings.mlflow_dir / "artifacts").symlink_to(small_disk, target_is_directory=True)
    for key, value in {
        "MLOPS_HOME": settings.home,
        "MLOPS_DUCKDB_PATH": settings.duckdb_path,
        "MLOPS_MLFLOW_DIR": settings.mlflow_dir,
        "DAGSTER_HOME": settings.dagster_home,
        "MLOPS_MLFLOW_TRACKING_URI": "",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }.items():
        monkeypatch.setenv(key, str(value))
    frame = make_training_frame(n_rows=2000, seed=4)
    trained = fit(frame, "xgboost", "v-test", xgboost_params=XGBoostParams(n_estimators=20))

    @dg.asset(name="fraud_model_candidate")
    def candidate(model_registry: ModelRegistry) -> TrainedModel:
        return log_to_mlflow(model_registry, trained, frame)

    def run():
        return dg.materialize(
            [candidate, registered_challenger],
            resources={
                "model_registry": ModelRegistry.for_settings(settings),
                "warehouse": DuckDBResource(database=str(settings.duckdb_path)),
            },
            instance=dg.DagsterInstance.ephemeral(),
            raise_on_error=False,
        )

    assert run().success  # version 1 becomes challenger while the disk has room
    client = mlflow.MlflowClient(registry.tracking_uri_for(settings.mlflow_dir))
    with DuckDBResource(database=str(settings.duckdb_path)).get_connection() as con:
        registry.move_alias(client, con, registry.CHAMPION, "1", "test: first champion", {})
        history_before = len(registry.history(con))
    filled = fill(small_disk)

    result = run()

    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failure.step_key == "fraud_model_candidate"
    error = failure.event_specific_data.error.to_string()
    assert "No space left on device" in error or "ENOSPC" in error, error[-2000:]
    assert "registered_challenger" not in {
        e.asset_key.to_user_string() for e in result.get_asset_materialization_events()
    }
    versions = [str(v.version) for v in client.search_model_versions(f"name = '{registry.MODEL_NAME}'")]
    assert versions == ["1"]
    assert (
        registry.alias_version(client, registry.CHAMPION) == "1"
        and registry.alias_version(client, registry.CHALLENGER) == "1"
    )
    with DuckDBResource(database=str(settings.duckdb_path)).get_connection() as con:
        assert len(registry.history(con)) == history_before
    # The half-logged run is marked failed, so nothing reads it as a finished candidate.
    runs = client.search_runs(
        [client.get_experiment_by_name("fraud_detection").experiment_id], order_by=["attributes.start_time DESC"]
    )
    candidate_runs = [r for r in runs if r.data.tags.get("model_kind") == "xgboost"]
    assert candidate_runs[0].info.status == "FAILED", [(r.info.run_id, r.info.status) for r in runs]
    first_line = next(line for line in error.splitlines() if "No space left" in line or "ENOSPC" in line)
    record(
        "faults",
        "artifact disk full",
        what=f"MLflow artifact root on a 1 MiB tmpfs filled to the last byte ({filled // 1024} KiB), then the training and registration "
        "assets run",
        expected="the run fails at the step that writes, naming the full disk; no new version; champion and challenger unchanged",
        observed=f"fraud_model_candidate failed: `{first_line.strip()[:120]}`; registered_challenger did not run; versions {versions}, "
        "champion 1, challenger 1, history unchanged, MLflow run FAILED",
        test="test_fault_disk_full.py::test_full_artifact_disk_fails_the_run_clearly_and_keeps_the_current_model",
    )
