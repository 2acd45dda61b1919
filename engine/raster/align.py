"""Put a second raster on the pixel grid of a first one: the "after" image of a change run on the "before" grid.

Two dates of one place rarely share a grid: another CRS, another resolution, a shifted extent. Tiles can only be
compared when they cover the same ground, so the second raster is warped (bilinear) onto the grid of the first as
a GDAL warped VRT: a small XML file that reads the source window by window, so memory stays flat and nothing is
copied. Pixels of the grid the second raster does not cover read as invalid (an alpha band), so the tiles there
are skipped by their valid share. A raster already on the grid is used as it is.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import BadInput


def same_grid(a, b) -> bool:
    """Whether two open datasets share CRS, size and transform (to a thousandth of a pixel)."""
    if a.crs != b.crs or (a.width, a.height) != (b.width, b.height):
        return False
    return a.transform.almost_equals(b.transform, precision=1e-3 * abs(a.transform.a))


def overlap_share(src, like) -> float:
    """Share of ``like``'s extent that ``src``'s extent covers (0 when they do not meet or cannot be
    transformed into one another)."""
    from rasterio.warp import transform_bounds

    try:
        left, bottom, right, top = transform_bounds(src.crs, like.crs, *src.bounds, densify_pts=21)
    except Exception:  # noqa: BLE001 - CRSs with no transformation between them: no overlap to speak of
        return 0.0
    lb = like.bounds
    w = max(0.0, min(right, lb.right) - max(left, lb.left))
    h = max(0.0, min(top, lb.top) - max(bottom, lb.bottom))
    area = (lb.right - lb.left) * (lb.top - lb.bottom)
    return float(w * h / area) if area > 0 else 0.0


def aligned_raster(path: "str | Path", like, folder: "str | Path", name: str = "RASTER_AFTER") -> tuple[str, bool]:
    """(path to read, warped?): ``path`` itself when it is on ``like``'s grid (an open dataset: a raster or the
    working VRT of a TiledRaster), else a warped VRT of it on that grid written into ``folder``.

    BadInput naming ``name`` when the two do not overlap at all."""
    import rasterio
    import rasterio.shutil
    from rasterio.enums import MaskFlags, Resampling
    from rasterio.vrt import WarpedVRT

    with rasterio.open(path) as src:
        if same_grid(src, like):
            return str(path), False
        if src.crs is None:
            raise BadInput(f"{name} {str(path)!r} has no CRS, so it cannot be put on the grid of the first "
                           "raster; assign its CRS first.")
        share = overlap_share(src, like)
        if share <= 0:
            raise BadInput(f"{name} {str(path)!r} does not overlap the first raster (no common ground in "
                           f"{like.crs.to_string()}); give two images of the same place.")
        flags = src.mask_flag_enums[0] if src.count else []
        alpha = MaskFlags.nodata not in flags and MaskFlags.alpha not in flags
        target = Path(folder) / f"{Path(path).stem}_on_grid.vrt"
        with WarpedVRT(src, crs=like.crs, transform=like.transform, width=like.width, height=like.height,
                       resampling=Resampling.bilinear, add_alpha=alpha) as vrt:
            rasterio.shutil.copy(vrt, str(target), driver="VRT")
    return str(target), True


def absolute(path: "str | Path") -> str:
    """The path a VRT can name its source by from any folder."""
    return os.path.abspath(os.fspath(path))
