"""dagster-dbt leaves a target folder per run (about 260 files each); the warehouse's dbt resource keeps the
newest `keep_run_artifacts` of them when a run ends, and never touches the manifest or anything else."""

import json
import os

import dagster as dg
import pytest

from mlops_assets.transform.project import DBT_EXECUTABLE
from resources.warehouse import WarehouseDbtResource, prune_run_folders


def make_target(root, runs: int):
    target = root / "target"
    target.mkdir(parents=True)
    for name in ("manifest.json", "partial_parse.msgpack", "mlops_sources.sha256"):
        (target / name).write_text("{}")
    (target / "compiled").mkdir()  # a folder dbt itself writes: not a run folder
    (target / "warehouse_models-1234567-89abcde0").mkdir()  # one hex digit too many: not dagster-dbt's name
    for i in range(runs):
        folder = target / f"warehouse_models-{i:07x}-{(i * 7919) % 16**7:07x}"
        (folder / "compiled").mkdir(parents=True)
        (folder / "run_results.json").write_text("{}")
        os.utime(folder, ns=(1_700_000_000_000_000_000 + i * 10**9,) * 2)  # run i ended i seconds after run 0
    return target


def run_folders(target):
    return sorted(p.name for p in target.iterdir() if p.is_dir() and p.name not in ("compiled",))


def test_the_newest_runs_stay_and_nothing_else_is_touched(tmp_path):
    target = make_target(tmp_path, runs=30)
    deleted = prune_run_folders(target, keep=20)
    assert len(deleted) == 10
    left = [p for p in run_folders(target) if p != "warehouse_models-1234567-89abcde0"]
    assert left == sorted(f"warehouse_models-{i:07x}-{(i * 7919) % 16**7:07x}" for i in range(10, 30))
    assert (target / "warehouse_models-1234567-89abcde0").is_dir()
    assert (target / "compiled").is_dir()
    assert all((target / n).is_file() for n in ("manifest.json", "partial_parse.msgpack", "mlops_sources.sha256"))
    assert prune_run_folders(target, keep=20) == []  # idempotent
    assert prune_run_folders(tmp_path / "missing", keep=0) == []


def test_the_resource_prunes_when_its_run_ends(tmp_path):
    target = make_target(tmp_path / "dbt", runs=5)
    (tmp_path / "dbt" / "dbt_project.yml").write_text("name: x\n")
    resource = WarehouseDbtResource(
        project_dir=str(tmp_path / "dbt"),
        duckdb_path=str(tmp_path / "w.duckdb"),
        keep_run_artifacts=2,
        dbt_executable=DBT_EXECUTABLE,
    )
    context = dg.build_init_resource_context()
    resource.setup_for_execution(context)
    resource.teardown_after_execution(context)
    kept = [p for p in run_folders(target) if p != "warehouse_models-1234567-89abcde0"]
    assert kept == [f"warehouse_models-{i:07x}-{(i * 7919) % 16**7:07x}" for i in (3, 4)]


def test_the_venvs_dbt_version_is_read_without_a_subprocess_and_another_dbt_is_asked(tmp_path, monkeypatch):
    """dagster-dbt ran `dbt --version` (a whole dbt import, 1.5-2 s) before every run's dbt build."""
    import subprocess

    import dbt.version
    from packaging import version

    def no_subprocess(*args, **kwargs):
        raise AssertionError(f"a subprocess was started: {args}")

    monkeypatch.setattr(subprocess, "check_output", no_subprocess)
    project = tmp_path / "dbt"
    project.mkdir()
    (project / "dbt_project.yml").write_text("name: x\n")
    own = WarehouseDbtResource(
        project_dir=str(project), duckdb_path=str(tmp_path / "w.duckdb"), dbt_executable=DBT_EXECUTABLE
    )
    assert own._cli_version == version.parse(dbt.version.__version__)
    monkeypatch.undo()

    def resource_for(name: str, says: str) -> WarehouseDbtResource:
        executable = tmp_path / name / "dbt"
        executable.parent.mkdir()
        executable.write_text(f"#!/bin/sh\necho '{says}'\n")
        executable.chmod(0o755)
        return WarehouseDbtResource(
            project_dir=str(project), duckdb_path=str(tmp_path / "w.duckdb"), dbt_executable=str(executable)
        )

    # A dbt elsewhere (another venv, a Fusion binary) answers for itself, through dagster-dbt's own question.
    assert resource_for("fusion", "dbt-fusion 2.0.0-beta.41")._cli_version == version.parse("2.0.0")
    with pytest.raises(ValueError, match="Could not parse dbt version from output: no version here"):
        resource_for("silent", "no version here")._cli_version  # noqa: B018 (the property raises)


def test_the_dbt_adapter_is_opened_only_when_metadata_is_fetched(tmp_path, monkeypatch):
    """dagster-dbt opened a dbt adapter (every macro parsed again, about 0.7 s of CPU) before every command,
    for `.fetch_row_counts()` / `.fetch_column_metadata()` that the warehouse's assets never chain."""
    from dagster_dbt import DbtCliResource
    from dagster_dbt.core.resource import pushd

    from mlops_assets.transform.project import DBT_PROJECT_DIR

    opened: list[list[str]] = []
    parent = DbtCliResource._initialize_dbt_core_adapter

    def counted(self, args):
        opened.append(list(args))
        return parent(self, args)

    monkeypatch.setattr(DbtCliResource, "_initialize_dbt_core_adapter", counted)
    monkeypatch.setenv("MLOPS_DUCKDB_PATH", str(tmp_path / "w.duckdb"))

    def resource(**fields) -> WarehouseDbtResource:
        return WarehouseDbtResource(
            project_dir=str(DBT_PROJECT_DIR),
            duckdb_path=str(tmp_path / "w.duckdb"),
            dbt_executable=DBT_EXECUTABLE,
            **fields,
        )

    assert resource()._initialize_dbt_core_adapter(["build"]) is None and opened == []
    with pushd(str(DBT_PROJECT_DIR)):
        adapter = resource(fetch_dbt_metadata=True)._initialize_dbt_core_adapter(["build"])
    assert opened == [["build"]] and type(adapter).__name__ == "DuckDBAdapter"


@pytest.mark.parametrize(("level", "debug_lines"), [(None, False), ("debug", True)], ids=["default", "debug"])
def test_dbts_file_log_holds_no_debug_lines_unless_asked(tmp_path, level, debug_lines):
    """dbt's own default writes every statement and connection event to each run's dbt.log (2 MB a build, about
    0.35 s of its CPU): the platform's default keeps warnings and errors, MLOPS_DBT_FILE_LOG_LEVEL=debug all."""
    from mlops_core.settings import Settings
    from resources.environment import build_resources

    env = {"MLOPS_HOME": str(tmp_path / "home")} | ({"MLOPS_DBT_FILE_LOG_LEVEL": level} if level else {})
    saved = dict(os.environ)
    try:
        dbt = build_resources(Settings.from_env(env))["dbt"]
    finally:  # build_resources exports the home's paths; later tests must not inherit them
        os.environ.clear()
        os.environ.update(saved)
    dbt.cli(["deps"], target_path=tmp_path / "run").wait()  # dagster-dbt sets DBT_LOG_PATH to the run's target
    log = (tmp_path / "run" / "dbt.log").read_text()  # JSON lines: dagster-dbt asks for --log-format json
    levels = {json.loads(line)["info"]["level"] for line in log.splitlines() if line.strip()}
    if debug_lines:
        assert "debug" in levels, log[:500]
    else:  # warnings and errors only: a level one step off (info) would fail too
        assert levels <= {"warn", "error"}, log[:500]
    with pytest.raises(
        ValueError, match="MLOPS_DBT_FILE_LOG_LEVEL must be one of debug, info, warn, error, none, got 'verbose'"
    ):
        Settings.from_env({**env, "MLOPS_DBT_FILE_LOG_LEVEL": "verbose"})
