"""Fraud, the reference project: its graph is written out in mlops_assets/ (event grain, the streaming online
store, the staged endpoint rollout), its decisions are declared in projects/fraud/defs.yaml.

Its model assets carry their declaration's owner and the project tag exactly as every declared project's do, so
the UI's owner and tag filters, and the run queue's per-project limit (on the jobs, mlops_assets/jobs.py), treat
fraud as one project among the others. The shared data layer (ingestion, warehouse) carries neither."""

from collections.abc import Sequence

import dagster as dg

from mlops_assets.constants import PROJECT_TAG
from mlops_core.projects.declaration import ModelProject


def as_project_assets(assets: Sequence[dg.AssetsDefinition], project: ModelProject) -> list[dg.AssetsDefinition]:
    """`assets` with the project's owner and its project tag added to every spec."""
    return list(
        dg.map_asset_specs(
            lambda spec: spec.merge_attributes(owners=[project.owner], tags={PROJECT_TAG: project.name}), assets
        )
    )
