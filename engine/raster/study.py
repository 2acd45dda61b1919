"""Many rasters as one study: several scenes, a folder of scenes or a VRT mosaic read as one raster.

Every tool opens its raster with ``rasterio.open(path)``; a study becomes one GDAL VRT mosaic that the tools
open like any raster, so tiles are read from the mosaic and never straddle a scene edge with missing data.

- ``resolve_raster(value)`` -> the path to open: one raster file is returned unchanged (a single-raster run is
  byte for byte what it was); a ``.vrt`` is used as it is (after checking it opens); a folder (its rasters,
  sorted by name) or several paths become a study VRT.
- Scenes in one CRS: a plain mosaic at the finest resolution of the scenes. Scenes in different CRSs: each
  scene is warped (a serialized GDAL warped VRT) into a working CRS, the UTM zone of the study's centre, at
  the finest ground resolution of the scenes, and the warps are mosaicked; outputs are in that CRS.
- Where scenes overlap the FIRST listed scene with a valid pixel wins (a VRT paints later sources over earlier
  ones, so sources are listed in reverse order, each painting only where its mask is valid). The mosaic has a
  dataset mask band: the union of the scenes' masks, so places no scene covers stay invalid, never black.
- A study VRT is written once per set of scenes (their paths, sizes and modification times) under
  ``<cache>/studies/<key>/study.vrt`` (the feature cache folder, which Dask workers see too), atomically, and
  never rewritten: the same scenes give the same file, which the run's manifest and model file name.
  ``prune_studies`` deletes the studies whose scenes are gone (the server does after removing a job's files).

Refused before any work, with a BadInput naming the parameter and the fix: a folder without rasters, a file
that is not a raster, scenes without a CRS, scenes with different band counts or data types, and scenes in
different CRSs that span more than one UTM zone (``MAX_ZONE_OVERRUN_DEG`` beyond the central zone's band):
split such a study per zone; and scenes so far apart (several cities) that the mosaic holding them would be
mostly empty and huge (``check_sparse``): every tile of the mosaic is scanned, so run each place on its own.

Several places (cities) in one run: ``place_groups(value)`` splits the scenes into places, the connected groups of
scenes whose footprints lie within ``PLACE_GAP_M`` of each other (in the given order, a place's scenes in the
given order). One place is a study as above (or the one raster itself); ``cluster`` takes several places and
fits one model on all of them (``engine.tools.places``), each place its own study in its own CRS.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from ..contract.limits import PLACE_GAP_M  # noqa: F401 - scenes further apart are other places (cities)
from ..errors import BadInput

RASTER_SUFFIXES = (".tif", ".tiff", ".jp2", ".img", ".ecw", ".sid", ".kea")   # the rasters a folder study takes
MAX_EMPTY_FACTOR = 10.0       # a mosaic this many times larger than its scenes ...
MAX_SPARSE_PX = 1 << 30       # ... and larger than this (pixels) is refused: scenes far apart (several cities)
MAX_ZONE_OVERRUN_DEG = 3.0    # mixed CRSs: how far (degrees of longitude) a study may reach beyond its UTM zone
STUDY_VERSION = 1             # part of the study key: a change to the VRT's layout writes new files
STUDIES = "studies"           # the folder under the cache folder


@dataclass(frozen=True)
class Scene:
    """One input raster of a study, read without pixels."""

    path: str
    crs: object
    transform: object
    width: int
    height: int
    count: int
    dtype: str
    colorinterp: tuple

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        t = self.transform
        x0, y0 = t.c, t.f
        x1, y1 = t.c + t.a * self.width, t.f + t.e * self.height
        return (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


@dataclass(frozen=True)
class Study:
    """Several scenes read as one raster: ``path`` is the VRT mosaic the tools open."""

    scenes: tuple
    path: str
    crs: str
    resolution: tuple
    warped: bool

    def record(self) -> dict:
        """What a manifest says about the study."""
        return {"scenes": [os.path.abspath(s) for s in self.scenes], "vrt": self.path, "crs": self.crs,
                "resolution": list(self.resolution), "warped": self.warped}


def as_values(value) -> list[str]:
    """A raster value (one path, a list of paths, None) as a list of path strings."""
    if value is None or value == "":
        return []
    if isinstance(value, (list, tuple)):
        return [os.fspath(v) for v in value]
    return [os.fspath(value)]


def is_study(value) -> bool:
    """Whether ``value`` names several rasters (several paths or a folder): what makes a study VRT. (Anything
    but paths, such as a dataset held in memory by a Python caller, is no study.)"""
    if not isinstance(value, (str, os.PathLike, list, tuple)):
        return False
    values = as_values(value)
    return len(values) > 1 or (len(values) == 1 and os.path.isdir(values[0]))


def _bad(message: str, param: str, code: str | None = None) -> BadInput:
    from ..contract import problems as P

    return BadInput(message, param=param, code=code or P.BAD_FORMAT)


def folder_scenes(folder: str, param: str = "raster") -> list[str]:
    """The rasters of ``folder`` (by suffix, not in subfolders, hidden files skipped), sorted by name."""
    names = sorted(n for n in os.listdir(folder)
                   if not n.startswith(".") and n.lower().endswith(RASTER_SUFFIXES)
                   and os.path.isfile(os.path.join(folder, n)))
    if not names:
        raise _bad(f"{param} {folder!r} is a folder with no rasters in it ({', '.join(RASTER_SUFFIXES[:4])}...); "
                   "give a folder of GeoTIFFs, the raster files themselves or a VRT mosaic.", param)
    return [os.path.join(folder, n) for n in names]


def scene_paths(value, param: str = "raster") -> list[str]:
    """Every scene ``value`` names: folders expanded (sorted by name), the order given kept, duplicates once."""
    from ..contract import problems as P

    out: list[str] = []
    for v in as_values(value):
        if not os.path.exists(v):
            raise _bad(f"{param} {v!r} does not exist. Check the path.", param, P.NOT_FOUND)
        for path in (folder_scenes(v, param) if os.path.isdir(v) else [v]):
            if os.path.abspath(path) not in map(os.path.abspath, out):
                out.append(path)
    if not out:
        raise _bad(f"{param}: give a raster, several rasters, a folder of rasters or a VRT mosaic.", param,
                   P.REQUIRED)
    return out


def read_scene(path: str, param: str = "raster", label: str = "") -> Scene:
    """A scene's header, checked as every raster input is (a georeferenced, readable raster with a CRS)."""
    from .tiling import inspect_raster

    try:
        info = inspect_raster(path, param)
    except BadInput as exc:
        raise BadInput(f"{exc}{label}", param=exc.param or param, code=exc.code) from None
    return Scene(os.path.abspath(path), info.crs, info.transform, info.width, info.height, info.count,
                 info.dtype, tuple(info.colorinterp))


def check_scenes(scenes: list[Scene], param: str = "raster") -> None:
    """BadInput unless the scenes can make one mosaic: one band count and one data type."""
    first = scenes[0]
    for s in scenes[1:]:
        if s.count != first.count:
            raise _bad(f"{param}: {Path(s.path).name!r} has {s.count} band(s) but {Path(first.path).name!r} has "
                       f"{first.count}; a study needs the same bands in every scene: give scenes of one sensor "
                       "and product (or pick the same bands with gdal_translate -b).", param)
        if s.dtype != first.dtype:
            raise _bad(f"{param}: {Path(s.path).name!r} holds {s.dtype} pixels but {Path(first.path).name!r} "
                       f"holds {first.dtype}; a study needs one data type: convert the scenes to one "
                       "(gdal_translate -ot).", param)


def resolve_raster(value, param: str = "raster", cache_dir: "str | Path | None" = None) -> str:
    """The path a tool opens for the raster ``value``: one file unchanged, a VRT as it is, a study's VRT."""
    return open_study(value, param, cache_dir).path if is_study(value) else _single(value, param)


def _single(value, param: str) -> str:
    values = as_values(value)
    path = values[0] if values else value
    return path if isinstance(path, str) else os.fspath(path)


def open_study(value, param: str = "raster", cache_dir: "str | Path | None" = None) -> Study:
    """The study of ``value`` (several paths or a folder), its VRT written under ``cache_dir`` (the tools' feature
    cache folder) when it is not there yet."""
    paths = scene_paths(value, param)
    n = len(paths)
    scenes = [read_scene(p, param, f" (scene {i + 1} of {n})" if n > 1 else "") for i, p in enumerate(paths)]
    check_scenes(scenes, param)
    crs = scenes[0].crs
    mixed = any(s.crs != crs for s in scenes[1:])
    if mixed:
        crs = working_crs(scenes, param)
    layout = _layout(scenes, crs, mixed)
    check_sparse(scenes, layout, param)
    key = study_key(scenes, crs)
    assert cache_dir, "a study's VRT is written under the cache folder: give it"
    folder = Path(cache_dir) / STUDIES / key
    vrt = folder / "study.vrt"
    if not vrt.is_file():
        _write_study(folder, scenes, crs, mixed, layout)
    import rasterio

    with rasterio.open(vrt) as ds:
        res = (float(abs(ds.transform.a)), float(abs(ds.transform.e)))
    return Study(tuple(s.path for s in scenes), str(vrt), crs.to_string(), res, mixed)


def place_groups(value, param: str = "raster") -> list[list[str]]:
    """The places of ``value``: lists of scene paths, each the scenes whose footprints lie within
    ``PLACE_GAP_M`` of another scene of the place (connected groups), the places in the order of their first
    scene, each place's scenes in the order given. Every scene is read and checked (a readable raster with a CRS,
    one band count and data type across ALL places: one model is fitted on them) before any work."""
    paths = scene_paths(value, param)
    n = len(paths)
    scenes = [read_scene(p, param, f" (scene {i + 1} of {n})" if n > 1 else "") for i, p in enumerate(paths)]
    check_scenes(scenes, param)
    boxes = [_lonlat_bounds(s) for s in scenes]
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(n):
        for j in range(i + 1, n):
            if _gap_m(boxes[i], boxes[j]) <= PLACE_GAP_M:
                parent[root(j)] = root(i)
    groups: dict[int, list[str]] = {}
    for i, p in enumerate(paths):
        groups.setdefault(root(i), []).append(p)
    return list(groups.values())


def _lonlat_bounds(scene: Scene) -> tuple:
    from rasterio.warp import transform_bounds

    return transform_bounds(scene.crs, "EPSG:4326", *scene.bounds, densify_pts=21)


def _gap_m(a: tuple, b: tuple) -> float:
    """About how many metres lie between two lon/lat boxes (0 when they touch or overlap)."""
    dlon = max(0.0, b[0] - a[2], a[0] - b[2])
    dlon = min(dlon, 360.0 - dlon) if dlon > 180.0 else dlon
    dlat = max(0.0, b[1] - a[3], a[1] - b[3])
    lat = math.radians((max(a[1], b[1]) + min(a[3], b[3])) / 2.0)
    return math.hypot(dlon * 111_320.0 * math.cos(lat), dlat * 110_574.0)


def vrt_scenes(path: "str | Path") -> list[str]:
    """The raster files a VRT mosaics, through the warped VRTs of a mixed-CRS study, first the one that wins
    where they overlap (a VRT paints its later sources over the earlier ones): a study's scenes as given."""
    from ..io.manifest import vrt_sources

    out: list[str] = []
    for source in reversed(vrt_sources(path)):
        leaves = vrt_scenes(source) if source.lower().endswith(".vrt") and os.path.isfile(source) else [source]
        out += [leaf for leaf in leaves if leaf not in out]
    return out


def prune_studies(cache_dir: "str | Path") -> list[Path]:
    """Delete the study folders under ``cache_dir`` whose scenes are gone (a server's uploads removed with their
    job, a folder of scenes deleted): their VRT can never open again, and the same paths given again make a
    new study (the key holds the files' times). The folders removed; a study being written is not touched."""
    from ..io.atomic import remove_folder

    root = Path(cache_dir) / STUDIES
    try:
        folders = sorted(f for f in root.iterdir() if f.is_dir() and not f.name.startswith("."))
    except (FileNotFoundError, NotADirectoryError):
        return []
    removed = []
    for folder in folders:
        vrt = folder / "study.vrt"
        scenes = vrt_scenes(vrt) if vrt.is_file() else []
        if not scenes or all(os.path.exists(s) for s in scenes):
            continue
        if remove_folder(folder):                   # out of sight at once; another process may prune it too
            removed.append(folder)
    return removed


def study_key(scenes: list[Scene], crs) -> str:
    """A name for the study: its scenes in order (paths, sizes, modification times) and working CRS."""
    ident = [STUDY_VERSION, crs.to_string()]
    for s in scenes:
        st = os.stat(s.path)
        ident.append([s.path, st.st_size, st.st_mtime_ns])
    return hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:20]


def working_crs(scenes: list[Scene], param: str = "raster"):
    """The UTM zone (WGS84, EPSG 326xx/327xx) of the study's centre; BadInput when the scenes reach more than
    ``MAX_ZONE_OVERRUN_DEG`` beyond that zone's band of longitude (split the study per zone)."""
    from rasterio.warp import transform_bounds

    from .tiling import utm_crs_for

    west, south, east, north = math.inf, math.inf, -math.inf, -math.inf
    for s in scenes:
        w, so, e, no = transform_bounds(s.crs, "EPSG:4326", *s.bounds, densify_pts=21)
        west, south, east, north = min(west, w), min(south, so), max(east, e), max(north, no)
    lon, lat = (west + east) / 2.0, (south + north) / 2.0
    utm = utm_crs_for(lon, lat)
    zone = utm.to_epsg() % 100
    band_w, band_e = -180.0 + 6.0 * (zone - 1), -180.0 + 6.0 * zone
    if west < band_w - MAX_ZONE_OVERRUN_DEG or east > band_e + MAX_ZONE_OVERRUN_DEG:
        raise _bad(f"{param}: the scenes span longitudes {west:.2f} to {east:.2f}, more than UTM zone {zone} "
                   f"({band_w:g} to {band_e:g}) and {MAX_ZONE_OVERRUN_DEG:g} degrees either side can hold without "
                   "distorting tile sizes; split the study per UTM zone and run each part (one model: `predict` "
                   "the other parts with the first part's model).", param)
    return utm


# --------------------------------------------------------------------------- writing the VRT


def _layout(scenes: list[Scene], crs, mixed: bool) -> tuple:
    """The mosaic's grid ((x0, res_x, y0, res_y), width, height) and each scene's (transform, width, height) on
    it: the scene itself in one CRS, its warp onto the grid for mixed CRSs."""
    if mixed:
        from affine import Affine

        res = min(_ground_res(s, crs) for s in scenes)
        x0, y0, width, height = _union_grid([_bounds_in(s, crs) for s in scenes], res)
        grids = []
        for s in scenes:
            b = _bounds_in(s, crs)
            c0, r0 = math.floor((b[0] - x0) / res), math.floor((y0 - b[3]) / res)
            c1, r1 = math.ceil((b[2] - x0) / res), math.ceil((y0 - b[1]) / res)
            grids.append((Affine(res, 0, x0 + c0 * res, 0, -res, y0 - r0 * res), c1 - c0, r1 - r0))
        return (x0, res, y0, res), width, height, grids
    rx = min(abs(s.transform.a) for s in scenes)
    ry = min(abs(s.transform.e) for s in scenes)
    left, top = min(s.bounds[0] for s in scenes), max(s.bounds[3] for s in scenes)
    right, bottom = max(s.bounds[2] for s in scenes), min(s.bounds[1] for s in scenes)
    grids = [(s.transform, s.width, s.height) for s in scenes]
    return (left, rx, top, ry), _cells(right - left, rx), _cells(top - bottom, ry), grids


def check_sparse(scenes: list[Scene], layout: tuple, param: str = "raster") -> None:
    """BadInput when the scenes lie so far apart that the mosaic holding them is mostly empty and large: every
    tile of it would be scanned (``MAX_EMPTY_FACTOR`` times the scenes' pixels and more than ``MAX_SPARSE_PX``)."""
    (_, rx, _, ry), width, height, grids = layout
    covered = sum(w * abs(t.a) / rx * h * abs(t.e) / ry for t, w, h in grids)
    total = float(width) * float(height)
    if total > MAX_SPARSE_PX and total > MAX_EMPTY_FACTOR * covered:
        raise _bad(f"{param}: the {len(scenes)} scenes lie far apart: they cover {covered / total:.1%} of the "
                   f"{width} x {height} px mosaic that holds them all, whose every tile would be read. A study is "
                   "one place cut into scenes: `cluster` takes the scenes of several places (cities) and fits one "
                   "model on all; other tools take one place: run each place on its own, or `predict` each with "
                   "that model.", param)


def _write_study(folder: Path, scenes: list[Scene], crs, mixed: bool, layout: tuple) -> None:
    """Write ``folder`` (study.vrt and, for mixed CRSs, one warped VRT per scene) under a temporary name and
    rename it into place: a reader sees a whole study or none."""
    from ..io.atomic import atomic_folder

    with atomic_folder(folder) as tmp:
        transform, width, height, grids = layout
        sources = [s.path for s in scenes]
        if mixed:
            sources = []
            for i, (s, grid) in enumerate(zip(scenes, grids, strict=True)):
                name = f"scene_{i:03d}.vrt"
                _warp_scene(s, crs, grid, tmp / name)
                sources.append(str(folder / name))
        xml = mosaic_xml(scenes[0], crs, transform, width, height, sources, grids)
        (tmp / "study.vrt").write_text(xml, encoding="utf-8")


def _cells(length: float, res: float) -> int:
    """Whole pixels in ``length`` (a length within a thousandth of a pixel of a whole number is that number)."""
    n = length / res
    return max(1, int(round(n)) if abs(n - round(n)) < 1e-3 else int(math.ceil(n)))


def _snap(v: float) -> float:
    r = round(v)
    return float(r) if abs(v - r) < 1e-3 else v


def _bounds_in(scene: Scene, crs) -> tuple:
    from rasterio.warp import transform_bounds

    return transform_bounds(scene.crs, crs, *scene.bounds, densify_pts=21)


def _ground_res(scene: Scene, crs) -> float:
    """The scene's pixel size (square, the mean of both axes) once warped into ``crs``."""
    from rasterio.warp import calculate_default_transform

    t, _, _ = calculate_default_transform(scene.crs, crs, scene.width, scene.height, *scene.bounds)
    return (abs(t.a) + abs(t.e)) / 2.0


def _union_grid(bounds: list, res: float) -> tuple:
    """The grid (x0, y0, width, height) of ``res`` pixels, aligned to multiples of ``res``, that holds all."""
    left = math.floor(min(b[0] for b in bounds) / res) * res
    bottom = math.floor(min(b[1] for b in bounds) / res) * res
    right = math.ceil(max(b[2] for b in bounds) / res) * res
    top = math.ceil(max(b[3] for b in bounds) / res) * res
    return left, top, int(round((right - left) / res)), int(round((top - bottom) / res))


def _warp_scene(scene: Scene, crs, grid: tuple, path: Path) -> None:
    """Write a warped VRT of ``scene`` in ``crs`` on ``grid`` (its part of the study's grid), with an alpha band
    where the scene has no nodata or alpha of its own, so that outside the scene is invalid."""
    import rasterio
    import rasterio.shutil
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT

    from .tiling import TiledRaster

    transform, width, height = grid
    with rasterio.open(scene.path) as src:
        with WarpedVRT(src, crs=crs, transform=transform, width=width, height=height,
                       resampling=Resampling.bilinear, add_alpha=TiledRaster._needs_alpha(src)) as vrt:
            rasterio.shutil.copy(vrt, str(path), driver="VRT")


_INTERP = {"red": "Red", "green": "Green", "blue": "Blue", "alpha": "Alpha", "gray": "Gray", "undefined": "Undefined"}
_GDAL_TYPES = {"uint8": "Byte", "int8": "Int8", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32",
               "int32": "Int32", "uint64": "UInt64", "int64": "Int64", "float32": "Float32", "float64": "Float64"}


def _rects(grid, x0: float, y0: float, rx: float, ry: float) -> str:
    transform, width, height = grid
    x_off = _snap((transform.c - x0) / rx)
    y_off = _snap((y0 - transform.f) / ry)
    x_size = _snap(width * abs(transform.a) / rx)
    y_size = _snap(height * abs(transform.e) / ry)
    return (f'<SrcRect xOff="0" yOff="0" xSize="{width}" ySize="{height}"/>'
            f'<DstRect xOff="{x_off:.10g}" yOff="{y_off:.10g}" xSize="{x_size:.10g}" ySize="{y_size:.10g}"/>')


def mosaic_xml(first: Scene, crs, transform: tuple, width: int, height: int, sources: list, grids: list) -> str:
    """The VRT of a mosaic: ``sources`` (paths, first wins) placed by their grids on the grid ``transform``
    (x0, res_x, y0, res_y), width x height; every band painted only where a source is valid; a dataset mask
    band that is valid where any source is."""
    x0, rx, y0, ry = transform
    dtype = _GDAL_TYPES.get(first.dtype, "Float64")
    src = lambda p: f'<SourceFilename relativeToVRT="0">{escape(p)}</SourceFilename>'  # noqa: E731
    order = list(zip(sources, grids, strict=True))[::-1]          # later sources paint over: the first goes last
    lines = [f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">',
             f'  <SRS dataAxisToSRSAxisMapping="1,2">{escape(crs.to_wkt())}</SRS>',
             f"  <GeoTransform>{x0!r}, {rx!r}, 0.0, {y0!r}, 0.0, {-ry!r}</GeoTransform>"]
    for band in range(1, first.count + 1):
        interp = getattr(first.colorinterp[band - 1], "name", "undefined") if band <= len(first.colorinterp) \
            else "undefined"
        lines.append(f'  <VRTRasterBand dataType="{dtype}" band="{band}">')
        lines.append(f"    <ColorInterp>{_INTERP.get(interp, 'Undefined')}</ColorInterp>")
        for path, grid in order:
            lines.append(f"    <ComplexSource>{src(path)}<SourceBand>{band}</SourceBand>"
                         f"{_rects(grid, x0, y0, rx, ry)}<UseMaskBand>true</UseMaskBand></ComplexSource>")
        lines.append("  </VRTRasterBand>")
    lines.append('  <MaskBand><VRTRasterBand dataType="Byte">')
    for path, grid in order:
        lines.append(f"    <ComplexSource>{src(path)}<SourceBand>mask,1</SourceBand>"
                     f"{_rects(grid, x0, y0, rx, ry)}<NODATA>0</NODATA></ComplexSource>")
    lines.append("  </VRTRasterBand></MaskBand>")
    lines.append("</VRTDataset>")
    return "\n".join(lines) + "\n"
