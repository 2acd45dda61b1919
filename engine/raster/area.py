"""Limit a run to part of a raster: a rectangle (``--extent``) or polygons (``--area``).

A tile belongs to the area when its centre lies inside it, so neighbouring
areas never share a tile. The extent is given in the raster's CRS; polygons
come from any vector file OGR reads and are reprojected as needed.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import BadInput


def parse_extent(text: str) -> tuple[float, float, float, float]:
    """'xmin,ymin,xmax,ymax' -> floats, or BadInput."""
    try:
        xmin, ymin, xmax, ymax = (float(v) for v in str(text).split(","))
    except ValueError:
        raise BadInput(f"--extent {text!r}: write xmin,ymin,xmax,ymax in the raster's CRS.") from None
    if not (xmin < xmax and ymin < ymax):
        raise BadInput(f"--extent {text!r}: xmin must be below xmax and ymin below ymax.")
    return xmin, ymin, xmax, ymax


def read_area(path: "str | Path", crs, name: str = "--area") -> "object":
    """The union of the polygons in a vector file, in ``crs`` (a shapely geometry), or BadInput naming
    ``name`` (a missing, damaged or non-vector file, a table without geometry, no CRS, no polygons)."""
    import shapely

    from ..io.vectors import read_vector

    frame = read_vector(path, name, "the polygon(s) to limit the run to", kind="polygon")
    frame = frame[frame.geom_type.isin(["Polygon", "MultiPolygon"])]
    if frame.empty:
        raise BadInput(f"{name} {str(path)!r} has no polygons; give a polygon layer.")
    geoms = shapely.make_valid(frame.to_crs(crs).geometry.to_numpy())
    return shapely.union_all(geoms)


def tiles_inside(tiled, extent: str | None = None, area: "str | Path | None" = None) -> np.ndarray:
    """(n_rows, n_cols) booleans: tiles whose centre is inside the extent and the area."""
    import shapely
    from pyproj import Transformer

    g = tiled.grid
    rows, cols = np.indices(g.shape).reshape(2, -1)
    centre = g.corners(rows, cols).mean(axis=1)          # working CRS
    x, y = centre[:, 0], centre[:, 1]
    inside = np.ones(len(rows), dtype=bool)
    if extent:
        xmin, ymin, xmax, ymax = parse_extent(extent)
        if tiled.warped:                                  # the extent is in the raster's CRS
            x, y = Transformer.from_crs(tiled.working_crs, tiled.crs, always_xy=True).transform(x, y)
        inside &= (x >= xmin) & (x <= xmax) & (y >= ymin) & (y <= ymax)
        x, y = centre[:, 0], centre[:, 1]
    if area:
        geom = read_area(area, tiled.working_crs)
        inside &= shapely.contains_xy(geom, x, y)
    return inside.reshape(g.shape)
