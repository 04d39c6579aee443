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
