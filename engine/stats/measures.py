"""Urban-form statistics per tile, momepy style: pure functions returning named Series.

Every statistic takes ``tiles`` (GeoSeries/GeoDataFrame of polygons) and a
layer (GeoSeries/GeoDataFrame) already in ONE metric CRS (project with
:func:`to_metric` first) and returns a pandas Series indexed like ``tiles``
and named like the output field:

============  =====================================================  =================
field         meaning                                                no data
============  =====================================================  =================
bldg_count    footprints whose centroid lies in the tile              0
bldg_area     m2 of footprint clipped to the tile                     0
bldg_cov      bldg_area / tile area (0-1)                             0
bldg_mean     mean full area (m2) of the counted footprints           NaN (none counted)
bldg_orien    mean orientation (deg, 0-45) of the counted footprints  NaN (none counted)
road_len      m of road clipped to the tile                           0
road_dist     m from the tile centroid to the nearest road            NaN (no roads)
major_dist    m from the tile centroid to the nearest major road      NaN (no major road)
============  =====================================================  =================

A centroid on the edge shared by two tiles is counted once, in the tile that
comes first in ``tiles``. Orientation follows momepy: the angle of the first
edge of the footprint's minimum rotated rectangle, folded to its deviation
from the nearest cardinal direction (0-45 degrees).

Warnings (empty layer, no overlap with the tiles, repaired geometries,
dropped geometry types, no major road) are plain strings. Every function that
may produce one takes ``warnings=``: give a list and the strings are appended
to it (the caller shows them and records them in the manifest); leave it
``None`` and they are issued with :func:`warnings.warn` as
:class:`StatsWarning`. A road layer without the class attribute makes
:func:`major_dist` raise :class:`MissingAttribute`; :func:`road_stats` then
omits the column and reports the message (it names ``--road-field``).

Geometry is vectorised with shapely 2 arrays, STRtree queries and
``numpy.bincount``; there is no Python loop per building or road.
"""
from __future__ import annotations

import warnings as _warnings
from pathlib import Path

import numpy as np

from ..errors import BadInput
from ..io.vectors import LINEAR as _LINEAR
from ..io.vectors import POLYGONAL as _POLYGONAL

MAJOR_ROADS = ("motorway", "motorway_link", "trunk", "trunk_link", "primary", "primary_link",
               "secondary", "secondary_link")
BUILDING_COLUMNS = ("bldg_count", "bldg_area", "bldg_cov", "bldg_mean", "bldg_orien")
ROAD_COLUMNS = ("road_len", "road_dist", "major_dist")


class MissingAttribute(KeyError):
    """The road layer has no class attribute for major roads; the caller omits major_dist."""

    def __init__(self, field: str, available=(), name: str = "--roads"):
        self.field = field
        self.available = list(available)
        shown = ", ".join(map(str, self.available[:12])) or "none"
        self.message = (f"{name}: no attribute {field!r} to tell major roads, so major_dist is left out; "
                        f"set --road-field to the road class attribute (the layer has: {shown}).")
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


class StatsWarning(UserWarning):
    """A statistics warning issued when the caller gave no ``warnings`` list."""


def _warn(msg: str, warnings: "list | None") -> None:
    if warnings is None:
        _warnings.warn(msg, StatsWarning, stacklevel=3)
    else:
        warnings.append(msg)


# --------------------------------------------------------------------------------------------- CRS


def metric_crs(data, crs_hint=None):
    """The metric CRS for ``data``: ``crs_hint`` (or the data's CRS) when projected in metres and not a
    Mercator; else the WGS84 UTM zone of the data's centre."""
    from pyproj import CRS, Transformer

    from ..raster.tiling import _is_mercator, utm_crs_for

    src = getattr(data, "crs", None)
    crs = CRS.from_user_input(crs_hint) if crs_hint is not None else src
    if crs is None:
        raise BadInput("the layer has no CRS; set one (e.g. in QGIS: Layer Properties > Source).")
    if crs.is_projected and not _is_mercator(crs):
        unit = (crs.axis_info[0].unit_name or "").lower() if crs.axis_info else ""
        if unit in ("metre", "meter", "m"):
            return crs
    if src is None:
        raise BadInput("the layer has no CRS; set one (e.g. in QGIS: Layer Properties > Source).")
    x0, y0, x1, y1 = data.total_bounds
    if not np.all(np.isfinite([x0, y0, x1, y1])):
        raise BadInput("the layer is empty, so no local UTM zone can be chosen for it.")
    lon, lat = Transformer.from_crs(src, "EPSG:4326", always_xy=True).transform(float(x0 + x1) / 2, float(y0 + y1) / 2)
    return utm_crs_for(lon, lat)


def to_metric(data, crs_hint=None):
    """``data`` (GeoSeries/GeoDataFrame) in true ground metres (see :func:`metric_crs`).

    Geographic and Web Mercator inputs go to the local UTM zone of their
    centre; a projected metric CRS is kept. Give ``crs_hint`` (e.g. the run's
    working CRS) to pick the target CRS; project the other layers to the
    result's ``.crs`` so that all are in one CRS."""
    if getattr(data, "crs", None) is None:
        raise BadInput("the layer has no CRS; set one (e.g. in QGIS: Layer Properties > Source).")
    target = metric_crs(data, crs_hint)
    return data if data.crs == target else data.to_crs(target)


# ------------------------------------------------------------------------------------------ reading


def _split_source(path, layer):
    """A QGIS-style 'file.gpkg|layername=x' source as (Path, layer) (engine.io.vectors.split_source)."""
    from ..io.vectors import split_source

    return split_source(path, layer)


def _keep_types(geoms, types, name: str, noun: str, warnings):
    """(mask of features of the wanted types, made valid geometry array); reports the rest."""
    keep, g, report = sort_types(geoms, types)
    for msg in type_messages(report, name, noun):
        _warn(msg, warnings)
    return keep, g


def sort_types(geoms, types) -> tuple[np.ndarray, np.ndarray, dict]:
    """(mask of features of the wanted types, made valid geometry array, report): the report counts the
    features of other types by kind (``other``), the invalid geometries repaired (``invalid``) and those with
    nothing of the wanted types left (``lost``). Reports of parts of a layer add up (:func:`add_reports`)."""
    import shapely

    geoms = np.asarray(geoms, dtype=object)
    present = ~(shapely.is_missing(geoms) | shapely.is_empty(geoms))
    gt = shapely.get_type_id(geoms)
    wanted_ids = {"Polygon": 3, "MultiPolygon": 6, "LineString": 1, "MultiLineString": 5, "LinearRing": 2}
    ids = [wanted_ids[t] for t in types]
    keep = present & np.isin(gt, ids)
    other = present & ~keep
    report = {"other": {}, "invalid": 0, "lost": 0}
    if other.any():
        type_names = np.array(["Point", "LineString", "LinearRing", "Polygon", "MultiPoint", "MultiLineString",
                               "MultiPolygon", "GeometryCollection"])
        kinds, n = np.unique(type_names[gt[other]], return_counts=True)
        report["other"] = {str(k): int(c) for k, c in zip(kinds, n, strict=True)}
    g = geoms[keep]
    invalid = ~shapely.is_valid(g)
    if invalid.any():
        g = g.copy()
        g[invalid] = _valid_parts(shapely.make_valid(g[invalid]), types)
        lost = shapely.is_empty(g)
        report["invalid"], report["lost"] = int(invalid.sum()), int(lost.sum())
        kept = np.flatnonzero(keep)
        keep = keep.copy()
        keep[kept[lost]] = False
        g = g[~lost]
    return keep, g, report


def add_reports(a: dict, b: dict) -> dict:
    """Two :func:`sort_types` reports as one (of both parts of a layer)."""
    other = dict(a["other"])
    for kind, n in b["other"].items():
        other[kind] = other.get(kind, 0) + n
    return {"other": other, "invalid": a["invalid"] + b["invalid"], "lost": a["lost"] + b["lost"]}


def type_messages(report: dict, name: str, noun: str) -> list[str]:
    """The warnings of a :func:`sort_types` report: features of other types ignored, geometries repaired."""
    out = []
    if report["other"]:
        listed = ", ".join(f"{c} {k}" for k, c in sorted(report["other"].items()))
        out.append(f"{name}: {sum(report['other'].values())} feature(s) that are not {noun} ignored ({listed}).")
    n, n_lost = report["invalid"], report["lost"]
    if n:
        extra = f" ({n_lost} had no {noun} left and {'was' if n_lost == 1 else 'were'} dropped)" if n_lost else ""
        out.append(f"{name}: {n} invalid geometr{'y' if n == 1 else 'ies'} repaired with make_valid{extra}.")
    return out


def _valid_parts(fixed, types):
    """Keep only the parts of the wanted types of make_valid results (collections), vectorised."""
    import shapely

    fixed = np.asarray(fixed, dtype=object)
    poly = "Polygon" in types
    single, multi = (3, 6) if poly else (1, 5)
    gt = shapely.get_type_id(fixed)
    mixed = ~np.isin(gt, [single, multi])
    if not mixed.any():
        return fixed
    parts, idx = shapely.get_parts(fixed[mixed], return_index=True)
    ok = shapely.get_type_id(parts) == single
    out = np.empty(int(mixed.sum()), dtype=object)
    out[:] = shapely.from_wkt("POLYGON EMPTY" if poly else "LINESTRING EMPTY")
    if ok.any():
        maker = shapely.multipolygons if poly else shapely.multilinestrings
        maker(parts[ok], indices=idx[ok], out=out)       # collections with no such part stay empty
    fixed = fixed.copy()
    fixed[mixed] = out
    return fixed


def read_buildings(path: "str | Path", crs, name: str = "--buildings", *, layer: "str | None" = None,
                   warnings: "list | None" = None, allow_empty: bool = False, what: str = "building footprints",
                   assume_crs=None, rows: "slice | None" = None, report: "dict | None" = None):
    """Polygon footprints of a vector file, valid and reprojected to ``crs`` (GeoSeries).

    Other geometry types are dropped and reported, invalid polygons are
    repaired with make_valid and counted in a warning (see the module
    docstring for ``warnings``). A file with several layers takes ``layer``
    (or 'file.gpkg|layername=NAME'); without it the only polygon layer, or the
    only one named like buildings. BadInput (naming ``name``, saying it wants
    ``what``; see engine.io.vectors): missing, damaged or non-vector file, a
    table without geometry, no CRS (unless ``assume_crs``: then a warning),
    and - unless ``allow_empty`` (then an empty GeoSeries; the empty layer is
    reported by :func:`building_stats`, not here) - a layer with no polygons.

    ``rows``: only these features (a partition of the layer); ``report``: a dict that gets the
    :func:`sort_types` report of the features dropped or repaired instead of their warnings (a partition's,
    to be added up with the others').
    """
    import geopandas as gpd

    from ..io.vectors import read_vector

    gdf = read_vector(path, name, what, kind="polygon", layer=layer, assume_crs=assume_crs, warnings=warnings,
                      rows=rows)
    keep, geoms, found = sort_types(gdf.geometry.values, _POLYGONAL)
    if len(geoms) == 0 and not allow_empty:
        raise BadInput(f"{name} {str(path)!r} has no polygons; give {what}.")
    if report is not None:
        report.update(found)
    for msg in [] if report is not None else type_messages(found, name, "polygons"):
        _warn(msg, warnings)
    out = gpd.GeoSeries(geoms, index=gdf.index[keep], crs=gdf.crs)
    return out.to_crs(crs) if crs is not None else out


def read_roads(path: "str | Path", crs, name: str = "--roads", *, layer: "str | None" = None,
               warnings: "list | None" = None, assume_crs=None):
    """Line features of a vector file with their attributes, valid and reprojected to ``crs`` (GeoDataFrame).

    Other geometry types are dropped and reported; invalid lines are repaired
    with make_valid and counted in a warning; an empty layer gives an empty
    GeoDataFrame (reported by :func:`road_stats`, not here). BadInput as :func:`read_buildings` (missing,
    damaged or non-vector file, a table without geometry, no CRS unless ``assume_crs``, several layers
    without a name).
    """
    import geopandas as gpd

    from ..io.vectors import read_vector

    gdf = read_vector(path, name, "road lines", kind="line", layer=layer, assume_crs=assume_crs,
                      warnings=warnings)
    keep, geoms = _keep_types(gdf.geometry.values, _LINEAR, name, "lines", warnings)
    out = gdf.loc[keep].copy()
    out = out.set_geometry(gpd.array.from_shapely(geoms, crs=gdf.crs))
    return out.to_crs(crs) if crs is not None else out


# -------------------------------------------------------------------------------------- statistics


def _geoms(layer):
    """A GeoSeries/GeoDataFrame/array as a shapely array."""
    if hasattr(layer, "columns"):
        layer = layer.geometry
    vals = getattr(layer, "values", layer)
    return np.asarray(vals, dtype=object)


def _clean(layer, types=_POLYGONAL, name: str = "", warnings: "list | None" = None):
    """The valid geometries of ``types`` in a layer (shapely array) and their positions in it.

    Missing and empty geometries are skipped; invalid ones repaired with
    make_valid (keeping the parts of ``types``). Other types and repairs are
    reported to ``warnings`` (a throwaway list by default: only
    building_stats and road_stats report)."""
    noun = "polygons" if types == _POLYGONAL else "lines"
    keep, g = _keep_types(_geoms(layer), types, name, noun, [] if warnings is None else warnings)
    return g, np.flatnonzero(keep)


def _index(tiles):
    return getattr(tiles, "index", None)


def _series(values, tiles, name):
    import pandas as pd

    return pd.Series(values, index=_index(tiles), name=name)


def _owner(t, b) -> np.ndarray:
    """For each building of ``b``, the position of the tile of ``t`` holding its centroid (-1: none).

    A centroid on an edge shared by several tiles goes to the first of them."""
    import shapely

    owner = np.full(len(b), -1, dtype=np.int64)
    if len(b) == 0 or len(t) == 0:
        return owner
    c = shapely.centroid(b)
    ci, ti = shapely.STRtree(t).query(c, predicate="intersects")
    if len(ci):
        order = np.lexsort((ti, ci))
        ci, ti = ci[order], ti[order]
        first = np.r_[True, ci[1:] != ci[:-1]]
        owner[ci[first]] = ti[first]
    return owner


def _clipped(t, g, measure):
    """Sum per tile of ``measure`` (shapely.area or shapely.length) of ``g`` clipped to each tile."""
    import shapely

    out = np.zeros(len(t))
    if len(g) == 0 or len(t) == 0:
        return out
    ti, gi = shapely.STRtree(g).query(t, predicate="intersects")
    if len(ti) == 0:
        return out
    tt, gg = t[ti], g[gi]
    shapely.prepare(t)
    inside = shapely.contains_properly(tt, gg)             # whole geometry in the tile: no clipping needed
    vals = np.empty(len(ti))
    vals[inside] = measure(gg[inside])
    vals[~inside] = measure(shapely.intersection(tt[~inside], gg[~inside]))
    return np.bincount(ti, weights=vals, minlength=len(t))


def orientation(buildings) -> "pandas.Series":  # noqa: F821
    """Orientation of each footprint (deg, 0-45) as momepy.orientation: the deviation of its minimum
    rotated rectangle's first edge from the nearest cardinal direction. Series ``orientation``."""
    import pandas as pd

    g = _geoms(buildings)
    return pd.Series(_orientation(g), index=getattr(buildings, "index", None), name="orientation")


def _orientation(g) -> np.ndarray:
    import shapely

    out = np.full(len(g), np.nan)
    if len(g) == 0:
        return out
    ok = ~(shapely.is_missing(g) | shapely.is_empty(g))
    rect = shapely.minimum_rotated_rectangle(g[ok])
    ring = np.where(shapely.get_type_id(rect) == 3, shapely.get_exterior_ring(rect), rect)
    p0 = shapely.get_coordinates(shapely.get_point(ring, 0))
    p1 = shapely.get_coordinates(shapely.get_point(ring, 1))
    if len(p0) != int(ok.sum()) or len(p1) != len(p0):      # degenerate (point-like) footprints: no direction
        has = ~shapely.is_missing(shapely.get_point(ring, 1))
        okpos = np.flatnonzero(ok)
        ok = np.zeros(len(g), bool)
        ok[okpos[has]] = True
        ring = ring[has]
        p0 = shapely.get_coordinates(shapely.get_point(ring, 0))
        p1 = shapely.get_coordinates(shapely.get_point(ring, 1))
    ang = np.degrees(np.arctan2(p1[:, 1] - p0[:, 1], p1[:, 0] - p0[:, 0])) % 90.0   # edge angle folded to [0, 90)
    out[ok] = np.minimum(ang, 90.0 - ang)
    return out


def bldg_count(tiles, buildings) -> "pandas.Series":  # noqa: F821
    """Number of footprints whose centroid lies in each tile, Series ``bldg_count`` (0 where none)."""
    t = _geoms(tiles)
    b, _ = _clean(buildings)
    owner = _owner(t, b)
    return _series(np.bincount(owner[owner >= 0], minlength=len(t)).astype(np.int64), tiles, "bldg_count")


def bldg_area(tiles, buildings) -> "pandas.Series":  # noqa: F821
    """m2 of footprint clipped to each tile, Series ``bldg_area`` (0 where none; overlaps count twice)."""
    import shapely

    t = _geoms(tiles)
    b, _ = _clean(buildings)
    return _series(_clipped(t, b, shapely.area), tiles, "bldg_area")


def bldg_cov(tiles, buildings) -> "pandas.Series":  # noqa: F821
    """Share of each tile covered by building footprints (0-1), as Series ``bldg_cov``.

    ``tiles`` and ``buildings`` are GeoSeries in one CRS. Footprints that
    overlap each other are counted twice (OSM footprints rarely do); the
    result is clipped to 1.
    """
    import shapely

    t = _geoms(tiles)
    b, _ = _clean(buildings)
    return _series(_cov(_clipped(t, b, shapely.area), t), tiles, "bldg_cov")


def _cov(area, t):
    import shapely

    tile_area = shapely.area(t) if len(t) else np.zeros(0)
    cov = np.divide(area, tile_area, out=np.zeros(len(t)), where=tile_area > 0)
    return np.clip(cov, 0.0, 1.0)


def _per_owner_mean(owner, values, n):
    m = owner >= 0
    ok = m & np.isfinite(values)
    cnt = np.bincount(owner[ok], minlength=n)
    tot = np.bincount(owner[ok], weights=values[ok], minlength=n)
    return np.divide(tot, cnt, out=np.full(n, np.nan), where=cnt > 0)


def bldg_mean(tiles, buildings) -> "pandas.Series":  # noqa: F821
    """Mean full area (m2) of the footprints counted in each tile, Series ``bldg_mean`` (NaN where none)."""
    import shapely

    t = _geoms(tiles)
    b, _ = _clean(buildings)
    return _series(_per_owner_mean(_owner(t, b), shapely.area(b), len(t)), tiles, "bldg_mean")


def bldg_orien(tiles, buildings) -> "pandas.Series":  # noqa: F821
    """Mean orientation (deg, 0-45, see :func:`orientation`) of the footprints counted in each tile,
    Series ``bldg_orien`` (NaN where none)."""
    t = _geoms(tiles)
    b, _ = _clean(buildings)
    return _series(_per_owner_mean(_owner(t, b), _orientation(b), len(t)), tiles, "bldg_orien")


def _overlap_warning(t, g, name, noun, warnings) -> None:
    if len(g) and len(t) and not overlaps(t, g):
        _warn(overlap_message(len(g), name, noun), warnings)


def overlaps(t, g) -> bool:
    """Whether any geometry of ``g`` intersects any tile of ``t``."""
    import shapely

    return bool(len(g) and len(t) and shapely.STRtree(g).query(t, predicate="intersects").size)


def overlap_message(n: int, name: str, noun: str) -> str:
    return (f"{name}: none of the {n} {noun} overlaps the tiles; check that the layer covers the raster's area "
            "(and its CRS).")


NO_FOOTPRINTS = ("{name}: no footprints (empty layer, or no polygons); bldg_count, bldg_area and bldg_cov are 0, "
                 "bldg_mean and bldg_orien null.")


def building_stats(tiles, buildings, *, name: str = "--buildings",
                   warnings: "list | None" = None) -> "pandas.DataFrame":  # noqa: F821
    """bldg_count, bldg_area, bldg_cov, bldg_mean, bldg_orien per tile (DataFrame indexed like ``tiles``).

    An empty layer gives 0 counts/areas/cover and NaN means/orientation with a
    warning; a layer that overlaps no tile gives a warning naming ``name``."""
    t = _geoms(tiles)
    b, _ = _clean(buildings, _POLYGONAL, name, warnings)
    if len(b) == 0:
        _warn(NO_FOOTPRINTS.format(name=name), warnings)
    else:
        _overlap_warning(t, b, name, "footprints", warnings)
    return building_columns(building_sums(t, b), tiles)


BUILDING_SUMS = ("count", "area", "size", "size_n", "orien", "orien_n")


def building_sums(tiles, buildings) -> dict[str, np.ndarray]:
    """Per tile: the footprints counted (centroid inside), their area clipped to the tile, and the sums and
    counts of the full areas and orientations of the footprints counted; ``buildings``: valid polygons.

    The sums of disjoint sets of footprints (partitions of a layer) add up to the sums of all of them, so a
    layer too large for one process is summed partition by partition (``engine.distributed.stats``)."""
    import shapely

    t, b = _geoms(tiles), _geoms(buildings)
    n = len(t)
    owner = _owner(t, b)

    def per_owner(values):
        ok = (owner >= 0) & np.isfinite(values)
        return np.bincount(owner[ok], weights=values[ok], minlength=n), np.bincount(owner[ok], minlength=n)

    size, size_n = per_owner(shapely.area(b))
    orien, orien_n = per_owner(_orientation(b))
    return {"count": np.bincount(owner[owner >= 0], minlength=n).astype(np.int64),
            "area": _clipped(t, b, shapely.area), "size": size, "size_n": size_n, "orien": orien,
            "orien_n": orien_n}


def building_columns(sums: dict, tiles) -> "pandas.DataFrame":  # noqa: F821
    """bldg_count, bldg_area, bldg_cov, bldg_mean, bldg_orien per tile from :func:`building_sums`."""
    import pandas as pd

    t = _geoms(tiles)
    n = len(t)

    def mean(total, count):
        return np.divide(total, count, out=np.full(n, np.nan), where=count > 0)

    cols = {"bldg_count": np.asarray(sums["count"]).astype(np.int64), "bldg_area": sums["area"],
            "bldg_cov": _cov(sums["area"], t), "bldg_mean": mean(sums["size"], sums["size_n"]),
            "bldg_orien": mean(sums["orien"], sums["orien_n"])}
    return pd.DataFrame(cols, index=_index(tiles), columns=list(BUILDING_COLUMNS))


def road_len(tiles, roads) -> "pandas.Series":  # noqa: F821
    """m of road clipped to each tile, Series ``road_len`` (0 where none)."""
    import shapely

    t = _geoms(tiles)
    r, _ = _clean(roads, _LINEAR)
    return _series(_clipped(t, r, shapely.length), tiles, "road_len")


def _nearest(t, r) -> np.ndarray:
    import shapely

    out = np.full(len(t), np.nan)
    if len(r) == 0 or len(t) == 0:
        return out
    c = shapely.centroid(t)
    (ci, _), d = shapely.STRtree(r).query_nearest(c, return_distance=True, all_matches=False)
    out[ci] = d
    return out


def road_dist(tiles, roads) -> "pandas.Series":  # noqa: F821
    """m from each tile's centroid to the nearest road, Series ``road_dist`` (NaN when there are no roads)."""
    t = _geoms(tiles)
    r, _ = _clean(roads, _LINEAR)
    return _series(_nearest(t, r), tiles, "road_dist")


def _major_mask(roads, field, values, name="--roads") -> np.ndarray:
    cols = [c for c in getattr(roads, "columns", []) if c != roads.geometry.name] if hasattr(roads, "columns") else []
    if field is None or field not in cols:
        raise MissingAttribute(str(field), cols, name)
    want = {str(v).strip().lower() for v in (MAJOR_ROADS if values is None else values)}
    col = roads[field]
    return (col.notna() & col.astype(str).str.strip().str.lower().isin(want)).to_numpy()


def major_dist(tiles, roads, field: str = "highway", values=MAJOR_ROADS) -> "pandas.Series":  # noqa: F821
    """m from each tile's centroid to the nearest road whose ``field`` is in ``values`` (case-insensitive),
    Series ``major_dist`` (NaN when there is no such road). Raises MissingAttribute without ``field``."""
    t = _geoms(tiles)
    mask = _major_mask(roads, field, values)
    r, _ = _clean(_geoms(roads)[mask], _LINEAR)
    return _series(_nearest(t, r), tiles, "major_dist")


def road_stats(tiles, roads, field: "str | None" = "highway", values=MAJOR_ROADS, *, name: str = "--roads",
               warnings: "list | None" = None) -> "pandas.DataFrame":  # noqa: F821
    """road_len, road_dist, major_dist per tile (DataFrame indexed like ``tiles``).

    ``roads`` is a GeoDataFrame (a GeoSeries has no attribute: major_dist is
    omitted). Without ``field`` in the layer major_dist is omitted and the
    :class:`MissingAttribute` message is reported; ``field=None`` omits it
    silently. An empty layer gives road_len 0 and null distances (major_dist
    included, whatever the attributes) with a warning; a layer that overlaps
    no tile, or has no major road, a warning."""
    import pandas as pd
    import shapely

    t = _geoms(tiles)
    g = _geoms(roads)
    r, pos = _clean(g, _LINEAR, name, warnings)
    if len(r) == 0:
        _warn(f"{name}: no roads (empty layer, or no lines); road_len is 0, road_dist and major_dist null.",
              warnings)
    else:
        _overlap_warning(t, r, name, "roads", warnings)
    cols = {"road_len": _clipped(t, r, shapely.length), "road_dist": _nearest(t, r)}
    if field is not None and len(r) == 0:
        cols["major_dist"] = np.full(len(t), np.nan)          # nothing to classify: null, whatever the attributes
    elif field is not None:
        try:
            mask = _major_mask(roads, field, values, name)[pos]
        except MissingAttribute as exc:
            _warn(str(exc), warnings)
        else:
            if not mask.any():
                shown = ", ".join(MAJOR_ROADS if values is None else map(str, values))
                _warn(f"{name}: no road has {field} in ({shown}); major_dist is null. Set --major-values "
                      "to the classes of major roads in this layer.", warnings)
            cols["major_dist"] = _nearest(t, r[mask])
    return pd.DataFrame(cols, index=_index(tiles), columns=[c for c in ROAD_COLUMNS if c in cols])


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
