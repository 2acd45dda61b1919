"""Independent ground-truth measures used by tests and by `make eval`.

Computed with geopandas overlays, not with engine code, so they check the
engine rather than repeat it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def eta_squared(labels: np.ndarray, y: np.ndarray) -> float:
    """Share of the variance of ``y`` explained by the groups in ``labels``."""
    labels, y = np.asarray(labels), np.asarray(y, dtype=np.float64)
    total = ((y - y.mean()) ** 2).sum()
    between = sum((labels == k).sum() * (y[labels == k].mean() - y.mean()) ** 2 for k in np.unique(labels))
    return float(between / total) if total > 0 else 0.0


def random_eta_squared(labels: np.ndarray, y: np.ndarray, repeats: int = 50, seed: int = 0) -> float:
    """Median eta-squared of randomly permuted labels (same cluster sizes): the chance level."""
    rng = np.random.default_rng(seed)
    return float(np.median([eta_squared(rng.permutation(labels), y) for _ in range(repeats)]))


def building_coverage(tiles, footprints: "str | Path") -> np.ndarray:
    """Footprint area / tile area per tile (tiles: GeoDataFrame with tile_id)."""
    import geopandas as gpd

    b = gpd.read_file(footprints).to_crs(tiles.crs)
    b = b[b.geom_type.isin(["Polygon", "MultiPolygon"])]
    inter = gpd.overlay(tiles[["tile_id", "geometry"]], b[["geometry"]], how="intersection")
    area = inter.assign(a=inter.area).groupby("tile_id").a.sum()
    return tiles.tile_id.map(area).fillna(0).to_numpy() / tiles.area.to_numpy()
