"""Morphometrics of the buildings of each tile, as clustering features (``--form``), momepy style.

:func:`form_features` returns one row per tile (a DataFrame indexed like
``tiles``, columns :data:`FORM_COLUMNS`), every value finite so that it can be
standardised and appended to the CNN embedding:

============  ==========================================================  ==================
column        meaning                                                     no building
============  ==========================================================  ==================
form_cov      footprint share of the tile (0-1)                           0
form_count    log(1 + footprints whose centroid lies in the tile)         0
form_size     log(1 + mean full area in m2 of those footprints)           0
form_cos4     mean of cos(4 theta), theta the footprint's angle (mod 90)  0
form_sin4     mean of sin(4 theta)                                        0
form_compact  mean 4 pi area / perimeter^2 of those footprints (0-1)      0
form_space    log(1 + mean distance in m to the nearest other footprint)  log(1 + tile side)
============  ==========================================================  ==================

The orientation enters as the mean unit vector of 4 theta, so that 0 and 90
degrees (one grid) are the same and an empty tile or a tile of mixed
orientations sits at the centre; ``bldg_orien``'s fold to 0-45 degrees would
lose the sign of the deviation. Distances and areas are in the units of the
(metric) CRS of ``tiles`` and ``buildings``, which must be the same.
"""
from __future__ import annotations

import numpy as np

from .measures import _clean, _clipped, _cov, _geoms, _index, _owner

FORM_COLUMNS = ("form_cov", "form_count", "form_size", "form_cos4", "form_sin4", "form_compact", "form_space")


def _angles(b) -> np.ndarray:
    """Angle (radians, mod pi/2) of the first edge of each footprint's minimum rotated rectangle (NaN: none)."""
    import shapely

    out = np.full(len(b), np.nan)
    if len(b) == 0:
        return out
    rect = shapely.minimum_rotated_rectangle(b)
    poly = shapely.get_type_id(rect) == 3
    ring = shapely.get_exterior_ring(rect[poly])
    p0 = shapely.get_coordinates(shapely.get_point(ring, 0))
    p1 = shapely.get_coordinates(shapely.get_point(ring, 1))
    out[np.flatnonzero(poly)] = np.arctan2(p1[:, 1] - p0[:, 1], p1[:, 0] - p0[:, 0]) % (np.pi / 2)
    return out


def _nearest_other(b) -> np.ndarray:
    """Distance from each footprint to the nearest other one (NaN when it is alone)."""
    import shapely

    n = len(b)
    out = np.full(n, np.nan)
    if n < 2:
        return out
    src, dst = shapely.STRtree(b).query_nearest(b, exclusive=True, all_matches=False)
    out[src] = shapely.distance(b[src], b[dst])
    return out


def form_features(tiles, buildings) -> "pandas.DataFrame":  # noqa: F821
    """The :data:`FORM_COLUMNS` of each tile (see the module docstring); ``tiles`` and ``buildings`` in one
    metric CRS."""
    import pandas as pd
    import shapely

    t = _geoms(tiles)
    b, _ = _clean(buildings)
    n = len(t)
    owner = _owner(t, b)
    side = np.sqrt(shapely.area(t)) if n else np.zeros(0)

    def mean_of(values):
        ok = (owner >= 0) & np.isfinite(values)
        cnt = np.bincount(owner[ok], minlength=n)
        tot = np.bincount(owner[ok], weights=values[ok], minlength=n)
        return np.divide(tot, cnt, out=np.full(n, np.nan), where=cnt > 0)

    count = np.bincount(owner[owner >= 0], minlength=n).astype(np.float64)
    area = shapely.area(b)
    theta = _angles(b)
    perim = shapely.length(b)
    compact = np.divide(4 * np.pi * area, perim ** 2, out=np.full(len(b), np.nan), where=perim > 0)
    space = mean_of(_nearest_other(b))
    cols = {
        "form_cov": _cov(_clipped(t, b, shapely.area), t),
        "form_count": np.log1p(count),
        "form_size": np.log1p(np.nan_to_num(mean_of(area), nan=0.0)),
        "form_cos4": np.nan_to_num(mean_of(np.cos(4 * theta)), nan=0.0),
        "form_sin4": np.nan_to_num(mean_of(np.sin(4 * theta)), nan=0.0),
        "form_compact": np.nan_to_num(mean_of(compact), nan=0.0),
        "form_space": np.log1p(np.where(np.isfinite(space), space, side)),
    }
    return pd.DataFrame(cols, index=_index(tiles), columns=list(FORM_COLUMNS))
