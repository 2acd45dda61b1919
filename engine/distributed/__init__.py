"""Runs on Dask (``--dask local:N`` or ``--dask tcp://host:port``): partitions, the shared store, merging.

The engine's work is split into partitions that Dask runs on its workers, and
the results are the same as one process's (same inputs and seed):

- ``partitions``: the value types of the split. A :class:`~.partitions.Partition`
  is a run of consecutive valid tiles in the tile grid's row-major order, whole
  feature batches long, so a worker sees exactly the batches one process sees;
  a :class:`~.partitions.Band` is a band of raster rows for segmentation, whole
  polygonisation blocks high.
- ``session``: ``--dask`` parsed (:class:`~.session.DaskAddress`), the client and
  the local cluster it may start (:class:`~.session.DaskSession`), tasks run
  with their progress summed into the engine's stages, the dashboard link.
- ``worker``: what runs on a worker: a raster opened once and a model loaded
  once per worker process (cached by their specs), and the tasks. Every task is
  pure and idempotent: it writes its result under a temporary name in the store
  and renames it, so a task that a dying worker left is simply run again.
- ``store``: the feature store, a folder every worker sees (one ``.npy`` per
  partition, never through the scheduler), kept for ``--resume`` and gathered
  into the feature cache file one process writes.
- ``features``, ``segment``, ``stats``: the client side of each kind of work.
- ``plan``: what a run would cost, from one partition timed (``probe --plan``).

Dask is imported only here and only when ``--dask`` is given, so the CLI stays
fast. Tools use this package; it uses the packages below it (features,
clustering, segmentation, stats), never the tools.
"""
