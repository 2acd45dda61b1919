"""Per-tile statistics read from rasters: mean NDVI and population density.

Both functions take tiles in any CRS (a GeoSeries or GeoDataFrame with a CRS)
and reproject the *tiles* to the raster's CRS, never the raster, so values are
read exactly as stored. Reads are windowed, one tile's bounding window at a
time, so memory stays flat however large the raster is.

- ``ndvi``: mean of (NIR - red) / (NIR + red) over the valid pixels whose
  centres fall inside the tile. A pixel is valid when neither band is nodata
  (or masked by the dataset's mask) and NIR + red > 0. NaN where a tile has no
  valid pixel.
- ``pop_dens``: people per km2 from a raster of counts per cell (WorldPop
  style). A cell partly inside a tile contributes its count times the share of
  the cell's area inside the tile (shares computed in the raster's CRS); the
  sum is divided by the tile's true ground area (local UTM). Nodata cells count
  as no people; NaN where a tile does not overlap any valid cell.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import BadInput


def _geoseries(tiles):
    import geopandas as gpd

    if isinstance(tiles, gpd.GeoDataFrame):
        tiles = tiles.geometry
    if not isinstance(tiles, gpd.GeoSeries):
        raise TypeError("tiles must be a GeoSeries or GeoDataFrame with a CRS")
    if tiles.crs is None:
        raise BadInput("the tiles have no CRS; the run's GeoPackage must record one.")
    return tiles


def _open(path, name: str):
    """The open raster ``name`` (BadInput when missing, unreadable, damaged or cut, or without a CRS; it names
    the parameter of flag ``name``, code ``not_found`` or ``bad_format``)."""
    from ..contract import problems as P

    try:
        return _open_checked(path, name)
    except BadInput as exc:
        if exc.param or not name.startswith("--"):
            raise
        code = P.BAD_FORMAT if Path(path).exists() else P.NOT_FOUND
        raise BadInput(str(exc), param=name[2:].replace("-", "_"), code=code) from None


def _open_checked(path, name: str):
    import rasterio

    from ..raster.tiling import probe_raster, unreadable_raster

    path = Path(path)
    if not path.exists():
        raise BadInput(f"{name} {str(path)!r}: no such file. Give a GeoTIFF (or another GDAL raster).")
    label = f"{name} {str(path)!r}"
    try:
        src = rasterio.open(path)
    except Exception as exc:  # noqa: BLE001 - any GDAL failure means unreadable, said in our words
        raise unreadable_raster(path, label, exc) from None
    try:
        probe_raster(src, label)                     # a cut file fails here, not half-way through the tiles
    except BadInput:
        src.close()
        raise
    if src.crs is None:
        src.close()
        raise BadInput(f"{name} {str(path)!r} has no CRS; assign one (e.g. gdal_edit.py -a_srs EPSG:...).")
    return src


def _tile_windows(src, geoms):
    """(index, window, polygon) for each tile that overlaps the raster; polygons in the raster's CRS."""
    import rasterio.errors
    import rasterio.windows
    import shapely

    full = rasterio.windows.Window(0, 0, src.width, src.height)
    bounds = shapely.bounds(geoms)
    for i, (g, b) in enumerate(zip(geoms, bounds, strict=True)):
        if g is None or not np.all(np.isfinite(b)):
            continue
        w = rasterio.windows.from_bounds(*b, transform=src.transform)
        w = w.round_offsets(op="floor").round_lengths(op="ceil")
        # from_bounds rounds outwards only approximately: pad one pixel, then clip to the raster
        w = rasterio.windows.Window(w.col_off - 1, w.row_off - 1, w.width + 2, w.height + 2)
        try:
            w = w.intersection(full)
        except rasterio.errors.WindowError:
            continue
        if w.width <= 0 or w.height <= 0:
            continue
        yield i, w, g


def check_bands(raster_path, nir_band: int, red_band: int, name: str = "--ndvi-raster") -> None:
    """BadInput (naming --nir-band or --red-band) unless both bands exist in the raster (1-based band numbers)."""
    from ..contract import problems as P

    with _open(raster_path, name) as src:
        for flag, b in (("--nir-band", nir_band), ("--red-band", red_band)):
            if not 1 <= int(b) <= src.count:
                raise BadInput(f"{flag} {b}: {str(raster_path)!r} has bands 1 to {src.count}.",
                               param=flag[2:].replace("-", "_"), code=P.OUT_OF_RANGE)
        if int(nir_band) == int(red_band):
            raise BadInput(f"--nir-band and --red-band are both {nir_band}; give two different bands.",
                           param="red_band", code=P.BAD_FORMAT)


def ndvi(raster_path, tiles, nir_band: int, red_band: int) -> "pandas.Series":  # noqa: F821
    """Mean NDVI over the valid pixels of each tile, as Series ``ndvi`` (NaN where none)."""
    import pandas as pd
    from rasterio.features import geometry_mask

    tiles = _geoseries(tiles)
    check_bands(raster_path, nir_band, red_band)
    out = np.full(len(tiles), np.nan)
    with _open(raster_path, "--ndvi-raster") as src:
        geoms = np.asarray(tiles.to_crs(src.crs).values)
        for i, w, g in _tile_windows(src, geoms):
            data = src.read([int(nir_band), int(red_band)], window=w, masked=True).astype(np.float64)
            nir, red = data[0], data[1]
            inside = ~geometry_mask([g], out_shape=nir.shape, transform=src.window_transform(w))
            valid = inside & ~np.ma.getmaskarray(nir) & ~np.ma.getmaskarray(red)
            n, r = nir.filled(0.0), red.filled(0.0)
            total = n + r
            valid &= total > 0
            if valid.any():
                out[i] = float(((n[valid] - r[valid]) / total[valid]).mean())
    return pd.Series(out, index=tiles.index, name="ndvi")


def ground_area_m2(tiles) -> np.ndarray:
    """True ground area of each tile in m2 (geographic and Web Mercator tiles projected to local UTM)."""
    from .measures import to_metric

    return np.asarray(to_metric(_geoseries(tiles)).area, dtype=np.float64)


def pop_dens(pop_path, tiles) -> "pandas.Series":  # noqa: F821
    """People per km2 in each tile, area-weighted from counts per cell, as Series ``pop_dens``."""
    import pandas as pd
    import shapely

    tiles = _geoseries(tiles)
    area_km2 = ground_area_m2(tiles) / 1e6
    out = np.full(len(tiles), np.nan)
    with _open(pop_path, "--population") as src:
        geoms = np.asarray(tiles.to_crs(src.crs).values)
        for i, w, g in _tile_windows(src, geoms):
            data = src.read(1, window=w, masked=True).astype(np.float64)
            t = src.window_transform(w)
            h, wd = data.shape
            cols, rows = np.meshgrid(np.arange(wd), np.arange(h))
            x0, y0 = t * (cols.ravel(), rows.ravel())
            x1, y1 = t * (cols.ravel() + 1, rows.ravel() + 1)
            cells = shapely.box(np.minimum(x0, x1), np.minimum(y0, y1), np.maximum(x0, x1), np.maximum(y0, y1))
            share = shapely.area(shapely.intersection(cells, g)) / shapely.area(cells)
            valid = ~np.ma.getmaskarray(data).ravel() & (share > 0)
            if valid.any():
                people = float((data.filled(0.0).ravel()[valid] * share[valid]).sum())
                out[i] = people / area_km2[i] if area_km2[i] > 0 else np.nan
    return pd.Series(out, index=tiles.index, name="pop_dens")
