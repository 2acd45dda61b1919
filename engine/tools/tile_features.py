"""The CNN features of one raster's valid tiles, shared by the tools that score or classify tiles (``similar``,
``classify``): the same tiling, tile selection and feature cache as ``cluster``, so a raster clustered once
is described again from the cache (same raster, tiling, backbone, weights, precision and device)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class TileFeatures:
    """The valid tiles (rows, cols, valid share grid) and their features (an ``NpyFile``, n x dim)."""

    rows: np.ndarray
    cols: np.ndarray
    valid: np.ndarray
    feats: object
    extractor: object
    cache_key: str
    cache_hit: bool
    checksum: str

    @property
    def tile_ids(self) -> np.ndarray:
        return self.rows.astype(np.int64) * self.valid.shape[1] + self.cols.astype(np.int64)

    def record(self) -> dict:
        """What the manifest says about the features."""
        e = self.extractor
        return {"backbone": e.spec.name, "dim": e.dim, "device": str(e.device), "precision": e.precision,
                "weights_file": str(e.weights_path) if e.weights_path else None, "cache_key": self.cache_key,
                "cache_hit": self.cache_hit}


def open_extractor(params):
    """The feature extractor ``params`` ask for (backbone, weights, device, precision, seed): checked before the
    raster is scanned."""
    from ..features.extract import FeatureExtractor

    return FeatureExtractor(params.backbone, params.weights, params.device, params.precision, seed=params.seed)


def select(params, tiled, progress) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, cols, valid share grid) of the tiles ``params`` keep (``min_valid``, ``extent``, ``area``)."""
    from .cluster import select_tiles

    return select_tiles(tiled, params.min_valid, params.extent, params.area, progress, params.raster)


def tile_features(params, tiled, extractor, workdir, progress, selected=None) -> TileFeatures:
    """Compute, or reuse from the cache, the features of the tiles ``selected`` (rows, cols, valid; default: the
    tiles :func:`select` keeps). ``params`` has the tiling, model and cache fields of ``cluster``."""
    from ..io import sha256_file
    from .cluster import _compute_features, default_cache_dir, feature_key

    rows, cols, valid = selected if selected is not None else select(params, tiled, progress)
    checksum = sha256_file(params.raster)
    key = feature_key(checksum, tiled, extractor, params, rows, cols)
    cache_dir = Path(params.cache_dir) if params.cache_dir else default_cache_dir()
    if not params.use_cache:
        cache_dir = Path(workdir)
    progress("features", 0, len(rows), f"{extractor.spec.name} on {extractor.device.type} ({extractor.precision})")
    feats, hit, _ = _compute_features(tiled, rows, cols, extractor, params, cache_dir, key, progress)
    return TileFeatures(rows, cols, valid, feats, extractor, key, hit, checksum)
