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
