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

        from ..features.backbones import build_backbone

        self.worker_spec = spec
        self.sobel = spec.sobel
        self.model, self.spec, self.weights_path = build_backbone(spec.backbone, spec.weights, spec.seed, spec.sobel,
                                                                   state_dict)
        self.dim = self.spec.dim
        found = session.call(describe_device, spec.device, spec.precision)
        self.device = torch.device(found["device"])
        self.precision = found["precision"]

    def batch_size(self, tile_px: int, given: "int | None") -> int:
        """The batch size one process on the workers' device would use."""
        return int(given or default_batch_size(tile_px, self.device))


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
