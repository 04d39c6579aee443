"""The floor of a Dagster code location with the dbt integration: the warehouse's dbt project as
@dbt_assets and nothing else (benchmarks/startup.py). Importing dagster-dbt imports dbt-core, so this
is what any code location with dbt models pays before its own code runs."""

import sys
from pathlib import Path

import dagster as dg
from dagster_dbt import DbtCliResource, DbtProject, dbt_assets

PROJECT_DIR = Path(__file__).resolve().parents[2] / "dbt_project"
project = DbtProject(project_dir=PROJECT_DIR, profiles_dir=PROJECT_DIR)


@dbt_assets(manifest=project.manifest_path, project=project)
def dbt_models(context: dg.AssetExecutionContext, dbt: DbtCliResource):
    yield from dbt.cli(["build"], context=context).stream()


defs = dg.Definitions(
    assets=[dbt_models],
    resources={"dbt": DbtCliResource(project_dir=project, dbt_executable=str(Path(sys.executable).with_name("dbt")))},
)
