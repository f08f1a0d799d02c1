"""Shared fixtures."""

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The real data sets' root, found only through PRUNEBENCH_DATA (never a fixed path)."""
    root = os.environ.get("PRUNEBENCH_DATA")
    if not root:
        pytest.skip(
            "PRUNEBENCH_DATA is not set: point it at a data root that holds "
            "fashion-mnist/*-ubyte.gz and cifar10-jpg.tar.gz to run the real-data tests"
        )
    return Path(root)


@pytest.fixture(scope="session")
def data_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data cache for the session, so that tests never write to ~/.cache."""
    return tmp_path_factory.mktemp("data-cache")
