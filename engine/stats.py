"""Urban-form statistics per tile, momepy style: pure functions returning named Series.

So far what clustering runs need to say whether clusters follow urban form:
building coverage per tile and eta-squared (the share of a statistic's
variance the clusters explain). Geometry is vectorised with shapely 2 and an
STRtree; there is no Python loop per building.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import BadInput


def read_buildings(path: "str | Path", crs, name: str = "--buildings"):
    """Polygon footprints of a vector file, valid and reprojected to ``crs`` (GeoSeries).

    Other geometry types are dropped; invalid polygons are repaired.
    """
    import geopandas as gpd
    import shapely

    path = Path(path)
    if not path.exists():
        raise BadInput(f"{name} {str(path)!r}: no such file. Give a polygon layer (GeoPackage, GeoJSON, Shapefile).")
    try:
        gdf = gpd.read_file(path)
    except Exception as exc:  # noqa: BLE001 - any OGR failure means unreadable
        raise BadInput(f"{name} {str(path)!r} cannot be read as a vector layer ({exc}).") from None
    if gdf.crs is None:
        raise BadInput(f"{name} {str(path)!r} has no CRS; set one (e.g. in QGIS: Layer Properties > Source).")
    geoms = gdf.geometry[gdf.geometry.notna()]
    geoms = geoms[geoms.geom_type.isin(["Polygon", "MultiPolygon"])]
    if len(geoms) == 0:
        raise BadInput(f"{name} {str(path)!r} has no polygons; give building footprints.")
    fixed = shapely.make_valid(geoms.values)
    return gpd.GeoSeries(fixed, crs=gdf.crs).to_crs(crs)


def bldg_cov(tiles, buildings) -> "pandas.Series":  # noqa: F821
    """Share of each tile covered by building footprints (0-1), as Series ``bldg_cov``.

    ``tiles`` and ``buildings`` are GeoSeries in one CRS. Footprints that
    overlap each other are counted twice (OSM footprints rarely do); the
    result is clipped to 1.
    """
    import pandas as pd
    import shapely

    t = np.asarray(tiles.values if hasattr(tiles, "values") else tiles)
    b = np.asarray(buildings.values if hasattr(buildings, "values") else buildings)
    area = np.zeros(len(t))
    if len(b):
        tree = shapely.STRtree(b)
        ti, bi = tree.query(t, predicate="intersects")
        if len(ti):
            inter = shapely.area(shapely.intersection(t[ti], b[bi]))
            area = np.bincount(ti, weights=inter, minlength=len(t))
    tile_area = shapely.area(t)
    cov = np.divide(area, tile_area, out=np.zeros(len(t)), where=tile_area > 0)
    return pd.Series(np.clip(cov, 0.0, 1.0), index=getattr(tiles, "index", None), name="bldg_cov")


def eta_squared(labels, values) -> float:
    """Share of the variance of ``values`` explained by the groups in ``labels`` (0-1)."""
    labels = np.asarray(labels)
    y = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(y)
    labels, y = labels[ok], y[ok]
    if len(y) == 0:
        return float("nan")
    total = ((y - y.mean()) ** 2).sum()
    if total <= 0:
        return 0.0
    _, inv = np.unique(labels, return_inverse=True)
    n = np.bincount(inv)
    means = np.bincount(inv, weights=y) / n
    return float((n * (means - y.mean()) ** 2).sum() / total)
