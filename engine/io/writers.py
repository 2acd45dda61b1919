"""GeoPackage and GeoTIFF writers of run outputs."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import BadInput

# GeoPackage 1.3 opens without warnings in QGIS 3.22's GDAL 3.6 (newer GDALs write 1.4 by default).
GPKG_OPTIONS = {"VERSION": "1.3"}


def write_gpkg_chunks(path: "str | Path", layer: str, frames: Iterable, crs) -> int:
    """Write GeoDataFrames one after another into ``layer`` of a GeoPackage; returns rows written."""
    import pyogrio

    n = 0
    for i, gdf in enumerate(frames):
        gdf = gdf.set_crs(crs, allow_override=True)
        pyogrio.write_dataframe(gdf, str(path), layer=layer, driver="GPKG", append=i > 0,
                                dataset_options=GPKG_OPTIONS if i == 0 else None,
                                layer_options={"SPATIAL_INDEX": "YES"})
        n += len(gdf)
    return n


def write_cluster_tif(path: "str | Path", labels: np.ndarray, transform, crs, colors: list) -> None:
    """A uint8 GeoTIFF, one pixel per tile, 255 = no tile, with a colour table."""
    import rasterio

    from ..contract.limits import MAX_K

    if labels.max(initial=0) >= MAX_K:
        raise BadInput(f"more than {MAX_K} clusters cannot be written to the cluster GeoTIFF.")
    data = np.where(labels < 0, 255, labels).astype(np.uint8)
    profile = dict(driver="GTiff", width=data.shape[1], height=data.shape[0], count=1, dtype="uint8",
                   crs=crs, transform=transform, nodata=255, compress="deflate")
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
        dst.write_colormap(1, {i: (*c, 255) for i, c in enumerate(colors)} | {255: (0, 0, 0, 0)})
        dst.set_band_description(1, "cluster")


def write_value_tif(path: "str | Path", values: np.ndarray, transform, crs, description: str) -> None:
    """A float32 GeoTIFF, one pixel per tile, NaN = no tile (a similarity or a probability map)."""
    import rasterio

    data = np.asarray(values, dtype=np.float32)
    profile = dict(driver="GTiff", width=data.shape[1], height=data.shape[0], count=1, dtype="float32",
                   crs=crs, transform=transform, nodata=float("nan"), compress="deflate")
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
        dst.set_band_description(1, description)
