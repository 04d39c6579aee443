"""The command line as users and CI run it: `mlops demo generate` then `dagster job execute`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from mlops_core.settings import REPO_ROOT

BIN = Path(sys.executable).parent


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "DAGSTER_"))}
    env["MLOPS_HOME"] = str(tmp_path / "home")
    env["DAGSTER_HOME"] = str(tmp_path / "home" / "dagster_home")
    return env


def test_generate_rejects_an_unknown_scenario(tmp_path):
    out = subprocess.run(
        [BIN / "mlops", "demo", "generate", "--start", "2026-01-01", "--days", "2", "--scenario", "nope"],
        env=_env(tmp_path), capture_output=True, text=True,
    )
    assert out.returncode == 2
    assert "nope" in out.stderr and "baseline" in out.stderr


@pytest.mark.slow
def test_dagster_job_execute_runs_the_data_layer_on_a_generated_sample(tmp_path):
    env = _env(tmp_path)
    subprocess.run([BIN / "mlops", "prepare"], env=env, check=True, capture_output=True)
    gen = subprocess.run(
        [BIN / "mlops", "demo", "generate", "--start", "2026-02-01", "--days", "4", "--rows-per-day", "200", "--seed", "3"],
        env=env, check=True, capture_output=True, text=True,
    )
    assert "Wrote 12 files" in gen.stdout
    tags = {"dagster/asset_partition_range_start": "2026-02-01", "dagster/asset_partition_range_end": "2026-02-04"}
    run = subprocess.run(
        [BIN / "dagster", "job", "execute", "-m", "mlops_assets.definitions", "-j", "data_layer_job", "--tags", json.dumps(tags)],
        env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "RUN_SUCCESS" in run.stderr + run.stdout
    with duckdb.connect(str(tmp_path / "home" / "warehouse.duckdb"), read_only=True) as con:
        days = con.execute("SELECT count(*) FROM raw.load_log WHERE source = 'transactions' AND status = 'accepted'").fetchone()
        enriched = con.execute("SELECT count(*) FROM marts.transactions_enriched").fetchone()
        raw = con.execute("SELECT count(*) FROM raw.transactions").fetchone()
    assert days == (4,)
    assert enriched == raw and raw[0] > 0
    # The feature store builds from the same warehouse in its own job. Four days hold no
    # matured legitimate labels, so a one-day maturity keeps the training set non-empty.
    config = tmp_path / "features.yaml"
    config.write_text("ops:\n  training_set:\n    config:\n      label_maturity_days: 1\n")
    run = subprocess.run(
        [BIN / "dagster", "job", "execute", "-m", "mlops_assets.definitions", "-j", "feature_job", "-c", str(config)],
        env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "check_online_offline_parity' on 'online_features' passed" in run.stderr + run.stdout
    with duckdb.connect(str(tmp_path / "home" / "warehouse.duckdb"), read_only=True) as con:
        rows, leaked = con.execute(
            "SELECT count(*), count(*) FILTER (labeled_at > TIMESTAMP '2026-02-05') FROM features.training_set"
        ).fetchone()
    assert rows > 0 and leaked == 0
    assert (tmp_path / "home" / "data" / "online_store.sqlite").exists()


@pytest.mark.slow
def test_dagster_job_execute_runs_ingest_features_training_and_registration(tmp_path):
    """The chain CI runs: data_layer_job, then training_job, each through `dagster job execute`."""
    env = _env(tmp_path)
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    subprocess.run([BIN / "mlops", "prepare"], env=env, check=True, capture_output=True)
    # 75 days: legitimate labels mature after 45, so a month of transactions is labelled.
    subprocess.run(
        [BIN / "mlops", "demo", "generate", "--start", "2026-01-01", "--days", "75", "--rows-per-day", "1500", "--seed", "5"],
        env=env, check=True, capture_output=True,
    )
    tags = {"dagster/asset_partition_range_start": "2026-01-01", "dagster/asset_partition_range_end": "2026-03-16"}
    for job, extra in (("data_layer_job", ["--tags", json.dumps(tags)]), ("training_job", [])):
        run = subprocess.run(
            [BIN / "dagster", "job", "execute", "-m", "mlops_assets.definitions", "-j", job, *extra],
            env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
        )
        assert run.returncode == 0, f"{job}: {run.stderr[-3000:]}"
    log = run.stderr + run.stdout
    assert "gate_onnx_parity' on 'candidate_evaluation' passed" in log
    with duckdb.connect(str(tmp_path / "home" / "warehouse.duckdb"), read_only=True) as con:
        history = con.execute("SELECT alias, to_version FROM registry.alias_history").fetchall()
    assert history == [("challenger", "1")]
    assert (tmp_path / "home" / "reports" / "evaluation-latest.html").stat().st_size > 10_000


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_demo_run_ends_with_a_live_endpoint(tmp_path):
    """The README's main command, end to end: data, features, training, staged rollout, a live endpoint."""
    import httpx

    env = _env(tmp_path)
    port = _free_port()
    try:
        run = subprocess.run(
            [BIN / "mlops", "demo", "run", "--days", "60", "--rows-per-day", "600", "--port", str(port)],
            env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
        )
        assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
        assert f"Live endpoint:     http://127.0.0.1:{port}" in run.stdout
        ready = httpx.get(f"http://127.0.0.1:{port}/ready", timeout=10).json()
        assert ready["ready"] is True and ready["champion_version"] == "1"
        with duckdb.connect(str(tmp_path / "home" / "warehouse.duckdb"), read_only=True) as con:
            body = con.execute(
                "select transaction_id, account_id, merchant_id, merchant_category, amount, currency, channel, country, "
                "strftime(event_timestamp, '%Y-%m-%dT%H:%M:%S') as event_timestamp from marts.transactions_enriched limit 1"
            ).df().to_dict(orient="records")[0]
        answer = httpx.post(f"http://127.0.0.1:{port}/v1/predict", json=body, timeout=10).json()
        assert answer["transaction_id"] == body["transaction_id"] and answer["model_version"] == "1"
        assert 0.0 <= answer["fraud_probability"] <= 1.0
    finally:
        stop = subprocess.run([BIN / "mlops", "serve", "--stop", "--port", str(port)], env=env, capture_output=True, text=True)
    assert "stopped production server" in stop.stdout
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
