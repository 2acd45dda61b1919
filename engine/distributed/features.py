"""The client side of features on Dask: the extractor the workers run, the store filled, the assignment.

``RemoteExtractor`` stands for the CNN as the workers run it: it has what a
tool reads of a ``FeatureExtractor`` (the backbone spec, the feature dimension,
the weights file, the workers' device and precision, and the network itself,
built on this machine's CPU, for the model file) but it never runs here.

:func:`compute_features` fills the store one partition per task and gathers it
into the features file a single-process run writes; :func:`assign` puts every
tile into the clusters of a fitted ``KMeansTiles`` on the workers. Both report
progress in tiles, as one process does (stages ``features`` and ``cluster``).
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from ..features.extract import default_batch_size
from .partitions import assign_partitions, partition_tiles, tile_partitions
from .store import FeatureStore
from .worker import ExtractorSpec, FeatureJob, RasterSpec, assign_partition, describe_device, extract_partition


class RemoteExtractor:
    """A CNN the workers run: its spec, ``dim``, ``weights_path``, the workers' ``device`` and ``precision``, and
    ``model`` (built here on the CPU: the network a model file records)."""

    def __init__(self, session, spec: ExtractorSpec, state_dict: "dict | None" = None):
        import torch

        from ..features.backbones import build_backbone, state_digest

        self.worker_spec = spec
        self.sobel = spec.sobel
        self.pool, self.cnn_px = spec.pool, spec.cnn_px
        self.model, self.spec, self.weights_path = build_backbone(spec.backbone, spec.weights, spec.seed, spec.sobel,
                                                                   state_dict, spec.pool, spec.depth_weights)
        self.depth_weights = self.spec.pool_weights(spec.pool, spec.depth_weights)
        self.state_digest = state_digest(state_dict)
        self.dim = self.spec.feature_dim(spec.pool)
        found = session.call(describe_device, spec.device, spec.precision)
        self.device = torch.device(found["device"])
        self.precision = found["precision"]

    def batch_size(self, tile_px: int, given: "int | None") -> int:
        """The batch size one process on the workers' device would use."""
        return int(given or default_batch_size(max(tile_px, self.cnn_px or 0), self.device))


def compute_features(session, raster: RasterSpec, extractor: RemoteExtractor, rows, cols, batch_size: int,
                     store_dir: "str | Path", final: "str | Path", progress, resume: bool = False,
                     store_param: "str | None" = "cache_dir"):
    """The features of the tiles (rows, cols) in the file ``final`` (an ``NpyFile``), computed on the workers
    partition by partition through the store ``store_dir``; with ``resume`` the partitions an interrupted run
    left there are kept. The store is removed once gathered. ``store_param``: the parameter that chose the
    store's folder (named when the workers cannot see it)."""
    store = FeatureStore(store_dir)
    parts = tile_partitions(len(rows), batch_size)
    store.prepare(rows, cols, extractor.dim, partition_tiles(batch_size), resume)
    check_visible(session, store.folder, store_param)
    todo = [p for p in parts if not (resume and store.done(p, extractor.dim))]
    done = sum(p.size for p in parts) - sum(p.size for p in todo)
    kept = len(parts) - len(todo)
    note = f"; {kept} of {len(parts)} partitions kept from the interrupted run" if resume else ""
    progress("features", done, len(rows), f"{len(parts)} partitions on {session.n_workers} workers{note}")
    spec = extractor.worker_spec
    if session.torch_threads and not spec.threads:
        from dataclasses import replace

        spec = replace(spec, threads=session.torch_threads)
    job = FeatureJob(raster, spec, str(store.folder), extractor.dim, int(batch_size))
    ready = kept

    def finished(part, result):
        nonlocal done, ready
        done += result["tiles"]
        ready += 1
        progress("features", done, len(rows), f"{ready} of {len(parts)} partitions")

    session.run(extract_partition, todo, job, name="features", on_done=finished)
    session.runs.append({"stage": "features", "partitions": len(parts), "partition_tiles": partition_tiles(batch_size),
                         "batch_size": int(batch_size), "kept": kept})
    feats = store.gather(parts, extractor.dim, final)
    store.remove()
    return feats


def check_visible(session, folder: Path, param: "str | None") -> None:
    """BadInput unless the workers see ``folder`` (a store on a file system they share with this machine);
    ``param`` chose the folder (None: the URBANFORM_CACHE variable did)."""
    import os

    from ..errors import BadInput

    if not session.call(os.path.isdir, str(folder)):
        fix = f"give --{param.replace('_', '-')}" if param else "set URBANFORM_CACHE to"
        raise BadInput(f"the Dask workers of {session.address} do not see the folder {str(folder)!r}; {fix} a "
                       "folder on a file system every worker shares with this machine.", param=param)


def assign(session, kmeans, features: "str | Path", n: int, progress) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cluster, distance, first two PCA scores) of the ``n`` tiles of the feature file ``features``, assigned on
    the workers in whole chunks of ``kmeans.chunk`` tiles (the chunks one process assigns by)."""
    parts = assign_partitions(n, kmeans.chunk)
    shared = session.share(kmeans)
    done = 0

    def finished(part, _):
        nonlocal done
        done += part.size
        progress("cluster", done, n, f"assigned {done} of {n} tiles on the workers")

    results = session.run(assign_partition, parts, str(features), shared, name="assign", on_done=finished)
    session.runs.append({"stage": "cluster", "partitions": len(parts)})
    return tuple(np.concatenate([r[i] for r in results]) for i in range(3))


class EpochFeatures:
    """DeepCluster's features on Dask: called with an epoch and the network's state of that epoch, it saves the
    state where the workers see it (``run_dir``, on a shared file system), has the workers compute every tile's
    features with it (each worker loads that epoch's network once) and returns them as the ``.npy`` file
    ``workdir/deepcluster_features_EPOCH.npy``, the file one process writes. The training stays in the client.
    ``remove()`` deletes ``run_dir`` once the run is over."""

    def __init__(self, session, raster: RasterSpec, spec: ExtractorSpec, dim: int, rows, cols, batch_size: int,
                 run_dir: "str | Path", workdir: "str | Path"):
        self.session, self.raster, self.spec, self.dim = session, raster, spec, int(dim)
        self.rows, self.cols, self.batch_size = rows, cols, int(batch_size)
        self.run_dir, self.workdir = Path(run_dir), Path(workdir)

    def __call__(self, epoch: int, state: dict, progress):
        import torch

        from ..io import atomic_path

        self.run_dir.mkdir(parents=True, exist_ok=True)
        check_visible(self.session, self.run_dir, "cache_dir")
        state_file = self.run_dir / f"network-{epoch:03d}.pt"
        with atomic_path(state_file) as tmp:
            torch.save(state, tmp)
        extractor = _Spec(replace(self.spec, state_file=str(state_file)), self.dim)

        def stage(stage_name, done, total, message=None, **_):
            progress(done, total, message)

        try:
            return compute_features(self.session, self.raster, extractor, self.rows, self.cols, self.batch_size,
                                    self.run_dir / f"epoch-{epoch:03d}",
                                    self.workdir / f"deepcluster_features_{epoch}.npy", stage)
        finally:
            state_file.unlink(missing_ok=True)

    def remove(self) -> None:
        import shutil

        shutil.rmtree(self.run_dir, ignore_errors=True)


class _Spec:
    """What :func:`compute_features` reads of an extractor: the workers' spec and the features' dimension."""

    def __init__(self, worker_spec: ExtractorSpec, dim: int):
        self.worker_spec, self.dim = worker_spec, dim
