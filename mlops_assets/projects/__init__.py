"""Model projects declared in projects/<name>/defs.yaml, each built into its own asset graph."""

from mlops_assets.projects.component import ModelProjectComponent, project_components, project_definitions

__all__ = ["ModelProjectComponent", "project_components", "project_definitions"]
