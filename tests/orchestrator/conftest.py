import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """Feature networks and reference statistics, trained once per test session."""
    return tmp_path_factory.mktemp("cache")
