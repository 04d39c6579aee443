"""Fixtures of the production-profile tests: one world of real servers for the whole folder."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# postgres_server and production_world live beside the tests; test folders have no __init__.py.
sys.path.insert(0, str(Path(__file__).parent))

from production_world import production_world  # noqa: E402


@pytest.fixture(scope="session")
def production_world_session(tmp_path_factory):
    """Postgres, mlflow server and redis-server on loopback; data_layer_job and training_job already run."""
    with production_world(tmp_path_factory.mktemp("production")) as world:
        yield world


@pytest.fixture
def production(production_world_session, monkeypatch):
    """The world, with its MLOPS_* / DAGSTER_* environment set for this test only."""
    for key, value in production_world_session.env.items():
        monkeypatch.setenv(key, value)
    return production_world_session
