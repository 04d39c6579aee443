import pytest
from serving_world import build_world, free_port, running_endpoint


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("serving-world"))


@pytest.fixture(scope="module")
def endpoint(world):
    """A real endpoint process for the module; yields its base URL."""
    with running_endpoint(world, free_port()) as (url, _pid):
        yield url
