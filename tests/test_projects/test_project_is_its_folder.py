"""A model project is its folder (tier 1): churn exists only as projects/churn/, a scaffolded project joins the
code location with no code change, a project the platform cannot build is refused at load, and 100 generated
projects load with the expected asset graph (tier 3, not timed: benchmarks/projects_at_scale.py times it)."""

import ast
import shutil
from pathlib import Path

import dagster as dg
import pytest
from click.testing import CliRunner

from mlops_assets.projects import project_components
from mlops_cli.main import main
from mlops_core.projects.declaration import ProjectDeclarationError
from mlops_core.settings import REPO_ROOT

PLATFORM_PACKAGES = ("mlops_core", "mlops_assets", "resources", "sensors")
# The demo generator is asked to gain churn (fading customers): that is demo data, not the churn project.
DEMO_DATA = REPO_ROOT / "mlops_core" / "datagen"
PROJECT_STEPS = {
    "snapshots",
    "candidate_model",
    "candidate_evaluation",
    "registered_model",
    "champion_model",
    "batch_scores",
    "online_features",
    "feature_drift",
}


def _code_strings_and_names(path: Path) -> list[str]:
    """String constants (docstrings aside) and identifiers of a module: what its code can act on."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            found.append(node.value)
        elif isinstance(node, ast.Name):
            found.append(node.id)
        elif isinstance(node, ast.Attribute):
            found.append(node.attr)
        elif isinstance(node, ast.FunctionDef | ast.ClassDef):
            found.append(node.name)
    return found


def test_churn_is_only_its_folder():
    folder = REPO_ROOT / "projects" / "churn"
    assert sorted(p.name for p in folder.iterdir()) == ["defs.yaml", "snapshots.sql"]
    mentions = [
        f"{path.relative_to(REPO_ROOT)}: {value!r}"
        for package in PLATFORM_PACKAGES
        for path in sorted((REPO_ROOT / package).rglob("*.py"))
        if DEMO_DATA not in path.parents
        for value in _code_strings_and_names(path)
        if "churn" in value.lower()
    ]
    assert not mentions, "the platform's code names the churn project: " + "; ".join(mentions)


def test_the_rule_sees_a_mention_in_code_but_not_in_a_docstring(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text('"""About churn."""\n\ndef f():\n    """churn too."""\n    return "churn_predictor"\n')
    assert [v for v in _code_strings_and_names(sample) if "churn" in v] == ["churn_predictor"]


def _projects_with(tmp_path: Path, *names: str) -> Path:
    root = tmp_path / "projects"
    for name in ("fraud", "churn"):
        shutil.copytree(REPO_ROOT / "projects" / name, root / name)
    for name in names:
        result = CliRunner().invoke(main, ["project", "new", name, "--root", str(root)])
        assert result.exit_code == 0, result.output
    return root


def _code_location(root: Path, monkeypatch) -> dg.Definitions:
    """The real code location (build_definitions) over the projects under `root`."""
    from mlops_assets.definitions import build_definitions

    monkeypatch.setenv("MLOPS_PROJECTS_DIR", str(root))
    return build_definitions()


def test_a_scaffolded_project_joins_the_code_location_with_its_own_graph_jobs_and_triggers(tmp_path, monkeypatch):
    root = _projects_with(tmp_path, "upsell")
    defs = _code_location(root, monkeypatch)
    keys = {k for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {k.path[1] for k in keys if k.path[0] == "upsell"} == PROJECT_STEPS
    assert {k.path[1] for k in keys if k.path[0] == "churn"} == PROJECT_STEPS
    graph = defs.resolve_asset_graph()
    assert {graph.get(k).group_name for k in keys if k.path[0] == "upsell"} == {"upsell"}
    jobs = {j.name for j in defs.resolve_all_job_defs()}
    assert {"upsell_training_job", "upsell_scoring_job", "churn_training_job", "churn_scoring_job"} <= jobs
    # The template declares batch scoring and a weekly retraining, and retrains on feature drift.
    assert {s.name for s in defs.schedules} >= {"upsell_batch_scoring", "upsell_scheduled_retraining"}
    assert "upsell_drift_retraining" in {s.name for s in defs.sensors}
    upsell_job = defs.resolve_job_def("upsell_training_job")
    assert {k.path[0] for k in upsell_job.asset_layer.executable_asset_keys} == {"upsell"}


def test_a_project_the_platform_cannot_build_stops_the_load_naming_its_file(tmp_path):
    root = _projects_with(tmp_path)
    shutil.copytree(root / "fraud", root / "fraud_eu")
    text = (root / "fraud_eu" / "defs.yaml").read_text()
    (root / "fraud_eu" / "defs.yaml").write_text(
        text.replace("name: fraud\n", "name: fraud_eu\n").replace("fraud_detector", "fraud_detector_eu")
    )
    with pytest.raises(ProjectDeclarationError) as error:
        project_components(root)
    assert f"{root / 'fraud_eu' / 'defs.yaml'}: entity.grain" in str(error.value)
    assert "found 'event' in project 'fraud_eu'" in str(error.value)
    result = CliRunner().invoke(main, ["project", "validate", "--root", str(root)])
    assert result.exit_code == 1 and "fraud_eu" in result.output


def test_100_generated_projects_load_with_the_expected_asset_graph(tmp_path, monkeypatch):
    names = [f"model_{i:03d}" for i in range(100)]
    root = _projects_with(tmp_path, *names)
    assert [c.project.name for c in project_components(root)] == ["churn", *names]
    fraud_root = _projects_with(tmp_path / "fraud_only")
    shutil.rmtree(fraud_root / "churn")
    fraud_only = _code_location(fraud_root, monkeypatch)
    defs = _code_location(root, monkeypatch)
    fraud_keys = fraud_only.resolve_asset_graph().get_all_asset_keys()
    keys = defs.resolve_asset_graph().get_all_asset_keys()
    project_keys = {k for k in keys if k.path[0] in {"churn", *names}}
    assert len(project_keys) == 101 * len(PROJECT_STEPS)
    # The shared data layer and fraud's graph are there once, unchanged, beside the 101 project graphs.
    assert keys - project_keys == fraud_keys
    project_jobs = {j.name for j in defs.resolve_all_job_defs()} - {j.name for j in fraud_only.resolve_all_job_defs()}
    assert len(project_jobs) == 101 * 2
    assert len(defs.sensors) - len(fraud_only.sensors) == 101


def test_the_production_queue_limits_runs_per_project_and_every_project_run_carries_its_tag(tmp_path, monkeypatch):
    import yaml

    from mlops_assets.projects.snapshot_graph import PROJECT_TAG

    profile = yaml.safe_load((REPO_ROOT / "deploy" / "dagster.production.yaml").read_text())
    limits = profile["concurrency"]["runs"]["tag_concurrency_limits"]
    per_project = [limit for limit in limits if limit["key"] == PROJECT_TAG]
    assert per_project == [{"key": PROJECT_TAG, "value": {"applyLimitPerUniqueValue": True}, "limit": 2}]
    defs = _code_location(_projects_with(tmp_path, "upsell"), monkeypatch)
    for name in ("churn", "upsell"):
        for job in ("training_job", "scoring_job"):
            assert defs.resolve_job_def(f"{name}_{job}").tags[PROJECT_TAG] == name
    # Fraud is one project too: its model jobs queue under the same per-project limit; the data layer is shared.
    for job in ("feature_job", "training_job", "promote_job", "rollout_job", "canary_rollback_job", "scoring_job"):
        assert defs.resolve_job_def(job).tags[PROJECT_TAG] == "fraud", job
    assert defs.resolve_job_def("retraining_job").tags[PROJECT_TAG] == "fraud"
    assert PROJECT_TAG not in defs.resolve_job_def("data_layer_job").tags


def test_every_asset_is_the_shared_data_layer_or_one_projects_with_its_declared_owner(tmp_path, monkeypatch):
    """Fraud's written-out graph and the declared projects' graphs look alike in the UI: each model asset carries
    its project's tag and its declaration's owner; only the shared ingestion and warehouse layers carry neither."""
    from mlops_assets.constants import INGESTION, PROJECT_TAG, WAREHOUSE
    from mlops_core.projects.declaration import load_project

    root = _projects_with(tmp_path, "upsell")
    defs = _code_location(root, monkeypatch)
    graph = defs.resolve_asset_graph()
    owners = {name: load_project(root / name).owner for name in ("fraud", "churn", "upsell")}
    seen = set()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        if node.group_name in (INGESTION, WAREHOUSE):
            assert PROJECT_TAG not in node.tags and not node.owners, key
            continue
        project = node.tags.get(PROJECT_TAG)
        assert project in owners, f"{key.to_user_string()} belongs to no project: {node.tags}"
        assert list(node.owners) == [owners[project]], key
        # A declared project's assets live under its own prefix; fraud's keep their historical, unprefixed keys.
        assert (key.path[0] == project) == (project != "fraud"), key
        seen.add(project)
    assert seen == set(owners)
