import pytest

from tests.shards import world_samples, write_shards


@pytest.fixture(scope="session")
def world_shards(tmp_path_factory) -> str:
    """200 image-text pairs and 20 text-only samples of the synthetic world in 9 shards (the last short)."""
    return write_shards(world_samples(200, 20), tmp_path_factory.mktemp("shards"), per_shard=25)
