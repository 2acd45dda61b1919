"""The Dask tests' fixtures: one local cluster of two worker processes per test module that asks for it."""
from __future__ import annotations

import pytest

from tests.engine.distributed.helpers import start_cluster


@pytest.fixture(scope="module")
def dask_cluster():
    """(cluster, client) of a LocalCluster with two worker processes; the tools reach it by its address."""
    cluster, client = start_cluster()
    yield cluster, client
    client.close()
    cluster.close()
