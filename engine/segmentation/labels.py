"""Building footprints rasterised onto a raster's pixel grid, one window at a time.

Footprints in any CRS are reprojected to the raster's CRS once
(:func:`footprints_on_grid`); each window is then burnt with
``rasterio.features.rasterize`` using only the footprints its bounds touch
(spatial index), so memory follows the window, never the raster.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from rasterio.features import rasterize
from rasterio.windows import Window
from rasterio.windows import transform as window_transform


def _dataset_of(tiled_or_path):
    ds = getattr(tiled_or_path, "dataset", None)
    return ds if ds is not None else None


def footprints_on_grid(footprints, crs, name: str = "--buildings", warnings: list | None = None):
    """Footprint polygons (GeoSeries) in ``crs``, from a path, a GeoDataFrame or a GeoSeries (BadInput if unusable)."""
    import geopandas as gpd

    from ..errors import BadInput
    from ..stats.measures import read_buildings

    if isinstance(footprints, (str, Path)):
        return read_buildings(footprints, crs, name, warnings=warnings)
    geoms = footprints.geometry if isinstance(footprints, gpd.GeoDataFrame) else footprints
    if geoms.crs is None:
        raise BadInput(f"{name}: the footprints have no CRS; set one (e.g. EPSG:4326) before training.")
    geoms = geoms[geoms.notna() & ~geoms.is_empty & geoms.geom_type.isin(["Polygon", "MultiPolygon"])]
    return gpd.GeoSeries(geoms.make_valid(), crs=geoms.crs).to_crs(crs)


def rasterize_window(geoms, transform, window: Window) -> np.ndarray:
    """uint8 (h, w) mask, 1 inside a footprint, for ``window`` of a grid with ``transform``.

    ``geoms`` is a GeoSeries already in the grid's CRS (its spatial index picks the footprints).
    """
    import shapely

    h, w = int(window.height), int(window.width)
    tr = window_transform(window, transform)
    x0, y0 = tr @ (0, 0)
    x1, y1 = tr @ (w, h)
    idx = geoms.sindex.query(shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))
    if len(idx) == 0:
        return np.zeros((h, w), dtype=np.uint8)
    return rasterize(((g, 1) for g in geoms.values[idx]), out_shape=(h, w), transform=tr, fill=0,
                     dtype="uint8")


def rasterize_footprints(tiled_or_path, footprints, window: Window) -> np.ndarray:
    """uint8 (h, w) building mask of ``window`` on the raster grid (1 building, 0 not).

    ``tiled_or_path``: a ``TiledRaster`` (its working grid) or a raster path;
    ``footprints``: a vector path, GeoDataFrame or GeoSeries in any CRS.
    """
    import rasterio

    ds = _dataset_of(tiled_or_path)
    if ds is None:
        with rasterio.open(str(tiled_or_path)) as src:
            return rasterize_window(footprints_on_grid(footprints, src.crs), src.transform, window)
    return rasterize_window(footprints_on_grid(footprints, ds.crs), ds.transform, window)
