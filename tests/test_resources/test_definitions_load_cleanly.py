"""Loading the code location has no side effects: no directory, file, token or environment variable.

State is made by `mlops prepare` or by a resource's setup when a run starts. Checked in a fresh process,
so nothing an earlier test imported or exported hides a write.
"""

import json
import os
import subprocess
import sys

from mlops_assets.transform.project import ensure_manifest
from mlops_core.settings import REPO_ROOT

# Libraries that write the environment when imported, and are not ours to judge: pandera sets SPARK_LOCAL_IP
# and PYARROW_IGNORE_TIMEZONE (pandera/external_config.py), mlflow drops an inherited telemetry session id.
# Imported before the snapshot, so the comparison sees only what the platform's own modules do.
PROBE = """
import json, os
import mlflow, pandera.pandas
before = dict(os.environ)
import mlops_assets.definitions
after = dict(os.environ)
print("PROBE" + json.dumps({
    "added": sorted(set(after) - set(before)),
    "removed": sorted(set(before) - set(after)),
    "changed": sorted(k for k in set(before) & set(after) if before[k] != after[k]),
    "resources": sorted(mlops_assets.definitions.defs.resources),
}))
"""

STATE_VARIABLES = (
    "MLOPS_HOME",
    "MLOPS_DATA_DIR",
    "MLOPS_DUCKDB_PATH",
    "MLOPS_REPORTS_DIR",
    "MLOPS_MLFLOW_DIR",
    "MLOPS_MLFLOW_TRACKING_URI",
    "MLOPS_ADMIN_TOKEN",
    "DAGSTER_HOME",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
    "MLFLOW_DISABLE_TELEMETRY",
)


def test_importing_the_definitions_creates_nothing_and_leaves_the_environment_alone(tmp_path):
    ensure_manifest()  # a stale dbt manifest is parsed at import (into the repo's target/): not what this tests
    home = tmp_path / "missing" / "home"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in STATE_VARIABLES}
    env |= {"MLOPS_HOME": str(home), "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    probe = json.loads(done.stdout.split("PROBE", 1)[1])
    assert {"added": probe["added"], "removed": probe["removed"], "changed": probe["changed"]} == {
        "added": [],
        "removed": [],
        "changed": [],
    }
    assert not (tmp_path / "missing").exists(), sorted(str(p) for p in (tmp_path / "missing").rglob("*"))
    assert list(cwd.iterdir()) == []  # no ./mlruns, no sqlite file beside the process
    assert {"settings", "model_registry"} <= set(probe["resources"])


def test_the_settings_resource_carries_every_setting_unchanged(tmp_path):
    import dataclasses
    import datetime as dt

    from mlops_core.settings import Settings
    from resources.settings import SettingsResource

    # every field away from its default, so a field the resource dropped (its default back) fails
    base = Settings.from_env({"MLOPS_HOME": str(tmp_path / "home")})
    settings = dataclasses.replace(
        base,
        data_dir=tmp_path / "data",
        duckdb_path=tmp_path / "w.duckdb",
        dagster_home=tmp_path / "dagster",
        reports_dir=tmp_path / "reports",
        mlflow_dir=tmp_path / "mlflow",
        online_store="redis",
        label_maturity_days=46,
        training_lookback_days=36,
        train_on_early_frauds=True,
        online_allowed_lateness_days=8,
        clock="2026-07-02",
        partitions_start=dt.date(2026, 4, 3),
        serving_url="http://127.0.0.1:8123",
        releases_dir=tmp_path / "gitops",
        releases_git_remote="/srv/gitops.git",
        releases_git_branch="release-bot",
        dbt_launcher="cold",
        dbt_file_log_level="debug",
    )
    changed = {f.name for f in dataclasses.fields(Settings) if getattr(settings, f.name) != getattr(base, f.name)}
    assert changed == {f.name for f in dataclasses.fields(Settings)} - {"home"}
    assert set(SettingsResource.model_fields) == {f.name for f in dataclasses.fields(Settings)}
    assert SettingsResource.of(settings).get() == settings
