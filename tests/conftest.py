import sys
from pathlib import Path

import duckdb
import pytest

# landing_factory lives beside the tests; test folders have no __init__.py by design.
sys.path.insert(0, str(Path(__file__).parent))


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
