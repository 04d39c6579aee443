"""The CI workflows a team adopts: valid against their schemas, calling the commands the README and this
suite use, and the pipeline workflow's own script run end to end (so the files cannot rot)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
import yaml

from mlops_cli.common import rollout_run_config
from mlops_core.settings import REPO_ROOT
from mlops_core.warm_dbt import SOCKET_DIR_ENV  # the session's warm dbt server, stopped by the session

BIN = Path(sys.executable).parent
WORKFLOWS = sorted((REPO_ROOT / ".github" / "workflows").glob("*.yml"))
GITLAB = REPO_ROOT / ".gitlab-ci.yml"


def _validate(schema: str, *files: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [BIN / "check-jsonschema", "--builtin-schema", schema, *map(str, files)], capture_output=True, text=True
    )


def _run_steps(workflow: Path) -> list[str]:
    jobs = yaml.safe_load(workflow.read_text())["jobs"]
    return [step["run"].strip() for job in jobs.values() for step in job["steps"] if "run" in step]


def test_the_workflows_validate_against_their_schemas_and_a_broken_one_does_not(tmp_path):
    assert [w.name for w in WORKFLOWS] == ["ci.yml", "pipeline.yml"]
    assert _validate("vendor.github-workflows", *WORKFLOWS).returncode == 0
    assert _validate("vendor.gitlab-ci", GITLAB).returncode == 0
    # One key misspelt in a step ("run" as "runs"): the schema must refuse it, or the check above proves nothing.
    broken = tmp_path / "broken.yml"
    broken.write_text(
        (REPO_ROOT / ".github/workflows/ci.yml").read_text().replace("run: bash .ci/run", "runs: bash .ci/run")
    )
    refused = _validate("vendor.github-workflows", broken)
    assert refused.returncode != 0 and "runs" in refused.stdout + refused.stderr
    broken_gitlab = tmp_path / ".gitlab-ci.yml"
    broken_gitlab.write_text(
        GITLAB.read_text().replace("  script:\n    - bash .ci/run", "  scripts:\n    - bash .ci/run")
    )
    assert _validate("vendor.gitlab-ci", broken_gitlab).returncode != 0


def test_the_workflows_run_the_readmes_test_command_and_the_pipeline_script():
    ci, pipeline = (_run_steps(REPO_ROOT / ".github/workflows" / name) for name in ("ci.yml", "pipeline.yml"))
    assert ci == ["bash .ci/run"]
    assert pipeline == ["bash scripts/bootstrap.sh", "bash scripts/ci_pipeline.sh"]
    # .ci/run calls README's test command, and validates the workflows it is called from.
    ci_run = (REPO_ROOT / ".ci" / "run").read_text()
    readme = (REPO_ROOT / "README.md").read_text()
    assert "\nmake test\n" in ci_run and "make test" in readme
    assert "vendor.github-workflows .github/workflows/*.yml" in ci_run and "vendor.gitlab-ci .gitlab-ci.yml" in ci_run
    # GitLab runs the same commands.
    gitlab = yaml.safe_load(GITLAB.read_text())
    assert gitlab["tests"]["script"] == ci and gitlab["pipeline"]["script"] == pipeline


def test_the_ci_rollout_config_is_the_demos_replay_plan():
    """scripts/ci_rollout.yaml is what `mlops demo run` replays through shadow and canary; only who and why differ."""
    written = yaml.safe_load((REPO_ROOT / "scripts" / "ci_rollout.yaml").read_text())
    demo = rollout_run_config(replay_requests=300, canary_share=0.25)
    assert written["ops"]["champion_model"]["config"]["actor"] == "ci_pipeline"
    for stage in ("shadow_endpoint", "canary_endpoint"):
        assert written["ops"][stage] == demo["ops"][stage], stage
    assert set(written["ops"]) == set(demo["ops"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_the_pipeline_script_runs_data_layer_training_and_rollout_through_dagster_job_execute(tmp_path):
    """scripts/ci_pipeline.sh as the workflow runs it: the gates pass on the sample, the first model goes through
    staging, shadow and canary to champion on an ephemeral endpoint, which is stopped afterwards; the report is kept."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "DAGSTER_")) or k == SOCKET_DIR_ENV}
    port = _free_port()
    env |= {
        "MLOPS_HOME": str(tmp_path / "home"),
        "CI_ARTIFACTS_DIR": str(tmp_path / "artifacts"),
        "CI_SERVING_PORT": str(port),
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
    }
    run = subprocess.run(
        ["bash", "scripts/ci_pipeline.sh"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=1500
    )
    log = run.stdout + run.stderr
    pid_files = list((tmp_path / "home").rglob(f"*{port}*.pid"))
    try:
        assert run.returncode == 0, log[-4000:]
        assert "gate_onnx_parity' on 'candidate_evaluation' passed" in log
        assert "canary_healthy' on 'canary_endpoint' passed" in log
        assert (tmp_path / "artifacts" / "evaluation-latest.html").stat().st_size > 10_000
        with duckdb.connect(str(tmp_path / "home" / "warehouse.duckdb"), read_only=True) as con:
            history = con.execute("SELECT alias, to_version FROM registry.alias_history").fetchall()
        assert ("challenger", "1") in history and ("champion", "1") in history, history
        # The ephemeral endpoint is gone: nothing answers on its port any more.
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0
    finally:
        for pid_file in pid_files:  # never leave a server behind, even when an assertion failed
            try:
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGTERM)
            except (OSError, ValueError):
                pass
        shutil.rmtree(tmp_path / "home", ignore_errors=True)
