"""Where the model projects live, and the declared projects the platform runs.

`projects/` beside the code, or MLOPS_PROJECTS_DIR. A declaration is read once per process: the
code location and the sensors take their project's defaults from it, so editing `defs.yaml` changes what
runs (and a bad edit stops the code location from loading, with the error naming the file and field).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from mlops_core.projects.declaration import ModelProject, load_project
from mlops_core.settings import REPO_ROOT

FRAUD = "fraud"


def projects_dir() -> Path:
    return Path(os.environ.get("MLOPS_PROJECTS_DIR") or REPO_ROOT / "projects").resolve()


@functools.cache
def _declared(folder: Path) -> ModelProject:
    return load_project(folder)


def declared_project(name: str) -> ModelProject:
    """The validated declaration of project `name` (read once per process and folder)."""
    return _declared(projects_dir() / name)


def fraud_project() -> ModelProject:
    """The reference project; its declaration supplies the fraud pipeline's gates, rollout and retraining policy."""
    return declared_project(FRAUD)


def unbuildable(projects: list[ModelProject], root: Path | None = None) -> list[str]:
    """Why the platform cannot build some of these projects' graphs, one line each naming the file and field.

    Fraud's event-grain graph is written out (mlops_assets/); every other project is built from its declaration
    by ModelProjectComponent, which builds snapshot projects. A second event-grain project would validate and
    then have no graph: it is refused here, at load time, instead."""
    root = root if root is not None else projects_dir()
    return [
        f"{root / p.name / 'defs.yaml'}: entity.grain: the platform builds 'snapshot' projects from their "
        f"declaration; 'event' is the fraud reference graph's only (found 'event' in project {p.name!r})"
        for p in projects
        if p.entity.grain == "event" and p.name != FRAUD
    ]
