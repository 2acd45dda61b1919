"""What a run on Dask would cost, from one partition timed: ``probe --plan``.

:func:`time_partition` runs one feature partition as a worker would (the model
built, one tile to warm up, then the partition's batches) and measures the
model's loading time, the partition's time and the process's peak memory.
:func:`estimate` turns that into the run's numbers: the tile count, the
partitions, the feature store's size, the memory per worker and the time for
each worker count, assuming workers like the one timed (each with its own
cores or GPU) and the partitions shared out evenly.
"""
from __future__ import annotations

import math
import time

import numpy as np

from .partitions import partition_tiles
from .worker import ExtractorSpec, RasterSpec


def sample_positions(n_rows: int, n_cols: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` tiles (at most the grid's) in row-major order from the start of the grid's middle row, so the
    partition timed reads the middle of the raster rather than its (often empty) edge."""
    total = n_rows * n_cols
    count = min(count, total)
    start = min((n_rows // 2) * n_cols, total - count)
    ids = np.arange(start, start + count)
    return ids // n_cols, ids % n_cols


def time_partition(raster: RasterSpec, extractor: ExtractorSpec, rows: np.ndarray, cols: np.ndarray,
                   batch_size: int) -> dict:
    """One partition's features, timed in this process: load, partition seconds, peak memory, device."""
    from ..features.extract import extract_features

    t0 = time.perf_counter()
    cnn = extractor.build()
    tiled = raster.open()
    try:
        load_s = time.perf_counter() - t0
        cnn(tiled.read_tiles(int(rows[0]), [int(cols[0])]))              # warm-up, as a worker's first batch
        out = np.empty((len(rows), cnn.dim), np.float32)
        t1 = time.perf_counter()
        extract_features(tiled, rows, cols, cnn, out, batch_size=batch_size)
        seconds = time.perf_counter() - t1
    finally:
        tiled.close()
    return {"tiles": int(len(rows)), "seconds": seconds, "load_s": load_s, "peak_rss_bytes": peak_rss_bytes(),
            "dim": int(cnn.dim), "device": str(cnn.device)}


def peak_rss_bytes() -> int:
    """This process's peak resident memory: VmHWM (its own, even in a process a large one forked and exec'd,
    whose ``ru_maxrss`` starts at the parent's), else ``ru_maxrss``."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)       # bytes on macOS, KiB on Linux


def estimate(tiles: int, timed: dict, batch_size: int, workers=(1, 4, 16)) -> dict:
    """A run of ``tiles`` tiles on each worker count of ``workers``, from ``timed`` (:func:`time_partition`)."""
    per_part = partition_tiles(batch_size)
    parts = math.ceil(tiles / per_part) if tiles else 0
    part_s = timed["seconds"] * per_part / max(1, timed["tiles"])        # a whole partition's time
    store = tiles * timed["dim"] * 4
    return {
        "tiles": int(tiles), "batch_size": int(batch_size), "partition_tiles": per_part, "partitions": parts,
        "feature_dim": timed["dim"], "store_bytes": int(store), "store_gib": round(store / 2 ** 30, 3),
        "partition_s": round(part_s, 3), "model_load_s": round(timed["load_s"], 3),
        "tiles_per_s_per_worker": round(timed["tiles"] / max(timed["seconds"], 1e-9), 1),
        "memory_per_worker_mib": round(timed["peak_rss_bytes"] / 2 ** 20, 1), "device": timed["device"],
        "time_s": {str(w): round(timed["load_s"] + math.ceil(parts / w) * part_s, 1) for w in workers},
        "assumes": "workers like the one timed, each with its own cores or GPU, the partitions shared out evenly; "
                   "the client's gathering and k-means (reading the store about three times) come on top",
    }
