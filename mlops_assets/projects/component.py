"""ModelProjectComponent: one `projects/<name>/defs.yaml` becomes one project's asset graph.

The component route, as Dagster's own docs recommend for many similar asset graphs: the YAML's `type:` names
this class and its `attributes:` are the declaration (schema: mlops_core.projects.declaration.ModelProject,
which `get_model_cls` hands to Dagster's tooling). The platform reads the files itself
(`project_components`) rather than through `dg.load_defs`, for two reasons: projects live in plain folders
beside the code, not in a Python package, and the strict loader reports every bad field with its file, found
value and allowed values, where a generic loader stops at the first.

Fraud's graph is the reference implementation, written out in mlops_assets/ and driven by its declaration
(gates, rollout, retraining policy); the component builds the graph of every snapshot project.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from mlops_assets.projects.snapshot_graph import snapshot_project_definitions
from mlops_core.projects.catalog import FRAUD, projects_dir, unbuildable
from mlops_core.projects.declaration import (
    ModelProject,
    ProjectDeclarationError,
    load_projects,
    parse_project,
    project_folders,
)


class ModelProjectComponent(dg.Component):
    """A declared model project; `build_defs` gives its assets, checks, jobs, schedules and sensors."""

    def __init__(self, project: ModelProject, folder: Path):
        self.project = project
        self.folder = Path(folder)

    @classmethod
    def get_model_cls(cls) -> type[ModelProject]:
        return ModelProject

    @classmethod
    def load(cls, attributes, context: dg.ComponentLoadContext) -> ModelProjectComponent:
        project = attributes if isinstance(attributes, ModelProject) else parse_project(attributes, context.path)
        return cls(project, context.path)

    def build_defs(self, context: dg.ComponentLoadContext | None = None) -> dg.Definitions:
        if self.project.entity.grain != "snapshot":
            raise NotImplementedError(
                f"project {self.project.name!r}: the component builds snapshot projects; event-grain graphs are "
                "written out (fraud's, in mlops_assets/)"
            )
        return snapshot_project_definitions(self.project, self.folder)


def project_components(root: Path | None = None) -> list[ModelProjectComponent]:
    """A component per declared project whose graph the component builds (every project but fraud), sorted by
    name. Every declaration is validated first: one bad file stops the load, naming each bad field."""
    root = Path(root) if root is not None else projects_dir()
    projects = load_projects(root)
    problems = unbuildable(projects, root)
    if problems:
        raise ProjectDeclarationError(root, problems)
    declared = {project.name: project for project in projects}
    return [
        ModelProjectComponent(declared[folder.name], folder) for folder in project_folders(root) if folder.name != FRAUD
    ]


def project_definitions(root: Path | None = None) -> list[dg.Definitions]:
    return [dg.build_defs_for_component(component) for component in project_components(root)]
