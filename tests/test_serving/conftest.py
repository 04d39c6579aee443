import pytest
from serving_world import build_world


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A registry with three versions, an online store with history; one per test module."""
    return build_world(tmp_path_factory.mktemp("serving-world"))
