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


def zone_labels(city, tile: int, per_zone: int, seed: int) -> tuple[list, list]:
    """``per_zone`` labelled points per zone of a synthetic city (``tests.synthetic``), at the centres of tiles
    of ``tile`` px drawn at random (seeded): (zone names, shapely Points in the city's CRS)."""
    from shapely.geometry import Point

    from tests.synthetic import ZONES

    zone = city.zone_of_tiles(tile)
    rng = np.random.default_rng(seed)
    names, points = [], []
    for z, name in enumerate(ZONES):
        cells = np.argwhere(zone == z)
        for r, c in cells[rng.choice(len(cells), per_zone, replace=False)]:
            names.append(name)
            points.append(Point(*(city.transform * ((c + 0.5) * tile, (r + 0.5) * tile))))
    return names, points
