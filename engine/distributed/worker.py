"""What runs on a Dask worker: the raster and the model opened once per worker, and the tasks.

A task gets small value types (``RasterSpec``, ``ExtractorSpec``, a
``Partition``) and opens what they name through :func:`cached`: a worker
process keeps the last few rasters and models it opened, keyed by their specs,
so it loads a model once however many partitions it runs (and uses its GPU when
it has one: ``device='auto'``). Only one task uses an opened raster or model at
a time (a worker started with several threads runs them one after another).

Every task is pure and idempotent: it writes its result under a temporary name
in the store and renames it into place (``engine.io.atomic_path``), and returns
only small numbers. A task that a dying worker left half done left no file, and
Dask runs it again on another worker with the same result.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from .partitions import Partition

MAX_CACHED = 4                      # rasters and models a worker keeps open (a sweep has one raster per tile size)
_cache: "OrderedDict[object, tuple[object, threading.Lock]]" = OrderedDict()
_cache_lock = threading.Lock()


@contextmanager
def cached(spec, make: Callable) -> Iterator:
    """The value ``make()`` built for ``spec`` in this worker process (built on first use), held for the block."""
    with _cache_lock:
        entry = _cache.get(spec)
        if entry is None:
            entry = _cache[spec] = (make(), threading.Lock())
            while len(_cache) > MAX_CACHED:
                _, (old, _lock) = _cache.popitem(last=False)
                getattr(old, "close", lambda: None)()
        _cache.move_to_end(spec)
    value, lock = entry
    with lock:
        yield value


@dataclass(frozen=True)
class RasterSpec:
    """How a run cuts its raster into tiles: the arguments of ``engine.raster.tiling.TiledRaster``."""

    path: str
    tile_size: str
    overlap: str = "0px"
    edge: str = "drop"
    bands: "tuple | None" = None
    seed: int = 0

    def open(self):
        from ..raster.tiling import TiledRaster

        return TiledRaster(self.path, self.tile_size, self.overlap, self.edge,
                           list(self.bands) if self.bands else None, seed=self.seed)


@dataclass(frozen=True)
class ExtractorSpec:
    """The CNN that describes tiles, as a worker builds it: a backbone and its weights, or the network of a
    cluster model file (``model_file``, for predict) or a network saved by ``torch.save`` (``state_file``: the
    CNN of one DeepCluster epoch), seen through a resize to ``resize_px`` (predict --resample); ``threads``:
    torch threads (None: the worker's own setting)."""

    backbone: str
    weights: str = "imagenet"
    device: str = "auto"
    precision: str = "auto"
    seed: int = 0
    sobel: bool = False
    model_file: "str | None" = None
    resize_px: "int | None" = None
    threads: "int | None" = None
    state_file: "str | None" = None
    pool: str = "last"                    # --pool and --cnn-px of the feature recipe (FeatureExtractor)
    cnn_px: "int | None" = None
    depth_weights: "tuple | None" = None  # --pool multi's depth weights (None: the backbone's own)

    def build(self):
        from ..features.extract import FeatureExtractor, ResizedExtractor

        set_torch_threads(self.threads)
        state = None
        if self.model_file:
            from ..clustering.modelfile import load_model

            state = load_model(self.model_file).network
        elif self.state_file:
            import torch

            state = torch.load(self.state_file, map_location="cpu", weights_only=True)
        given = self.model_file or self.state_file
        extractor = FeatureExtractor(self.backbone, "none" if given else self.weights, self.device,
                                     self.precision, seed=self.seed, sobel=self.sobel, state_dict=state,
                                     pool=self.pool, cnn_px=self.cnn_px, depth_weights=self.depth_weights)
        return ResizedExtractor(extractor, self.resize_px) if self.resize_px else extractor


def set_torch_threads(threads: "int | None") -> None:
    """Torch's threads in this worker: ``threads``, else the worker's own thread count (``dask worker
    --nthreads``), the Dask way of saying how many cores a worker has (its environment sets OMP to 1). Set
    through ``runtime.set_threads``: the extractor built next keeps it (``configure_threads`` had put the
    machine's usable cores back, so two one-thread workers on two cores ran two threads each)."""
    from ..features.runtime import set_threads

    if not threads:
        try:
            from distributed import get_worker

            threads = get_worker().state.nthreads
        except (ImportError, ValueError):
            return                                 # not on a Dask worker: torch's own setting
    set_threads(int(threads))


@dataclass(frozen=True)
class FeatureJob:
    """One run's feature extraction: its tiles (``raster``), its CNN, the store folder, the features'
    dimension and the batch size (a partition is whole batches of it)."""

    raster: RasterSpec
    extractor: ExtractorSpec
    store: str
    dim: int
    batch_size: int


def describe_device(device: str, precision: str) -> dict:
    """The device and precision a worker runs at for ``--device``/``--precision`` (``auto``: its best)."""
    from ..features.extract import choose_device, choose_precision

    found = choose_device(device)
    return {"device": found.type, "precision": choose_precision(found, precision)}


def extract_partition(part: Partition, job: FeatureJob) -> dict:
    """The features of one partition into the store (``part-NNNNNN.npy``); returns its tile count and seconds."""
    from ..features.extract import extract_features
    from ..io import NpyFile, atomic_path
    from .store import FeatureStore

    t0 = time.perf_counter()
    store = FeatureStore(job.store)
    rows, cols = store.positions(part)
    with cached(job.raster, job.raster.open) as tiled, cached(job.extractor, job.extractor.build) as extractor, \
            atomic_path(store.part_path(part)) as tmp:
        out = NpyFile(tmp, shape=(part.size, job.dim))
        extract_features(tiled, rows, cols, extractor, out, batch_size=job.batch_size)
    return {"tiles": part.size, "seconds": time.perf_counter() - t0}


def assign_partition(part: Partition, features: str, kmeans) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cluster, distance to its centre, first two PCA scores) of the tiles of ``part``, read from the feature
    file ``features``, assigned chunk by chunk as one process assigns them."""
    from ..io import NpyFile

    feats = NpyFile(features)
    labels, dist, scores = [], [], []
    for start in range(part.start, part.stop, kmeans.chunk):
        block = feats[start: min(part.stop, start + kmeans.chunk)]
        lab, d, s = kmeans.assign(block)
        labels.append(lab)
        dist.append(d)
        scores.append(s)
    return np.concatenate(labels), np.concatenate(dist), np.concatenate(scores)
