import os
import shutil
import sys
import tempfile
from pathlib import Path

import duckdb
import pytest

# landing_factory lives beside the tests; test folders have no __init__.py by design.
sys.path.insert(0, str(Path(__file__).parent))

_SESSION_HOME = None


def pytest_configure(config):
    """Point every default path at a throwaway MLOPS_HOME before the code location is imported."""
    global _SESSION_HOME
    _SESSION_HOME = tempfile.mkdtemp(prefix="mlops-tests-")
    os.environ["MLOPS_HOME"] = _SESSION_HOME
    for key in ("MLOPS_DATA_DIR", "MLOPS_DUCKDB_PATH", "DAGSTER_HOME", "MLOPS_REPORTS_DIR", "MLOPS_MLFLOW_DIR"):
        os.environ.pop(key, None)


def pytest_unconfigure(config):
    if _SESSION_HOME:
        shutil.rmtree(_SESSION_HOME, ignore_errors=True)


@pytest.fixture
def landing(tmp_path: Path) -> Path:
    path = tmp_path / "landing"
    path.mkdir()
    return path


@pytest.fixture
def con():
    connection = duckdb.connect()
    yield connection
    connection.close()
