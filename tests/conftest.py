import os

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """Artifacts written by tests go to a session folder, never to the user's ~/.cache/vlmsae."""
    previous = os.environ.get("VLMSAE_CACHE")
    os.environ["VLMSAE_CACHE"] = os.environ.get("VLMSAE_TEST_CACHE") or str(tmp_path_factory.mktemp("cache"))
    yield
    if previous is None:
        os.environ.pop("VLMSAE_CACHE", None)
    else:
        os.environ["VLMSAE_CACHE"] = previous


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def planted():
    """Small data from a known sparse dictionary, shared by the SAE and trainer tests."""
    from vlmsae.synthetic import sparse_dictionary_data

    return sparse_dictionary_data(n=4096, d=24, c=48, k=3, noise=0.01, seed=0)
