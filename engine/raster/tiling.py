"""Cut a raster into a regular grid of square tiles and read them window by window.

Three small pieces:

- ``Length``: a size with a unit, ``64px`` or ``20m``, as the CLI takes it.
- ``TileGrid``: pure arithmetic on a pixel grid (size, stride, edge policy):
  which windows exist, where they are on the ground. It never touches pixels.
- ``TiledRaster``: an open raster (or an on-the-fly warp of it to the local UTM
  zone when sizes are in metres and the raster is geographic or Web Mercator)
  that reads blocks of tiles as uint8 RGB arrays plus validity, never the
  whole raster.

Band handling: uint8 is used as is; any other dtype is stretched per band from
its 2nd to 98th percentile, estimated on a sample of windows; one band is
replicated to three. An alpha band or a nodata value becomes the validity mask;
in float rasters NaN and infinities are invalid pixels too, with or without a
nodata value (a pixel is valid only where every band read is finite), so the
valid fraction counts them, the stretch ignores them and they read as 0.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from ..errors import BadInput

# GDAL's block cache defaults to 5% of RAM; a bounded cache keeps memory flat
# when streaming through rasters far larger than it. A TiledRaster lowers it to
# what reading its tiles row by row needs (``block_cache_bytes``).
GDAL_ENV = {"GDAL_CACHEMAX": 64 * 1024 * 1024, "GDAL_NUM_THREADS": "1"}  # bytes: rasterio passes ints as bytes
MIN_BLOCK_CACHE = 8 * 1024 * 1024

from ..contract.tools import EDGES as EDGE_POLICIES  # noqa: E402 - the contract's list, under its old name


@dataclass(frozen=True)
class Length:
    """A length in pixels (``unit='px'``) or ground metres (``unit='m'``)."""

    value: float
    unit: str = "px"

    @classmethod
    def parse(cls, text: "str | int | float | Length", name: str = "--tile-size") -> "Length":
        """Parse ``64``, ``64px``, ``20m`` or ``12.5 m``."""
        if isinstance(text, Length):
            return text
        if isinstance(text, (int, float)):
            return cls(float(text), "px")
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(px|m)?\s*", str(text))
        if not m:
            raise BadInput(f"{name} {text!r} is not a length: write pixels as '64px' or ground metres as '20m'.")
        unit = m.group(2) or "px"
        value = float(m.group(1))
        if unit == "px" and value != int(value):
            raise BadInput(f"{name} {text!r}: pixel lengths are whole numbers, e.g. '64px'.")
        return cls(value, unit)

    def __str__(self) -> str:
        from ..contract.outputs import tile_label

        return tile_label(self.value, self.unit)

    def to_pixels(self, pixel_size_m: float | None) -> int:
        """Round to whole pixels; metres need the ground size of a pixel."""
        if self.unit == "px":
            return int(self.value)
        assert pixel_size_m, "metre lengths need a pixel size"
        return int(round(self.value / pixel_size_m))


@dataclass(frozen=True)
class Tile:
    """One tile: its place in the grid and on the ground (working CRS)."""

    id: int
    row: int
    col: int
    window: Window
    transform: Affine

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) for north-up grids."""
        w, h = self.window.width, self.window.height
        x0, y0 = self.transform @ (0, 0)
        x1, y1 = self.transform @ (w, h)
        return (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


@dataclass(frozen=True)
class TileGrid:
    """A grid of ``size`` x ``size`` pixel tiles every ``stride`` pixels.

    ``edge='drop'`` keeps only tiles that lie wholly inside the raster;
    ``edge='pad'`` adds tiles that hang over the right and bottom edges (their
    outside part reads as invalid). Tile ids run row by row from 0.
    """

    width: int
    height: int
    size: int
    stride: int
    transform: Affine
    edge: str = "drop"

    def __post_init__(self) -> None:
        if self.edge not in EDGE_POLICIES:
            raise BadInput(f"--edge {self.edge!r} is unknown: use 'drop' or 'pad'.")
        from ..contract.limits import MIN_TILE_PX

        if self.size < MIN_TILE_PX:
            raise BadInput(f"--tile-size gives {self.size} px; tiles need at least {MIN_TILE_PX} px. "
                           "Use a larger tile size.")
        if not 0 < self.stride <= self.size:
            raise BadInput(
                f"--overlap must be at least 0 and smaller than the tile size ({self.size} px); "
                f"it gives a stride of {self.stride} px."
            )
        if self.size > self.width or self.size > self.height:
            raise BadInput(
                f"--tile-size {self.size} px is larger than the raster ({self.width} x {self.height} px). "
                "Use a smaller tile size."
            )

    @property
    def overlap(self) -> int:
        return self.size - self.stride

    def _count(self, extent: int) -> int:
        if self.edge == "drop":
            return (extent - self.size) // self.stride + 1
        return math.ceil(max(extent - self.size, 0) / self.stride) + 1

    @property
    def n_cols(self) -> int:
        return self._count(self.width)

    @property
    def n_rows(self) -> int:
        return self._count(self.height)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n_rows, self.n_cols)

    def __len__(self) -> int:
        return self.n_rows * self.n_cols

    def window(self, row: int, col: int) -> Window:
        return Window(col * self.stride, row * self.stride, self.size, self.size)

    def tile(self, row: int, col: int) -> Tile:
        if not (0 <= row < self.n_rows and 0 <= col < self.n_cols):
            raise IndexError(f"tile ({row}, {col}) is outside a {self.n_rows} x {self.n_cols} grid")
        w = self.window(row, col)
        t = self.transform @ Affine.translation(w.col_off, w.row_off)
        return Tile(row * self.n_cols + col, row, col, w, t)

    def __iter__(self) -> Iterator[Tile]:
        for r in range(self.n_rows):
            for c in range(self.n_cols):
                yield self.tile(r, c)

    def corners(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """(n, 4, 2) ground coordinates of the tiles' corners (TL, TR, BR, BL)."""
        rows = np.asarray(rows, dtype=np.float64)
        cols = np.asarray(cols, dtype=np.float64)
        px = np.stack([cols * self.stride, cols * self.stride + self.size], axis=1)
        py = np.stack([rows * self.stride, rows * self.stride + self.size], axis=1)
        cx = px[:, [0, 1, 1, 0]]
        cy = py[:, [0, 0, 1, 1]]
        a = self.transform
        x = a.a * cx + a.b * cy + a.c
        y = a.d * cx + a.e * cy + a.f
        return np.stack([x, y], axis=-1)

    def cell_transform(self) -> Affine:
        """Transform of a raster with one pixel per tile.

        Each pixel covers the central ``stride`` x ``stride`` part of its tile,
        so neighbouring pixels never overlap even when tiles do.
        """
        half = self.overlap / 2.0
        return self.transform @ Affine.translation(half, half) @ Affine.scale(self.stride)


def ground_pixel_size(path: str) -> float:
    """Metres per pixel on the ground at the raster's centre, whatever its CRS."""
    from pyproj import Geod
    from rasterio.warp import transform as warp_points

    with rasterio.open(path) as src:
        cx, cy = src.xy(src.height / 2, src.width / 2)
        dx, dy = src.xy(src.height / 2 + 1, src.width / 2 + 1)
        (lon0, lon1), (lat0, lat1) = warp_points(src.crs, "EPSG:4326", [cx, dx], [cy, dy])
    geod = Geod(ellps="WGS84")
    _, _, w = geod.inv(lon0, lat0, lon1, lat0)
    _, _, h = geod.inv(lon0, lat0, lon0, lat1)
    return float(math.sqrt(abs(w * h)))


def utm_crs_for(lon: float, lat: float) -> CRS:
    """The WGS84 UTM zone CRS that contains a point."""
    zone = int(math.floor((lon + 180.0) / 6.0)) % 60 + 1
    return CRS.from_epsg((32600 if lat >= 0 else 32700) + zone)


def _is_mercator(crs: CRS) -> bool:
    wkt = crs.to_wkt().lower()
    return "mercator" in wkt and "transverse" not in wkt


def needs_warp(crs: CRS) -> bool:
    """True where map units are not ground metres: geographic or Mercator CRSs."""
    return crs.is_geographic or _is_mercator(crs)


def finite_pixels(raw: np.ndarray) -> np.ndarray:
    """(h, w) True where every band of ``raw`` (bands, h, w) is a finite number; all True for integer data.

    NaN and infinities in a float raster are invalid pixels whether or not it
    has a nodata value: combine this with the dataset mask.
    """
    raw = np.asarray(raw)
    if raw.dtype.kind not in "fc":
        return np.ones(raw.shape[-2:], dtype=bool)
    return np.isfinite(raw).all(axis=0)


@dataclass
class Stretch:
    """Per-band linear stretch from [lo, hi] to [0, 255]; None for uint8 data."""

    lo: np.ndarray
    hi: np.ndarray

    def apply(self, data: np.ndarray) -> np.ndarray:
        lo = self.lo.reshape(-1, 1, 1).astype(np.float32)
        span = np.maximum(self.hi - self.lo, 1e-6).reshape(-1, 1, 1).astype(np.float32)
        with np.errstate(invalid="ignore", over="ignore"):
            out = (data.astype(np.float32) - lo) * (255.0 / span)
        out[~np.isfinite(out)] = 0                  # NaN / inf are invalid pixels: they read as 0
        return np.clip(out, 0, 255).astype(np.uint8)

    def as_list(self) -> list[list[float]]:
        return [[float(a), float(b)] for a, b in zip(self.lo, self.hi, strict=True)]

    @classmethod
    def from_list(cls, pairs) -> "Stretch | None":
        """The inverse of ``as_list`` (None stays None), e.g. from a model file."""
        if not pairs:
            return None
        return cls(np.array([p[0] for p in pairs], float), np.array([p[1] for p in pairs], float))


def to_rgb8(data: np.ndarray, stretch: "Stretch | None") -> np.ndarray:
    """Raw band values (bands, h, w) -> uint8 (3, h, w): stretched unless uint8, one band replicated to grey."""
    if stretch is not None:
        data = stretch.apply(data)
    elif data.dtype != np.uint8:
        if data.dtype.kind == "f":              # NaN / inf read as 0 (a cast of them is undefined)
            data = np.clip(np.where(np.isfinite(data), data, 0), 0, 255)
        data = data.astype(np.uint8)
    if data.shape[0] == 1:
        data = np.repeat(data, 3, axis=0)
    return data


@dataclass
class RasterInfo:
    """What the engine needs to know about an input raster, read without pixels."""

    path: str
    width: int
    height: int
    count: int
    dtype: str
    crs: CRS
    transform: Affine
    nodata: float | None
    colorinterp: tuple
    mask_flags: tuple = field(default_factory=tuple)


RASTER_FIX = "Give a GeoTIFF or another GDAL raster."
PROBE_POINTS = 3          # per axis: first, middle and last pixel row/column, so 9 blocks incl. the last one


def _gdal_detail(exc: BaseException) -> str:
    """GDAL's reason for a failed read, short: 'got N of M bytes' for a cut file, else its deepest message."""
    chain, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        chain.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    for text in chain:
        m = re.search(r"got (\d+) bytes, expected (\d+)", text)
        if m:
            return f"got {m.group(1)} of {m.group(2)} bytes"
    text = next((t for t in reversed(chain) if t and "See previous exception" not in t), "")
    text = text.replace("\n", " ").strip()
    return text if len(text) <= 120 else text[:117] + "..."


def unreadable_raster(path, label: str, exc: BaseException) -> BadInput:
    """The BadInput for a raster that GDAL would not open: ``label`` names the input (e.g. "raster 'x.tif'"
    or "--population 'p.tif'") and the message says why in our words: a folder, an empty file, a vector
    layer, a format GDAL does not know, or a damaged or truncated file."""
    import os

    if os.path.isdir(path):
        return BadInput(f"{label} is a folder, not a raster. {RASTER_FIX}")
    try:
        empty = os.path.getsize(path) == 0
    except OSError:
        empty = False
    if empty:
        return BadInput(f"{label} is empty (0 bytes): an interrupted copy or export? {RASTER_FIX}")
    text = str(exc)
    # a vector layer or a table (a CSV, which GDAL's XYZ raster driver claims and then fails on: "Couldn't
    # determine X spacing") is no damaged raster
    try:
        import pyogrio

        vector = len(pyogrio.list_layers(path)) > 0
    except Exception:  # noqa: BLE001 - not a vector file either
        vector = False
    if vector:
        return BadInput(f"{label} cannot be read: it is a vector layer or a table, not a raster. {RASTER_FIX}")
    if "not recognized" in text or "not recognised" in text:
        return BadInput(f"{label} cannot be read: it is not a raster format GDAL knows. {RASTER_FIX}")
    return BadInput(f"{label} is damaged or truncated ({_gdal_detail(exc)}); re-export it or copy it again.")


def probe_raster(src, label: str) -> None:
    """BadInput unless pixels spread across ``src`` read: the first, middle and last row and column
    (PROBE_POINTS x PROBE_POINTS single pixels, all bands and masks, so nine blocks including the
    last one). Cheap - nine blocks whatever the raster's size - and it catches a truncated or damaged
    file (its last blocks are missing) before any work instead of in the middle of a run."""
    import warnings

    from rasterio.errors import NotGeoreferencedWarning

    h, w = int(src.height), int(src.width)
    if h <= 0 or w <= 0 or src.count == 0:
        return
    rows = sorted({round(i * (h - 1) / (PROBE_POINTS - 1)) for i in range(PROBE_POINTS)})
    cols = sorted({round(i * (w - 1) / (PROBE_POINTS - 1)) for i in range(PROBE_POINTS)})
    for r in reversed(rows):                          # the last block first: where a cut file fails
        for c in reversed(cols):
            win = Window(c, r, 1, 1)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", NotGeoreferencedWarning)
                    src.read(window=win)
                    src.read_masks(window=win)
            except Exception as exc:  # noqa: BLE001 - any GDAL read failure: the file cannot serve
                raise BadInput(f"{label} is damaged or truncated (the pixel at row {r}, column {c} cannot be "
                               f"read: {_gdal_detail(exc)}); re-export it or copy it again.") from None


def inspect_raster(path: str, param: str = "raster") -> RasterInfo:
    """Open ``path`` and check that it is a georeferenced raster that reads across its extent (see
    :func:`probe_raster`), or raise BadInput naming ``param`` (the tool's parameter), code ``not_found`` or
    ``bad_format``."""
    import os

    from ..contract import problems as P

    try:
        return _inspect_raster(path)
    except BadInput as exc:
        if exc.param:
            raise
        code = P.BAD_FORMAT if os.path.exists(path) else P.NOT_FOUND
        raise BadInput(str(exc), param=param, code=code) from None


def _inspect_raster(path: str) -> RasterInfo:
    import os
    import warnings

    from rasterio.errors import NotGeoreferencedWarning

    if not os.path.exists(path):
        raise BadInput(f"raster {path!r} does not exist. Check the path.")
    label = f"raster {str(path)!r}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)     # reported below, in plain words
            with rasterio.Env(**GDAL_ENV), rasterio.open(path) as src:
                info = RasterInfo(
                    path=str(path), width=src.width, height=src.height, count=src.count,
                    dtype=src.dtypes[0], crs=src.crs, transform=src.transform, nodata=src.nodata,
                    colorinterp=tuple(src.colorinterp), mask_flags=tuple(tuple(f) for f in src.mask_flag_enums),
                )
                probe_raster(src, label)
    except BadInput:
        raise
    except Exception as exc:  # noqa: BLE001 - any GDAL failure to open: said in our words
        raise unreadable_raster(path, label, exc) from None
    if info.crs is None:
        raise BadInput(
            f"raster {path!r} has no coordinate reference system. Assign one "
            "(QGIS: Raster > Projections > Assign Projection, or gdal_edit.py -a_srs EPSG:XXXX)."
        )
    if info.transform == Affine.identity():
        raise BadInput(
            f"raster {path!r} has no geotransform (it is not georeferenced). Georeference it first "
            "(QGIS Georeferencer, or gdal_translate -a_ullr)."
        )
    if info.transform.b != 0 or info.transform.d != 0:
        raise BadInput(f"raster {path!r} is rotated; warp it north-up first (gdalwarp).")
    return info


def default_bands(info: RasterInfo) -> list[int]:
    """The bands to use when none are given: RGB if present, else the first band."""
    colour = [i + 1 for i, ci in enumerate(info.colorinterp) if ci != ColorInterp.alpha]
    rgb = [info.colorinterp.index(c) + 1 for c in (ColorInterp.red, ColorInterp.green, ColorInterp.blue)
           if c in info.colorinterp]
    if len(rgb) == 3:
        return rgb
    if len(colour) >= 3:
        return colour[:3]
    return colour[:1] or [1]


def parse_bands(text: "str | Sequence[int] | None", info: RasterInfo) -> list[int]:
    """Check a band list such as ``'1,2,3'`` against the raster (1-based)."""
    if text is None or text == "":
        return default_bands(info)
    if isinstance(text, str):
        try:
            bands = [int(b) for b in text.split(",") if b.strip()]
        except ValueError:
            raise BadInput(f"--bands {text!r} is not a list of band numbers; write e.g. '1,2,3'.") from None
    else:
        bands = [int(b) for b in text]
    if len(bands) not in (1, 3):
        raise BadInput(f"--bands {text!r}: give one band (replicated to grey RGB) or three bands (R,G,B).")
    bad = [b for b in bands if not 1 <= b <= info.count]
    if bad:
        raise BadInput(
            f"--bands: band {bad[0]} does not exist in {info.path!r}, which has {info.count} band(s) "
            f"numbered 1..{info.count}."
        )
    return bands


def block_cache_bytes(width: int, count: int, itemsize: int, block_height: int, tile: int, stride: int,
                      n_rows: int, mask: bool = True) -> int:
    """GDAL's block cache for reading tiles one grid row after another: the blocks the tallest row of tiles
    spans across the raster's width (all bands, and a one-byte ``mask`` band when validity is read), a quarter
    more for GDAL's bookkeeping, between 8 MiB and ``GDAL_ENV``'s 64 MiB.

    Reading row after row, the blocks a row of tiles shares with the next are the last ones read, so they
    stay in a cache this big (a row of tiles that spans block rows A and B is read block column by block
    column, A0 B0 A1 B1 ..., so a cache of one block row would evict what it reads next; a smaller cache
    decodes blocks again). A full 64 MiB cache was most of the growth of peak memory from a 2048 px to a
    16384 px raster (``tests/bench/bench.py --sections memory``).
    """
    starts = np.arange(max(1, n_rows), dtype=np.int64) * stride
    spans = int(((starts + tile - 1) // block_height - starts // block_height).max()) + 1
    need = spans * block_height * width * (count * itemsize + int(mask)) * 5 // 4
    return int(min(GDAL_ENV["GDAL_CACHEMAX"], max(MIN_BLOCK_CACHE, need)))


class TiledRaster:
    """An open raster cut into tiles, read block by block as uint8 RGB.

    ``tile_size`` and ``overlap`` are ``Length`` values (or strings such as
    ``'64px'``/``'20m'``). Metre sizes on a geographic or Web Mercator raster
    read through a WarpedVRT in the local UTM zone so that tiles are true
    ground squares; ``working_crs`` and ``grid.transform`` describe that view.

    Use as a context manager. ``valid_fraction()`` scans validity (cheap for
    integer rasters with no nodata or alpha; float rasters are read to find
    NaN and infinities), ``read_tiles`` reads
    the tiles of a list of (row, col) positions that share one grid row.
    """

    def __init__(self, path: str, tile_size="64px", overlap="0px", edge: str = "drop",
                 bands: "str | Sequence[int] | None" = None, stretch_samples: int = 24, seed: int = 0):
        self.info = inspect_raster(path)
        self.path = str(path)
        self.tile_size = Length.parse(tile_size, "--tile-size")
        self.overlap_len = Length.parse(overlap, "--overlap")
        if self.tile_size.value <= 0:
            raise BadInput("--tile-size must be positive, e.g. '64px' or '20m'.")
        self.bands = parse_bands(bands, self.info)
        self.edge = edge
        self._env = rasterio.Env(**GDAL_ENV)
        self._env.__enter__()
        self._src = self._vrt = None
        try:
            self._open(stretch_samples, seed)
        except BaseException:
            self.close()             # a raster refused here leaves no open file and no GDAL settings behind
            raise

    def _open(self, stretch_samples: int, seed: int) -> None:
        """Open the raster (and its UTM warp), build the tile grid, size GDAL's block cache, estimate the stretch."""
        self._src = rasterio.open(self.path)
        metric = "m" in (self.tile_size.unit, self.overlap_len.unit)
        if metric and needs_warp(self.info.crs):
            self._vrt = self._open_warp()
        ds = self.dataset
        pixel_m = self._pixel_size_m(ds)
        size = self.tile_size.to_pixels(pixel_m)
        overlap_px = self.overlap_len.to_pixels(pixel_m)
        self.pixel_size_m = pixel_m
        self.grid = TileGrid(ds.width, ds.height, size, size - overlap_px, ds.transform, self.edge)
        if self._vrt is None:         # a warp reads its source's blocks in its own pattern: the full cache
            g = self.grid
            rasterio.env.setenv(GDAL_CACHEMAX=block_cache_bytes(
                ds.width, ds.count, np.dtype(ds.dtypes[0]).itemsize, ds.block_shapes[0][0], g.size, g.stride,
                g.n_rows, mask=not self.all_valid))
        self.stretch = self._estimate_stretch(stretch_samples, seed)

    # -- opening -----------------------------------------------------------------
    def _open_warp(self) -> WarpedVRT:
        from rasterio.warp import calculate_default_transform
        from rasterio.warp import transform as warp_points

        src = self._src
        cx, cy = src.xy(src.height / 2, src.width / 2)
        (lon,), (lat,) = warp_points(src.crs, "EPSG:4326", [cx], [cy])
        utm = utm_crs_for(lon, lat)
        transform, width, height = calculate_default_transform(
            src.crs, utm, src.width, src.height, *src.bounds)
        # square pixels of the mean ground size
        res = (abs(transform.a) + abs(transform.e)) / 2.0
        transform, width, height = calculate_default_transform(
            src.crs, utm, src.width, src.height, *src.bounds, resolution=res)
        return WarpedVRT(src, crs=utm, transform=transform, width=width, height=height,
                         resampling=Resampling.bilinear, add_alpha=self._needs_alpha(src))

    @staticmethod
    def _needs_alpha(src) -> bool:
        flags = src.mask_flag_enums[0] if src.count else []
        return MaskFlags.nodata not in flags and MaskFlags.alpha not in flags

    def _pixel_size_m(self, ds) -> float | None:
        if ds.crs.is_geographic:
            return None
        factor = ds.crs.linear_units_factor[1] if ds.crs.linear_units_factor else 1.0
        return float(abs(ds.transform.a)) * factor

    @property
    def dataset(self):
        """The dataset tiles are read from: the raster itself or its UTM warp."""
        return self._vrt if self._vrt is not None else self._src

    @property
    def warped(self) -> bool:
        return self._vrt is not None

    @property
    def working_crs(self) -> CRS:
        return self.dataset.crs

    @property
    def crs(self) -> CRS:
        """The input raster's CRS (outputs are written in it)."""
        return self.info.crs

    def close(self) -> None:
        if self._vrt is not None:
            self._vrt.close()
        if self._src is not None:
            self._src.close()
        self._env.__exit__(None, None, None)

    def __enter__(self) -> "TiledRaster":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- band values ----------------------------------------------------------------
    @property
    def checks_finite(self) -> bool:
        """True for float rasters, whose NaN and infinite pixels are invalid."""
        return np.dtype(self.info.dtype).kind in "fc"

    @property
    def all_valid(self) -> bool:
        """True when every pixel is valid by construction: no nodata value, alpha band or mask, and not
        a float raster (whose NaN and infinities are invalid, with or without a nodata value)."""
        if self.warped or self.checks_finite:
            return False
        return all(MaskFlags.all_valid in flags for flags in self._src.mask_flag_enums)

    def _sample_windows(self, n: int, seed: int, side: int = 512) -> list[Window]:
        ds = self.dataset
        side = min(side, ds.width, ds.height)
        rng = np.random.default_rng(seed)
        cols = rng.integers(0, ds.width - side + 1, size=n)
        rows = rng.integers(0, ds.height - side + 1, size=n)
        return [Window(int(c), int(r), side, side) for c, r in zip(cols, rows, strict=True)]

    def _estimate_stretch(self, n: int, seed: int) -> Stretch | None:
        if self.info.dtype == "uint8":
            return None
        ds = self.dataset
        samples = [[] for _ in self.bands]
        for w in self._sample_windows(n, seed, side=256):
            data = ds.read(self.bands, window=w)
            valid = ds.dataset_mask(window=w) > 0
            for i in range(len(self.bands)):
                vals = data[i][valid]
                samples[i].append(vals[np.isfinite(vals)] if vals.dtype.kind == "f" else vals)
        lo, hi = [], []
        for i, band in enumerate(self.bands):
            vals = np.concatenate(samples[i]) if samples[i] else np.array([])
            if vals.size == 0:
                raise BadInput(
                    f"raster {self.path!r}: no valid pixels found in band {band} of sampled windows; "
                    "check its nodata value and mask."
                )
            p2, p98 = np.percentile(vals, [2, 98])
            lo.append(p2)
            hi.append(p98 if p98 > p2 else p2 + 1)
        return Stretch(np.array(lo, dtype=np.float64), np.array(hi, dtype=np.float64))

    def to_rgb8(self, data: np.ndarray) -> np.ndarray:
        """Raw band values (bands, h, w) -> uint8 RGB (3, h, w) with this raster's stretch."""
        return to_rgb8(data, self.stretch)

    # -- reading ----------------------------------------------------------------
    def _read_padded(self, window: Window, with_data: bool = True):
        """Read a window that may hang over the right/bottom edge; outside is 0/invalid."""
        ds = self.dataset
        c0, r0 = int(window.col_off), int(window.row_off)
        w, h = int(window.width), int(window.height)
        inner = Window(c0, r0, max(0, min(w, ds.width - c0)), max(0, min(h, ds.height - r0)))
        mask = np.zeros((h, w), dtype=bool)
        if self.all_valid:
            mask[: inner.height, : inner.width] = True
        else:
            mask[: inner.height, : inner.width] = ds.dataset_mask(window=inner) > 0
        if not with_data and not self.checks_finite:
            return None, mask
        raw = ds.read(self.bands, window=inner)
        if self.checks_finite:
            mask[: inner.height, : inner.width] &= finite_pixels(raw)
        if not with_data:
            return None, mask
        data = np.zeros((3, h, w), dtype=np.uint8)
        data[:, : inner.height, : inner.width] = self.to_rgb8(raw)
        return data, mask

    def _block_window(self, row: int, col0: int, col1: int) -> Window:
        g = self.grid
        return Window(col0 * g.stride, row * g.stride, (col1 - col0 - 1) * g.stride + g.size, g.size)

    def valid_fraction(self, block_cols: int = 64, progress=None) -> np.ndarray:
        """(n_rows, n_cols) share of each tile's pixels that are inside the raster and valid (not nodata, not
        masked, finite in every band)."""
        g = self.grid
        out = np.empty(g.shape, dtype=np.float32)
        for r in range(g.n_rows):
            for c0 in range(0, g.n_cols, block_cols):
                c1 = min(g.n_cols, c0 + block_cols)
                _, mask = self._read_padded(self._block_window(r, c0, c1), with_data=False)
                for c in range(c0, c1):
                    x = (c - c0) * g.stride
                    out[r, c] = mask[:, x: x + g.size].mean()
            if progress is not None:
                progress(r + 1, g.n_rows)
        return out

    def read_tiles(self, row: int, cols: Sequence[int]) -> np.ndarray:
        """uint8 array (n, 3, size, size) of the tiles at ``row`` and the sorted ``cols``.

        Reads one window spanning the tiles, so neighbours share a single read.
        Invalid pixels are set to 0.
        """
        g = self.grid
        cols = list(cols)
        c0, c1 = cols[0], cols[-1] + 1
        data, mask = self._read_padded(self._block_window(row, c0, c1))
        data[:, ~mask] = 0
        out = np.empty((len(cols), 3, g.size, g.size), dtype=np.uint8)
        for i, c in enumerate(cols):
            x = (c - c0) * g.stride
            out[i] = data[:, :, x: x + g.size]
        return out

    def read_window_rgb(self, col_off: int, row_off: int, size: int) -> np.ndarray:
        """uint8 (3, size, size) at any pixel offset, off-grid (DeepCluster's training crops).

        The window may hang over any edge (negative offsets too); pixels
        outside the raster or invalid are 0, as in ``read_tiles``.
        """
        ds = self.dataset
        out = np.zeros((3, size, size), dtype=np.uint8)
        c0, r0 = max(0, int(col_off)), max(0, int(row_off))
        c1, r1 = min(ds.width, int(col_off) + size), min(ds.height, int(row_off) + size)
        if c1 > c0 and r1 > r0:
            data, mask = self._read_padded(Window(c0, r0, c1 - c0, r1 - r0))
            data[:, ~mask] = 0
            out[:, r0 - int(row_off): r1 - int(row_off), c0 - int(col_off): c1 - int(col_off)] = data
        return out

    def read_quicklook(self, max_side: int = 1024) -> tuple[np.ndarray, Affine]:
        """A decimated uint8 RGB image (h, w, 3) of the working raster, with its transform."""
        ds = self.dataset
        scale = max(1.0, max(ds.width, ds.height) / max_side)
        h, w = max(1, int(ds.height / scale)), max(1, int(ds.width / scale))
        raw = ds.read(self.bands, out_shape=(len(self.bands), h, w), resampling=Resampling.average)
        rgb = self.to_rgb8(raw)
        transform = ds.transform @ Affine.scale(ds.width / w, ds.height / h)
        return np.moveaxis(rgb, 0, -1), transform
