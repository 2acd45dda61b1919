"""Helpers shared by the Dask tests (import them from here, never from a test module or conftest).

A local Dask cluster of two worker processes (one thread each, small memory), the tile layers of two runs
compared, the pids of a cluster's workers, a wait until its workers run nothing. Dask is imported only by what uses it.
"""
from __future__ import annotations

import os

import numpy as np

WORKER_MEMORY = "2GiB"


def start_cluster():
    """A LocalCluster of two worker processes, one thread each, on 127.0.0.1 (no dashboard), and a client."""
    import logging

    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, memory_limit=WORKER_MEMORY,
                           host="127.0.0.1", dashboard_address=None, silence_logs=logging.CRITICAL)
    client = Client(cluster)
    client.wait_for_workers(2, timeout=60)
    return cluster, client


def wait_until_idle(client, settle: float = 1.0, timeout: float = 60.0) -> None:
    """Until no worker thread has run a task for ``settle`` seconds: a cancelled or killed client's tasks already
    running go on to the end (Dask cannot stop a thread) and write their partitions, and a worker may start one
    more before the scheduler has forgotten them; a test that looks at a store waits for all of that first."""
    import time

    def running(dask_worker) -> int:
        return len(dask_worker.state.all_running_tasks)

    end = time.monotonic() + timeout
    quiet_since = None
    while True:
        now = time.monotonic()
        if any(client.run(running).values()):
            quiet_since = None
        elif quiet_since is None:
            quiet_since = now
        elif now - quiet_since >= settle:
            return
        if now > end:
            raise TimeoutError(f"Dask workers still running tasks after {timeout:.0f} s")
        time.sleep(0.1)


def worker_pids(client) -> dict:
    """{worker address: process id}."""
    return client.run(os.getpid)


def tile_columns(gpkg, layer: str = "tiles", columns=("row", "col", "cluster", "clust_dist", "pc1", "pc2")) -> dict:
    """The tile layer's columns as arrays (in the layer's order)."""
    import pyogrio

    df = pyogrio.read_dataframe(str(gpkg), layer=layer, read_geometry=False)
    return {c: df[c].to_numpy() for c in columns if c in df.columns}


def assert_same_tiles(a: dict, b: dict, atol: float = 1e-5) -> None:
    """The same tiles with the same clusters; distances and PCA scores within float tolerance."""
    for name in a:
        if a[name].dtype.kind in "iu":
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
        else:
            np.testing.assert_allclose(a[name], b[name], atol=atol, rtol=1e-5, err_msg=name)
