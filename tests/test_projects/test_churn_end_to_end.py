"""Churn end to end (tier 2): land 180 days with fading customers, build the shared data layer, then run the
churn project's own jobs as the code location defines them: snapshots, candidate, the declared gates, the
registry (its own model, aliases and audit history), the batch shadow, promotion, batch scores and drift.
Nothing here is churn-specific code: the graph comes from projects/churn/ alone."""

import datetime as dt
import json

import dagster as dg
import duckdb
import pytest
from churn_world import churn_world, model_registry, run_job

from mlops_assets.projects.snapshot_graph import CHECK_SHADOW, PROJECT_TAG, project_key
from mlops_core import registry
from mlops_core.projects.catalog import declared_project
from mlops_core.projects.training import PROJECT_GATES


@pytest.fixture(scope="module")
def churn_home(tmp_path_factory):
    with churn_world(tmp_path_factory.mktemp("churn-home")) as world:
        yield world


_run = run_job
_registry = model_registry


def test_churn_trains_passes_its_gates_rolls_out_and_is_batch_scored(churn_home):
    settings, defs, instance = churn_home
    project = declared_project("churn")
    training_job = defs.resolve_job_def("churn_training_job")
    # The project's jobs select its assets only, and carry its tag for the per-project run queue.
    assert {k.path[0] for k in training_job.asset_layer.executable_asset_keys} == {"churn"}
    assert training_job.tags[PROJECT_TAG] == "churn"

    # The module's tests run in any order: count from what the registry holds now (no version when run alone).
    before = registry.alias_version(_registry(settings).client(), registry.CHAMPION, "churn_predictor")
    expected = str(int(before or 0) + 1)
    result = training_job.execute_in_process(instance=instance, raise_on_error=False)
    assert result.success
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert all(checks[gate] for gate in PROJECT_GATES), checks
    assert checks[CHECK_SHADOW]

    evaluation = instance.get_latest_materialization_event(project_key("churn", "candidate_evaluation"))
    metadata = evaluation.asset_materialization.metadata
    # The evaluation report shows the model beating its baseline, by a real margin on real data.
    assert metadata["test_auc_pr"].value > metadata["baseline_test_auc_pr"].value + 0.05
    assert metadata["test_auc_pr"].value >= project.gates.min_auc_pr

    client = _registry(settings).client()
    # The project's runs are in its own experiment, named after it.
    run = client.get_run(metadata["mlflow_run_id"].value)
    assert client.get_experiment(run.info.experiment_id).name == "churn"
    assert run.data.tags["project"] == "churn"
    # One registered model per project: churn's own, with both aliases on version 1, fraud's untouched.
    assert registry.alias_version(client, registry.CHAMPION, "churn_predictor") == expected
    assert registry.alias_version(client, registry.CHALLENGER, "churn_predictor") == expected
    assert registry.alias_version(client, registry.CHAMPION, registry.MODEL_NAME) is None

    scoring = _run(defs, instance, "churn_scoring_job")
    assert scoring.success
    with duckdb.connect(str(settings.duckdb_path), read_only=True) as con:
        latest = con.execute("SELECT max(snapshot_date) FROM project_churn.snapshots").fetchone()[0]
        population = con.execute(
            "SELECT count(*) FROM project_churn.snapshots WHERE snapshot_date = ?", [latest]
        ).fetchone()[0]
        scored = con.execute(
            "SELECT count(*), count(DISTINCT account_id), min(score), max(score), any_value(model_version) "
            "FROM project_churn.scores WHERE snapshot_date = ?",
            [latest],
        ).fetchone()
        history = con.execute(
            "SELECT alias, to_version FROM registry.alias_history WHERE model_name = 'churn_predictor' "
            "ORDER BY changed_at, rowid"
        ).fetchall()
    assert latest == dt.date(2026, 6, 29)
    assert scored[0] == scored[1] == population > 100
    assert 0.0 <= scored[2] < scored[3] <= 1.0
    assert scored[4] == expected
    assert history[-2:] == [("challenger", expected), ("champion", expected)]
    assert len(history) == 2 * int(expected)  # every version: challenger then champion, nothing else
    drift = instance.get_latest_materialization_event(project_key("churn", "feature_drift"))
    psi = json.loads(json.dumps(drift.asset_materialization.metadata["psi"].value))
    assert set(psi) == set(project.feature_names())


def test_retraining_on_the_same_data_promotes_version_2_and_rescoring_replaces_the_date(churn_home):
    settings, defs, instance = churn_home
    if registry.alias_version(_registry(settings).client(), registry.CHAMPION, "churn_predictor") is None:
        assert _run(defs, instance, "churn_training_job").success
        assert _run(defs, instance, "churn_scoring_job").success
    before = _registry(settings).client()
    v_before = registry.alias_version(before, registry.CHAMPION, "churn_predictor")
    assert _run(defs, instance, "churn_training_job").success
    v_after = registry.alias_version(_registry(settings).client(), registry.CHAMPION, "churn_predictor")
    assert int(v_after) == int(v_before) + 1
    assert _run(defs, instance, "churn_scoring_job").success
    with duckdb.connect(str(settings.duckdb_path), read_only=True) as con:
        versions = con.execute("SELECT model_version, count(*) FROM project_churn.scores GROUP BY ALL").fetchall()
        population = con.execute(
            "SELECT count(*) FROM project_churn.snapshots WHERE snapshot_date = (SELECT max(snapshot_date) "
            "FROM project_churn.snapshots)"
        ).fetchone()[0]
    # Idempotent per snapshot date: the new champion's scores replaced the old ones, nothing doubled.
    assert versions == [(v_after, population)]


def test_a_churn_drift_verdict_retrains_churn_and_nothing_else(churn_home):
    settings, defs, instance = churn_home
    sensor = defs.resolve_sensor_def("churn_drift_retraining")
    drift_key = project_key("churn", "feature_drift")
    instance.report_runless_asset_event(
        dg.AssetMaterialization(drift_key, metadata={"drifted": True, "drifted_share": 0.8})
    )
    with dg.build_sensor_context(instance=instance, definitions=defs) as context:
        tick = sensor.evaluate_tick(context)
        cursor = context.cursor
    assert len(tick.run_requests) == 1
    job = defs.resolve_job_def(sensor.job_name)
    assert job.name == "churn_training_job"
    assert {k.path[0] for k in job.asset_layer.executable_asset_keys} == {"churn"}
    assert tick.run_requests[0].tags[PROJECT_TAG] == "churn"
    # The same verdict never triggers twice; a no-drift verdict triggers nothing.
    with dg.build_sensor_context(instance=instance, definitions=defs, cursor=cursor) as context:
        assert sensor.evaluate_tick(context).run_requests == []
        cursor = context.cursor
    instance.report_runless_asset_event(
        dg.AssetMaterialization(drift_key, metadata={"drifted": False, "drifted_share": 0.1})
    )
    with dg.build_sensor_context(instance=instance, definitions=defs, cursor=cursor) as context:
        assert sensor.evaluate_tick(context).run_requests == []
        cursor = context.cursor
    # A drift then a calm verdict between two ticks: the drift still retrains, once.
    for drifted in (True, False):
        instance.report_runless_asset_event(
            dg.AssetMaterialization(drift_key, metadata={"drifted": drifted, "drifted_share": 0.5})
        )
    with dg.build_sensor_context(instance=instance, definitions=defs, cursor=cursor) as context:
        assert len(sensor.evaluate_tick(context).run_requests) == 1
        cursor = context.cursor
    # Another project's drift verdict (fraud's feature_drift, the same step name without the prefix) retrains
    # nothing here: churn's sensor watches churn's verdicts only.
    instance.report_runless_asset_event(
        dg.AssetMaterialization(dg.AssetKey("feature_drift"), metadata={"drifted": True, "drifted_share": 0.9})
    )
    with dg.build_sensor_context(instance=instance, definitions=defs, cursor=cursor) as context:
        assert sensor.evaluate_tick(context).run_requests == []


def test_a_scaffolded_third_project_trains_and_batch_scores_with_no_code(churn_home, tmp_path, monkeypatch):
    """`mlops project new upsell` as scaffolded, on the same landed data: its own graph trains, passes the
    template's gates, registers upsell_model and scores, beside churn's."""
    import shutil

    from click.testing import CliRunner

    from mlops_assets.definitions import build_definitions
    from mlops_cli.main import main
    from mlops_core.settings import REPO_ROOT

    settings, _, instance = churn_home
    root = tmp_path / "projects"
    for name in ("fraud", "churn"):
        shutil.copytree(REPO_ROOT / "projects" / name, root / name)
    assert CliRunner().invoke(main, ["project", "new", "upsell", "--root", str(root)]).exit_code == 0
    monkeypatch.setenv("MLOPS_PROJECTS_DIR", str(root))
    defs = build_definitions(settings)
    result = _run(defs, instance, "upsell_training_job")
    checks = {e.check_name: (e.passed, e.description) for e in result.get_asset_check_evaluations()}
    assert result.success, checks
    assert all(checks[gate][0] for gate in PROJECT_GATES), checks
    assert registry.alias_version(_registry(settings).client(), registry.CHAMPION, "upsell_model") == "1"
    assert _run(defs, instance, "upsell_scoring_job").success
    with duckdb.connect(str(settings.duckdb_path), read_only=True) as con:
        scored = con.execute("SELECT count(*), count(DISTINCT model_version) FROM project_upsell.scores").fetchone()
    assert scored[0] > 100 and scored[1] == 1


def test_the_cli_trains_and_scores_a_project_naming_its_gates_and_scores(churn_home, tmp_path):
    """`mlops project train churn` and `mlops project score churn`, as a user runs them (a subprocess on the
    same home): exit 0, a one-line verdict of the gates, the champion, the scores; the run logs in a file."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    settings, _, _ = churn_home
    env = {
        **os.environ,
        "MLOPS_HOME": str(settings.home),
        "MLOPS_DATA_DIR": str(settings.data_dir),
        "MLOPS_DUCKDB_PATH": str(settings.duckdb_path),
        "MLOPS_MLFLOW_DIR": str(settings.mlflow_dir),
        "MLOPS_REPORTS_DIR": str(settings.reports_dir),
        "DAGSTER_HOME": str(settings.dagster_home),
    }
    mlops = str(Path(sys.executable).parent / "mlops")
    trained = subprocess.run([mlops, "project", "train", "churn"], env=env, capture_output=True, text=True)
    assert trained.returncode == 0, trained.stdout + trained.stderr
    assert "churn: all gates pass; test AUC-PR" in trained.stdout
    assert "for the best single-feature rule" in trained.stdout
    assert "of churn_predictor" in trained.stdout
    assert (settings.home / "churn.log").stat().st_size > 0
    scored = subprocess.run([mlops, "project", "score", "churn"], env=env, capture_output=True, text=True)
    assert scored.returncode == 0, scored.stdout + scored.stderr
    assert "entities of the 2026-06-29 snapshot scored by version" in scored.stdout
    unknown = subprocess.run([mlops, "project", "train", "nosuch"], env=env, capture_output=True, text=True)
    assert unknown.returncode != 0 and "nosuch" in unknown.stdout + unknown.stderr
