"""The dbt manifest is reparsed when the project's sources change, and reused when they do not: a new
model used to stay invisible until someone deleted target/manifest.json."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dagster_dbt import DbtProject

from mlops_assets.transform import manifest
from mlops_assets.transform.manifest import DBT_PROJECT_DIR, ensure_manifest, sources_digest
from mlops_assets.transform.project import dbt_project


def test_the_digest_follows_content_not_modification_times(tmp_path):
    copy = tmp_path / "dbt"
    shutil.copytree(DBT_PROJECT_DIR, copy, ignore=shutil.ignore_patterns("target", "logs", "dbt_packages"))
    before = sources_digest(copy)
    model = next((copy / "models").rglob("*.sql"))
    model.touch()
    assert sources_digest(copy) == before
    model.write_text(model.read_text() + "\n-- one more line\n")
    assert sources_digest(copy) != before
    (copy / "target").mkdir()
    (copy / "target" / "run_results.json").write_text("{}")
    assert sources_digest(copy) != before  # still the edited model's digest, target/ is ignored
    after = sources_digest(copy)
    (copy / "target" / "other.sql").write_text("select 1")
    assert sources_digest(copy) == after


@pytest.mark.slow
def test_a_new_model_appears_in_the_manifest_without_deleting_it(tmp_path):
    copy = tmp_path / "dbt"
    shutil.copytree(DBT_PROJECT_DIR, copy, ignore=shutil.ignore_patterns("target", "logs", "dbt_packages"))
    project = DbtProject(project_dir=copy, profiles_dir=copy)
    manifest = ensure_manifest(project)
    first = manifest.stat().st_mtime_ns
    assert ensure_manifest(project).stat().st_mtime_ns == first  # unchanged sources: not parsed again
    (copy / "models" / "marts" / "daily_spend.sql").write_text(
        "select event_date, sum(amount_usd) as spend from {{ ref('transactions_enriched') }} group by 1\n"
    )
    nodes = json.loads(ensure_manifest(project).read_text())["nodes"]
    assert any(key.endswith(".daily_spend") for key in nodes)


def test_the_digest_never_walks_the_run_folders_dagster_dbt_leaves_in_target(tmp_path, monkeypatch):
    """dagster-dbt writes target/<asset>-<run>/ for every run (189 of them, 49,000 files, after one test
    suite): walking them made each load of the definitions seconds slower with every run ever made."""
    import os

    copy = tmp_path / "dbt"
    shutil.copytree(DBT_PROJECT_DIR, copy, ignore=shutil.ignore_patterns("target", "logs", "dbt_packages"))
    before = sources_digest(copy)
    for run in range(30):
        (copy / "target" / f"warehouse_models-{run:07x}" / "compiled" / "models").mkdir(parents=True)
        (copy / "target" / f"warehouse_models-{run:07x}" / "compiled" / "models" / "x.sql").write_text("select 1")
    visited: list[str] = []
    real_walk = os.walk

    def spying_walk(top, *args, **kwargs):
        for folder, subfolders, names in real_walk(top, *args, **kwargs):
            visited.append(os.path.relpath(folder, copy))
            yield folder, subfolders, names

    monkeypatch.setattr(manifest.os, "walk", spying_walk)
    assert sources_digest(copy) == before
    assert "models" in visited
    assert not [folder for folder in visited if folder.split(os.sep)[0] in ("target", "logs", "dbt_packages")]


def test_the_manifest_checked_without_dagster_is_the_one_the_code_location_loads():
    """manifest.py repeats dagster-dbt's defaults (target/manifest.json in the project) so that checking the
    manifest needs no dagster-dbt; a different target or project folder would check one file and load another."""
    assert manifest.MANIFEST_PATH == Path(dbt_project.manifest_path)
    assert manifest.DBT_PROJECT_DIR == Path(dbt_project.project_dir)
    assert Path(dbt_project.project_dir, manifest.TARGET_PATH) == Path(dbt_project.manifest_path).parent


CHECK_ONLY = """
import json, sys
from mlops_assets.transform.manifest import ensure_manifest
path = ensure_manifest()
print(json.dumps([str(path), sorted(name for name in ("dagster", "dagster_dbt", "dbt", "pandas") if name in sys.modules)]))
"""


def test_a_current_manifest_is_checked_without_importing_dagster_or_dbt():
    """`mlops prepare`, `mlops ui` and `mlops demo` check the manifest before anything else: with dagster-dbt
    imported for it (and dbt with it), `mlops prepare` took 3.2 s, against 0.7 s without."""
    ensure_manifest()  # current now: the fresh interpreter below only checks it
    done = subprocess.run([sys.executable, "-c", CHECK_ONLY], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    path, imported = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(path) == Path(dbt_project.manifest_path)
    assert imported == [], f"checking a current manifest imported {imported}"
