"""Building polygons from a mask, streamed block by block and merged across block borders.

:class:`BlockPolygonizer` takes the mask one band of rows at a time (any height,
full width), cuts it into ``block`` x ``block`` squares and polygonises each with
:func:`.outlines.mask_polygons` in *pixel* coordinates, so every vertex is an
integer and pieces that meet at a block border share exact edges. A piece that
touches an inner block border is held back; once its neighbours are known the
held pieces are grouped by contact and unioned, so a building straddling a
border comes out as one polygon whatever the block size. Only pieces along
the current band's bottom edge stay held between bands: memory is bounded by
the raster width, not its height.

:func:`clean` then removes holes and specks below ``min_area`` (m2), simplifies
(``simplify`` metres; see :func:`simplify_outlines`) and optionally regularises footprints to
right angles; :func:`buildings_frame` adds ``area`` (m2) and ``orien`` (deg).
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from .outlines import mask_polygons


def _canon(polys: list) -> list:
    """Rings started at a canonical vertex, so a building gives the same vertex list - hence the same
    simplification - whatever the blocks were (the outlines carry no collinear vertex: see :func:`_merge`)."""
    import shapely

    if not polys:
        return []
    return list(shapely.normalize(np.array(polys, dtype=object)))


def _merge(pieces: list) -> list:
    """Union pieces that touch (share an edge) into single polygons; return exploded polygons. The vertices a
    union leaves where the pieces met (collinear, on integer pixel coordinates) are dropped exactly."""
    import shapely

    if len(pieces) <= 1:
        return list(pieces)
    arr = np.array(pieces, dtype=object)
    tree = shapely.STRtree(arr)
    a, b = tree.query(arr, predicate="intersects")
    n = len(arr)
    parent = np.arange(n)

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in zip(a, b):
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    roots = np.array([find(i) for i in range(n)])
    out = []
    for r in np.unique(roots):
        group = arr[roots == r]
        if len(group) == 1:
            out.append(group[0])
            continue
        # tolerance 0 only drops collinear vertices: plain Douglas-Peucker gives the same rings as the
        # topology-preserving simplifier here, in about 60 % of its time
        geom = shapely.simplify(shapely.union_all(group), 0.0, preserve_topology=False)
        out.extend(shapely.get_parts(geom).tolist())       # corner-only contacts stay separate polygons
    return out


class BlockPolygonizer:
    """Feed mask bands (top to bottom, full width) with :meth:`add`; iterate finished polygons (pixel coords).

    ``start_row``: polygonise a band of the raster that starts there (a multiple of ``block``), as a
    partitioned run does: pieces that reach the band's top edge (above which other rows lie) or, after the
    band's last rows, its bottom edge are not finished here; :meth:`band_edges` returns them, merged within
    the band, for :func:`merge_edges` to join with the neighbouring bands' as the blocks of one band are
    joined."""

    def __init__(self, width: int, height: int, block: int = 1024, start_row: int = 0):
        if block < 1:
            raise ValueError("block must be >= 1 px")
        self.width, self.height, self.block = int(width), int(height), int(block)
        self.start_row = int(start_row)
        self._rows: list[np.ndarray] = []
        self._n_rows = 0
        self._r0 = self.start_row      # global row of the first buffered row
        self._carry: list = []         # pieces touching the bottom edge of the previous block row
        self._top: list = []           # pieces touching the top edge of a band that starts below row 0

    def add(self, rows: np.ndarray) -> list:
        """Append mask rows (bool/uint8, shape (n, width)); returns the polygons finished so far."""
        self._rows.append(np.asarray(rows))
        self._n_rows += len(rows)
        done = []
        while self._n_rows >= self.block or (self._n_rows and self._r0 + self._n_rows >= self.height):
            data = np.concatenate(self._rows) if len(self._rows) > 1 else self._rows[0]
            take = min(self.block, len(data))
            done.extend(self._block_row(data[:take]))
            rest = data[take:]
            self._rows = [rest] if len(rest) else []
            self._n_rows = len(rest)
            self._r0 += take
        return done

    def finish(self) -> list:
        """Polygons still held (call after the last rows)."""
        done = []
        if self._n_rows:
            data = np.concatenate(self._rows)
            done.extend(self._block_row(data))
            self._r0 += len(data)
            self._rows, self._n_rows = [], 0
        done.extend(_canon(_merge(self._carry)))
        self._carry = []
        return done

    def band_edges(self) -> list:
        """After the band's last rows (a whole number of blocks, or to the raster's end): the pieces that reach
        its top or bottom edge, merged within the band (not canonical yet: :func:`merge_edges` makes them so)."""
        edges = self._top + self._carry
        self._top, self._carry = [], []
        return edges

    def _block_row(self, data: np.ndarray) -> list:
        import shapely

        r0, r1 = self._r0, self._r0 + len(data)
        final, held = [], list(self._carry)
        for c0 in range(0, self.width, self.block):
            c1 = min(c0 + self.block, self.width)
            pieces = np.array(mask_polygons(data[:, c0:c1], r0, c0), dtype=object)
            if not len(pieces):
                continue
            x0, y0, x1, y1 = shapely.bounds(pieces).T
            inner = ((x0 == c0) & (c0 > 0)) | ((x1 == c1) & (c1 < self.width)) | ((y0 == r0) & (r0 > 0)) \
                | ((y1 == r1) & (r1 < self.height))
            held.extend(pieces[inner].tolist())
            final.extend(pieces[~inner].tolist())
        merged = _merge(held)
        self._carry = []
        for p in merged:
            _, top, _, bottom = shapely.bounds(p)
            if r1 < self.height and bottom == r1:
                self._carry.append(p)         # may continue in the next block row
            elif self.start_row > 0 and top == self.start_row:
                self._top.append(p)           # continues in the band above
            else:
                final.append(p)
        return _canon(final)


def merge_edges(pieces: list) -> list:
    """The buildings made of the edge pieces of all the bands of a raster (:meth:`BlockPolygonizer.band_edges`):
    pieces that touch across a band edge joined, as pieces that touch across a block edge are, canonical."""
    return _canon(_merge(pieces))


def polygons_from_mask(path, block: int = 1024) -> Iterator:
    """Polygons (raster CRS) of the pixels > 0 (and valid) of a single-band mask GeoTIFF, read by blocks."""
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(path) as ds:
        poly = BlockPolygonizer(ds.width, ds.height, block)
        t = ds.transform
        for r0 in range(0, ds.height, block):
            w = Window(0, r0, ds.width, min(block, ds.height - r0))
            m = (ds.read(1, window=w) > 0) & (ds.read_masks(1, window=w) > 0)
            for p in poly.add(m):
                yield to_crs_coords(p, t)
        for p in poly.finish():
            yield to_crs_coords(p, t)


def to_crs_coords(geom, transform):
    """A pixel-coordinate geometry mapped through the raster's affine transform."""
    import shapely

    a, b, c, d, e, f = transform.a, transform.b, transform.c, transform.d, transform.e, transform.f
    return shapely.transform(geom, lambda xy: np.column_stack([a * xy[:, 0] + b * xy[:, 1] + c,
                                                               d * xy[:, 0] + e * xy[:, 1] + f]))


def drop_small_holes(parts: np.ndarray, min_area: float) -> np.ndarray:
    """The polygons ``parts`` without the holes smaller than ``min_area`` (vectorised: every ring at once)."""
    import shapely

    with_holes = np.nonzero(shapely.get_num_interior_rings(parts) > 0)[0]
    if min_area <= 0 or not len(with_holes):
        return parts
    rings, owner = shapely.get_rings(parts[with_holes], return_index=True)
    shell = np.r_[True, owner[1:] != owner[:-1]]            # get_rings lists each exterior first
    keep = shell | (shapely.area(shapely.polygons(rings)) >= min_area)
    out = parts.copy()
    out[with_holes] = shapely.polygons(rings[keep], indices=np.unique(owner[keep], return_inverse=True)[1])
    return out


def _parts(geoms: np.ndarray) -> np.ndarray:
    """``shapely.get_parts``, without copying every polygon when none is a multi-part geometry."""
    import shapely

    return geoms if (shapely.get_type_id(geoms) == 3).all() else shapely.get_parts(geoms)


def regularize(p, tolerance: float = 0.85):
    """The minimum rotated rectangle of ``p`` (a polygon or an array of them) where ``p`` fills at least
    ``tolerance`` of it; else ``p``."""
    import shapely

    rect = shapely.minimum_rotated_rectangle(p)
    rect_area = shapely.area(rect)
    fills = np.divide(shapely.area(p), rect_area, out=np.zeros_like(rect_area, dtype=float), where=rect_area > 0)
    use = (rect_area > 0) & (fills >= tolerance) & (shapely.get_type_id(rect) == 3)
    return np.where(use, rect, p) if np.ndim(use) else (rect if use else p)


def simplify_outlines(parts: np.ndarray, tolerance: float) -> np.ndarray:
    """Douglas-Peucker at ``tolerance``; the topology-preserving simplifier only for the outlines that plain
    Douglas-Peucker leaves invalid or empty (a ring that crosses itself, a small building collapsed).

    The topology-preserving simplifier was most of segment's time outside the model and polygonising; with
    plain Douglas-Peucker shapely's simplify takes a third of it (cProfile of segment on the segment bench's
    city: see the README). On pixel outlines the fallback is rarely needed."""
    import shapely

    out = shapely.simplify(parts, tolerance, preserve_topology=False)
    bad = shapely.is_empty(out) | ~shapely.is_valid(out)
    if bad.any():
        out[bad] = shapely.simplify(parts[bad], tolerance, preserve_topology=True)
    return out


def clean(geoms, min_area: float = 4.0, simplify: float = 0.5, regularize_: bool = False) -> list:
    """Polygons in a metric CRS -> holes and specks below ``min_area`` m2 removed, simplified, regularised.

    Vectorised over all polygons and rings (shapely 2)."""
    import shapely

    parts = _parts(np.asarray(list(geoms), dtype=object))
    parts = drop_small_holes(parts[shapely.area(parts) >= min_area], min_area)
    if simplify > 0:
        parts = simplify_outlines(parts, simplify)
    if regularize_ and len(parts):
        parts = regularize(parts)
    invalid = ~shapely.is_valid(parts)
    if invalid.any():
        parts[invalid] = shapely.make_valid(parts[invalid])
    parts = _parts(parts)
    keep = (shapely.get_type_id(parts) == 3) & (shapely.area(parts) >= min_area)
    return list(parts[keep])


def buildings_frame(polys: list, crs, min_area: float = 4.0, simplify: float = 0.5, regularize_: bool = False):
    """GeoDataFrame (``crs``) of cleaned footprints with ``area`` (m2) and ``orien`` (deg 0-45), measured in
    true ground metres (local UTM for geographic or Web Mercator CRSs)."""
    import geopandas as gpd

    from ..stats.measures import metric_crs, orientation

    g = gpd.GeoSeries(polys, crs=crs)
    if len(g) == 0:
        return gpd.GeoDataFrame({"area": np.zeros(0), "orien": np.zeros(0)}, geometry=g, crs=crs)
    mcrs = metric_crs(g)
    gm = g if g.crs == mcrs else g.to_crs(mcrs)
    cleaned = gpd.GeoSeries(clean(gm.values, min_area, simplify, regularize_), crs=mcrs)
    frame = gpd.GeoDataFrame({"area": cleaned.area.to_numpy(), "orien": orientation(cleaned).to_numpy()},
                             geometry=cleaned.values, crs=mcrs)
    return frame if mcrs == crs else frame.to_crs(crs)
