"""Fraud's declaration is what its pipeline runs with: an edited defs.yaml changes the gates, the rollout plan, the
canary sensor's rules, the retraining policy and the schedule at the next load of the code location, and a bad edit
stops the load with an error naming the file and the field (never a silent fallback to defaults)."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from mlops_core.settings import REPO_ROOT
from mlops_core.warm_dbt import SOCKET_DIR_ENV  # the session's warm dbt server, stopped by the session

PROBE = """
import json
from mlops_assets.definitions import defs
from mlops_assets.deployment.rollout import CanaryConfig, ShadowConfig, StagingConfig
from mlops_assets.training.evaluation import GateConfig
from sensors.canary import RULES
from sensors.retraining import weekly_retraining
policy = defs.resources["retraining_policy"]
print(json.dumps({
    "min_auc_pr": GateConfig().min_auc_pr,
    "thresholds_min_recall": GateConfig().thresholds().min_recall,
    "canary_share": CanaryConfig().share,
    "canary_max_score_psi": CanaryConfig().rules().max_score_psi,
    "sensor_max_score_psi": RULES.max_score_psi,
    "staging_slo": StagingConfig().slo_p99_ms,
    "shadow_agreement": ShadowConfig().min_decision_agreement,
    "shadow_min_requests": ShadowConfig().min_requests,
    "new_labels": policy.new_labels,
    "drift_share": policy.drift_share,
    "cron": weekly_retraining.cron_schedule,
}))
"""


def probe(projects, home, extra_env=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "DAGSTER_")) or k == SOCKET_DIR_ENV}
    env.update(MLOPS_HOME=str(home), MLOPS_PROJECTS_DIR=str(projects), **(extra_env or {}))
    return subprocess.run(
        [sys.executable, "-c", PROBE], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600
    )


@pytest.fixture
def projects(tmp_path):
    copy = tmp_path / "projects"
    shutil.copytree(REPO_ROOT / "projects", copy)
    return copy


def edit(projects, change):
    path = projects / "fraud" / "defs.yaml"
    document = yaml.safe_load(path.read_text())
    change(document["attributes"])
    path.write_text(yaml.safe_dump(document, sort_keys=False))


@pytest.mark.slow
def test_an_edited_declaration_is_what_the_code_location_runs_with(projects, tmp_path):
    def change(a):
        # Off the defaults by a little, so a value read from anywhere else fails the comparison.
        a["gates"]["min_auc_pr"] = 0.2002
        a["gates"]["min_recall"] = 0.3003
        a["rollout"]["canary"]["share"] = 0.125
        a["rollout"]["canary"]["rules"]["max_score_psi"] = 0.2501
        a["rollout"]["staging"]["slo_p99_ms"] = 40.0
        a["rollout"]["shadow"]["min_decision_agreement"] = 0.905
        a["rollout"]["shadow"]["min_requests"] = 120
        a["monitoring"]["new_labels"] = 2001
        a["monitoring"]["drift_share"] = 0.45
        a["monitoring"]["retrain_schedule"] = "0 4 * * 2"

    edit(projects, change)
    result = probe(projects, tmp_path / "home", {"MLOPS_RETRAIN_DRIFT_SHARE": "0.6"})
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen == {
        "min_auc_pr": 0.2002,
        "thresholds_min_recall": 0.3003,
        "canary_share": 0.125,
        "canary_max_score_psi": 0.2501,
        "sensor_max_score_psi": 0.2501,
        "staging_slo": 40.0,
        "shadow_agreement": 0.905,
        "shadow_min_requests": 120,
        "new_labels": 2001,
        "drift_share": 0.6,  # the environment still overrides the declaration
        "cron": "0 4 * * 2",
    }


@pytest.mark.slow
def test_a_bad_edit_stops_the_code_location_naming_file_and_field(projects, tmp_path):
    edit(projects, lambda a: a["gates"].update(min_auc_pr="high"))
    result = probe(projects, tmp_path / "home")
    assert result.returncode != 0
    assert "fraud/defs.yaml" in result.stderr and "gates.min_auc_pr" in result.stderr and "'high'" in result.stderr
