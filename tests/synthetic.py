"""Synthetic city generator for tests and benchmarks.

`make_city` writes a GeoTIFF made of square zone blocks, each of one of four
urban-form types (see `ZONES`), and returns the ground truth that produced
it: the zone of every block, every building footprint and the road lines.

All geometry is drawn in ground metres inside a block (x to the right, y
down), rasterised with rasterio over a textured background, and mapped to
the raster CRS through one affine per block. Only numpy, rasterio, shapely
and geopandas are used; nothing here imports QGIS or Qt.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
import shapely
from affine import Affine
from rasterio.enums import ColorInterp
from rasterio.features import rasterize
from shapely.affinity import translate
from shapely.geometry import LineString, Point, Polygon, box

ZONES = ("informal", "formal", "vegetation", "bare")  # zone ids 0..3
INFORMAL, FORMAL, VEGETATION, BARE = range(4)

# Colours (RGB, 0-255).
SOIL_RED = (152, 106, 76)
DIRT_PATH = (122, 92, 70)
ASPHALT = (68, 68, 72)
GRASS = (112, 146, 78)
PAVING = (168, 164, 154)
SAND = (198, 178, 142)
TRACK = (176, 156, 124)
CANOPY = (48, 86, 44)
SHADOW = (42, 44, 42)
INFORMAL_ROOFS = ((172, 172, 166), (140, 82, 52), (158, 62, 48), (104, 104, 102), (205, 205, 198))
FORMAL_ROOFS = ((188, 188, 186), (228, 228, 222), (84, 118, 168), (204, 194, 174))

PRIMARY_WIDTH_M = 12.0


@dataclass(frozen=True)
class SyntheticCity:
    """A generated city: the raster on disk and the truth behind it."""

    raster: Path
    footprints: "geopandas.GeoDataFrame"  # noqa: F821  columns: zone, geometry
    roads: "geopandas.GeoDataFrame"  # noqa: F821  columns: highway, geometry
    zones: np.ndarray
    zone_px: int
    transform: Affine
    crs: str

    def zone_of_tiles(self, tile_px: int) -> np.ndarray:
        """(rows, cols) array of the true zone of each tile of a tile_px grid
        anchored at the raster's top-left corner with no overlap; tile_px
        must divide zone_px (ValueError otherwise)."""
        if tile_px <= 0 or self.zone_px % tile_px:
            raise ValueError(f"tile_px={tile_px} must be a positive divisor of zone_px={self.zone_px}")
        k = self.zone_px // tile_px
        return np.repeat(np.repeat(self.zones, k, axis=0), k, axis=1)


# --------------------------------------------------------------------------- units


def metres_per_unit(crs, origin, res: float, height_px: int) -> tuple[float, float]:
    """Approximate ground metres per CRS unit along x and y at the raster centre.

    Geographic CRS: 1 deg of longitude ~ 111320 m * cos(lat), 1 deg of
    latitude ~ 110574 m. Web Mercator: one unit is cos(lat) metres. Other
    projected CRSs: the linear unit's size in metres (1 for metres)."""
    from pyproj import CRS

    c = CRS.from_user_input(crs)
    y_centre = origin[1] - res * height_px / 2
    if c.is_geographic:
        return 111320.0 * math.cos(math.radians(y_centre)), 110574.0
    if c.to_epsg() == 3857:
        lat = 2 * math.atan(math.exp(y_centre / 6378137.0)) - math.pi / 2
        return (math.cos(lat),) * 2
    factor = c.axis_info[0].unit_conversion_factor if c.axis_info else 1.0
    return factor, factor


# --------------------------------------------------------------------------- drawing helpers


def _value_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Smooth noise in [-1, 1]: a random grid every `cell` pixels, bilinearly
    interpolated with a smoothstep."""
    cell = max(float(cell), 1.0)
    grid = rng.uniform(-1, 1, (int(h / cell) + 2, int(w / cell) + 2))
    y, x = np.arange(h) / cell, np.arange(w) / cell
    iy, ix = y.astype(int), x.astype(int)
    fy, fx = (y - iy)[:, None], (x - ix)[None, :]
    fy, fx = fy * fy * (3 - 2 * fy), fx * fx * (3 - 2 * fx)
    top = grid[iy][:, ix] * (1 - fx) + grid[iy][:, ix + 1] * fx
    bottom = grid[iy + 1][:, ix] * (1 - fx) + grid[iy + 1][:, ix + 1] * fx
    return top * (1 - fy) + bottom * fy


def _rect(cx: float, cy: float, a: float, b: float, theta: float = 0.0) -> Polygon:
    """Rectangle of sides a (along theta) and b centred on (cx, cy)."""
    c, s = math.cos(theta), math.sin(theta)
    corners = np.array([[-a, -b], [a, -b], [a, b], [-a, b]]) / 2
    return Polygon(corners @ np.array([[c, s], [-s, c]]) + (cx, cy))


def _jitter(rng: np.random.Generator, colour) -> tuple:
    """A colour with random brightness and a little hue noise."""
    rgb = np.asarray(colour, float) * rng.uniform(0.88, 1.08) + rng.normal(0, 4, 3)
    return tuple(np.clip(rgb, 0, 255))


@dataclass
class _Block:
    """One zone block being drawn, in local ground metres (x right, y down)."""

    rng: np.random.Generator
    px: int  # side in pixels
    pmx: float  # ground metres per pixel along x
    pmy: float  # ground metres per pixel along y
    keep_out: object = None  # shapely geometry where no building may go
    shapes: list = field(default_factory=list)  # (geometry, rgb) in paint order
    buildings: list = field(default_factory=list)
    roads: list = field(default_factory=list)

    @property
    def width(self) -> float:
        return self.px * self.pmx

    @property
    def height(self) -> float:
        return self.px * self.pmy

    def paint(self, geom, colour) -> None:
        self.shapes.append((geom, _jitter(self.rng, colour)))

    def building(self, roof: Polygon, colour, shadow_m: float) -> None:
        """Add a building (shadow then roof) unless it leaves the block or
        touches the keep-out area."""
        if not box(0, 0, self.width, self.height).contains(roof):
            return
        if self.keep_out is not None and roof.intersects(self.keep_out):
            return
        self.shapes.append((translate(roof, shadow_m, shadow_m), SHADOW))
        self.paint(roof, colour)
        self.buildings.append(roof)

    def tree(self, x: float, y: float, r: float, colour=CANOPY) -> None:
        """A round crown with a lighter sunlit side."""
        self.paint(Point(x, y).buffer(r, 6), colour)
        self.paint(Point(x - r / 4, y - r / 4).buffer(r / 2, 4), np.multiply(colour, 1.25))

    def background(self, base, amp, cell_m=(8.0, 1.5)) -> np.ndarray:
        """Base colour plus two octaves of smooth noise scaled by amp per channel."""
        pm = (self.pmx + self.pmy) / 2
        n = 0.65 * _value_noise(self.rng, self.px, self.px, cell_m[0] / pm)
        n += 0.35 * _value_noise(self.rng, self.px, self.px, cell_m[1] / pm)
        return np.asarray(base, np.float32) + np.asarray(amp, np.float32) * n[..., None]

    def render(self, canvas: np.ndarray) -> np.ndarray:
        """Rasterise the shapes, in order, over the (px, px, 3) canvas."""
        if not self.shapes:
            return canvas
        geoms = shapely.transform(np.array([g for g, _ in self.shapes]), lambda xy: xy / (self.pmx, self.pmy))
        idx = rasterize(zip(geoms, range(1, len(geoms) + 1)), out_shape=(self.px, self.px), dtype="int32")
        palette = np.array([(0, 0, 0)] + [c for _, c in self.shapes], np.float32)
        mask = idx > 0
        canvas[mask] = palette[idx[mask]]
        return canvas


# --------------------------------------------------------------------------- zones


def _split(rng, rect, max_side, min_side, gap, out, cuts=None):
    """Binary space partition of rect (x0, y0, x1, y1) into pieces no longer
    than max_side and no shorter than min_side, `gap()` apart. Cut lines and
    their widths go to `cuts` when given."""
    x0, y0, x1, y1 = rect
    g = gap()
    vertical = x1 - x0 >= y1 - y0
    lo, hi = (x0, x1) if vertical else (y0, y1)
    if max(x1 - x0, y1 - y0) <= max_side or hi - lo < 2 * min_side + g:
        out.append(rect)
        return
    t = rng.uniform(lo + min_side + g / 2, hi - min_side - g / 2)
    if cuts is not None:
        cuts.append(((t, y0, t, y1) if vertical else (x0, t, x1, t), g))
    a, b = t - g / 2, t + g / 2
    halves = ((x0, y0, a, y1), (b, y0, x1, y1)) if vertical else ((x0, y0, x1, a), (x0, b, x1, y1))
    for half in halves:
        _split(rng, half, max_side, min_side, gap, out, cuts)


def _informal(b: _Block) -> np.ndarray:
    """Compounds between dirt alleys, each packed with small roofs of 4-8 m
    sharing one random orientation; red soil and a few trees."""
    rng, compounds, alleys = b.rng, [], []
    _split(rng, (1.0, 1.0, b.width - 1.0, b.height - 1.0), 36.0, 14.0, lambda: 2.0, compounds, alleys)
    for (ax0, ay0, ax1, ay1), gap in alleys:
        b.paint(LineString([(ax0, ay0), (ax1, ay1)]).buffer(gap / 2, cap_style="flat"), DIRT_PATH)
    weights = np.array([0.35, 0.25, 0.15, 0.15, 0.10])
    for x0, y0, x1, y1 in compounds:
        theta, half = rng.uniform(0, math.pi / 2), math.hypot(x1 - x0, y1 - y0) / 2
        c, s, cx, cy = math.cos(theta), math.sin(theta), (x0 + x1) / 2, (y0 + y1) / 2
        plots = []  # plots in the compound's rotated frame, covering it
        _split(rng, (-half, -half, half, half), 8.5, 4.0, lambda: rng.uniform(0.4, 1.0), plots)
        area = box(x0, y0, x1, y1)
        for px0, py0, px1, py1 in plots:
            u, v = (px0 + px1) / 2, (py0 + py1) / 2
            rect = _rect(cx + u * c - v * s, cy + u * s + v * c, px1 - px0, py1 - py0, theta)
            roof = rect.intersection(area)  # roofs on the compound edge are cut by its alley
            if roof.geom_type != "Polygon" or roof.area < max(8.0, 0.5 * rect.area):
                continue
            if rng.random() < 0.1:  # an empty yard, sometimes with a tree
                if rng.random() < 0.5:
                    b.tree(roof.centroid.x, roof.centroid.y, min(px1 - px0, py1 - py0) / 2.5)
                continue
            colour = INFORMAL_ROOFS[rng.choice(len(INFORMAL_ROOFS), p=weights)]
            b.building(roof, colour, shadow_m=0.5)
    return b.background(SOIL_RED, (16, 13, 10))


def _grid_layout(rng, span: float, gap: float) -> tuple[int, float]:
    """How many buildings fit along `span` and the cell each one gets."""
    options = [k for k in (1, 2, 3) if 10.0 <= (span - (k - 1) * gap) / k <= 22.0]
    k = int(rng.choice(options)) if options else 1
    return k, (span - (k - 1) * gap) / k


def _formal(b: _Block) -> np.ndarray:
    """Streets every ~40 m along the block grid, aligned gabled buildings of
    about 12-20 m in a regular grid, lawns and a few garden trees."""
    rng, street, setback, gap = b.rng, 6.0, 1.5, 2.5
    nx, ny = max(1, round(b.width / 40.0)), max(1, round(b.height / 40.0))
    sx, sy = b.width / nx, b.height / ny
    for i in range(nx):
        x = i * sx + street / 2
        b.paint(box(x - street / 2, 0, x + street / 2, b.height), ASPHALT)
        b.roads.append(LineString([(x, 0), (x, b.height)]))
    for j in range(ny):
        y = j * sy + street / 2
        b.paint(box(0, y - street / 2, b.width, y + street / 2), ASPHALT)
        b.roads.append(LineString([(0, y), (b.width, y)]))
    kx, cx_ = _grid_layout(rng, sx - street - 2 * setback, gap)
    ky, cy_ = _grid_layout(rng, sy - street - 2 * setback, gap)
    if min(cx_, cy_) < 6.0:
        return b.background(GRASS, (14, 22, 12))
    for i in range(nx):
        for j in range(ny):
            x0, y0 = i * sx + street + setback, j * sy + street + setback
            for _ in range(rng.poisson(2)):
                b.tree(x0 + rng.uniform(0, sx - street), y0 + rng.uniform(0, sy - street), rng.uniform(1.5, 3.0))
            fill_x, fill_y = rng.uniform(0.75, 0.95, 2)
            bw, bh = min(20.0, cx_ * fill_x), min(20.0, cy_ * fill_y)
            colour = FORMAL_ROOFS[rng.integers(len(FORMAL_ROOFS))]
            for u in range(kx):
                for v in range(ky):
                    cx, cy = x0 + (u + 0.5) * cx_ + u * gap, y0 + (v + 0.5) * cy_ + v * gap
                    _gabled(b, cx, cy, bw, bh, colour)
    grass = b.background(GRASS, (14, 22, 12))
    paved = _value_noise(rng, b.px, b.px, 12.0 / b.pmx)[..., None] > 0.45
    return np.where(paved, np.asarray(PAVING, np.float32), grass)


def _gabled(b: _Block, cx: float, cy: float, w: float, h: float, colour) -> None:
    """An axis-aligned building whose roof has a darker half below the ridge."""
    n = len(b.buildings)
    b.building(_rect(cx, cy, w, h), colour, shadow_m=1.2)
    if len(b.buildings) > n:
        half = _rect(cx, cy + h / 4, w, h / 2) if w >= h else _rect(cx + w / 4, cy, w / 2, h)
        b.shapes.append((half, tuple(np.multiply(b.shapes[-1][1], 0.85))))


def _crown_radii(rng, n: int) -> np.ndarray:
    """Tree crown radii in metres: mostly 2-5 m, a few up to 8 m."""
    return np.clip(rng.lognormal(math.log(3.0), 0.45, n), 1.2, 8.0)


def _vegetation(b: _Block) -> np.ndarray:
    """Tree canopy of varied crowns over lighter grass, with shadows."""
    rng = b.rng
    mean_area = np.mean(math.pi * _crown_radii(rng, 1000) ** 2)
    n = int(rng.uniform(0.45, 0.7) * b.width * b.height / mean_area)  # 45-70 % cover
    radii = _crown_radii(rng, n)
    xs, ys = rng.uniform(0, b.width, n), rng.uniform(0, b.height, n)
    for x, y, r in zip(xs, ys, radii):
        b.paint(Point(x + r / 3, y + r / 3).buffer(r, 6), SHADOW)
    for x, y, r in zip(xs, ys, radii):
        b.tree(x, y, r, np.multiply(CANOPY, rng.uniform(0.85, 1.2)))
    return b.background(GRASS, (12, 20, 12), cell_m=(10.0, 2.0))


def _bare(b: _Block) -> np.ndarray:
    """Bare soil or sand with a light texture and sometimes a track."""
    rng = b.rng
    if rng.random() < 0.6:
        ys = np.sort(rng.uniform(0, b.height, 4)) if rng.random() < 0.5 else rng.uniform(0, b.height, 4)
        pts = list(zip(np.linspace(0, b.width, 4), ys))
        b.paint(LineString(pts).buffer(1.2, cap_style="flat"), TRACK)
    return b.background(SAND, (14, 12, 10), cell_m=(15.0, 1.0))


PAINTERS = (_informal, _formal, _vegetation, _bare)


# --------------------------------------------------------------------------- city


def _layout(rng: np.random.Generator, zone_grid) -> np.ndarray:
    """A shuffled tiling of the zone ids: balanced, all present when n >= 4."""
    rows, cols = zone_grid
    return rng.permutation(np.resize(np.arange(len(ZONES)), rows * cols)).reshape(rows, cols)


def _check_args(zones, zone_px, res, dtype, bands, crs, origin):
    """Fail early with a message that names the bad argument."""
    from pyproj import CRS

    if zones.ndim != 2 or zones.size == 0 or zones.min() < 0 or zones.max() >= len(ZONES):
        raise ValueError(f"zones must be a non-empty 2D array of ids 0..{len(ZONES) - 1}")
    if zone_px < 8 or res <= 0:
        raise ValueError("zone_px must be >= 8 and res > 0")
    if dtype not in ("uint8", "uint16") or bands not in (1, 3):
        raise ValueError("dtype must be 'uint8' or 'uint16' and bands 1 or 3")
    if CRS.from_user_input(crs).is_geographic and not (abs(origin[0]) <= 180 and abs(origin[1]) <= 90):
        raise ValueError(f"origin {origin} is not in degrees; pass (lon, lat) for a geographic crs")


def _to_crs(geoms: list, aff: Affine) -> np.ndarray:
    """Apply an affine (local units -> CRS) to a list of shapely geometries."""
    a, b, c, d, e, f = aff[:6]
    return shapely.transform(np.array(geoms, dtype=object), lambda xy: xy @ [[a, d], [b, e]] + (c, f))


def _finish(rgb: np.ndarray, rng, dtype: str, bands: int, nodata) -> np.ndarray:
    """Noise, band count and dtype: (H, W, 3) floats -> (bands, H, W) array."""
    h, w, _ = rgb.shape
    rgb *= 1 + 0.05 * _value_noise(rng, h, w, 2.0)[..., None]
    rgb += rng.normal(0, 3.0, rgb.shape).astype(np.float32)
    img = np.clip(rgb, 0, 255).transpose(2, 0, 1)
    if bands == 1:
        img = img.mean(axis=0, keepdims=True)
    if dtype == "uint16":
        img = 200 + img * (2800 / 255)
    out = np.rint(img).astype(dtype)
    if nodata is not None:  # keep painted pixels off the nodata value
        out[out == nodata] = nodata + 1 if nodata < np.iinfo(dtype).max else nodata - 1
    return out


def _write(path: Path, data: np.ndarray, transform: Affine, crs, nodata) -> None:
    """Deflate GeoTIFF, tiled 256 x 256 when at least that large."""
    bands, h, w = data.shape
    profile = dict(driver="GTiff", width=w, height=h, count=bands, dtype=data.dtype.name, crs=crs,
                   transform=transform, compress="deflate", nodata=nodata)
    if w >= 256 and h >= 256:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    path.parent.mkdir(parents=True, exist_ok=True)
    from engine.io import atomic_path

    with atomic_path(path) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        dst.write(data)
        rgb = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
        dst.colorinterp = rgb if bands == 3 else [ColorInterp.gray]


def make_city(path, *, zones=None, zone_grid=(4, 4), zone_px=256, res=0.3, crs="EPSG:32630",
              origin=(500000.0, 700000.0), seed=0, dtype="uint8", bands=3, nodata=None) -> SyntheticCity:
    """Write a synthetic city GeoTIFF to `path` and return it with its truth.

    zones: 2D array of zone ids (see ZONES), or None for a seeded, balanced
    random layout of shape zone_grid. res and origin (top-left corner) are in
    CRS units; building sizes are in ground metres whatever the CRS. The
    primary road runs along the middle row boundary (mid-height if one row).
    nodata, when given, is only declared: no pixel is painted with it."""
    import geopandas as gpd

    path = Path(path)
    zones = _layout(np.random.default_rng(seed), zone_grid) if zones is None else np.asarray(zones, dtype=int)
    _check_args(zones, zone_px, res, dtype, bands, crs, origin)
    rows, cols = zones.shape
    height, width = rows * zone_px, cols * zone_px
    transform = Affine.translation(*origin) @ Affine.scale(res, -res)
    mx, my = metres_per_unit(crs, origin, res, height)
    pmx, pmy = res * mx, res * my

    # The primary road runs along the middle row boundary; buildings keep clear of it.
    road_y = (rows // 2) * zone_px if rows >= 2 else height / 2
    half_px = (PRIMARY_WIDTH_M / 2 + 1.0) / pmy

    rgb = np.empty((height, width, 3), np.float32)
    footprints, fp_zone, roads = [], [], []
    for r in range(rows):
        for c in range(cols):
            y0, y1 = (road_y - half_px - r * zone_px) * pmy, (road_y + half_px - r * zone_px) * pmy
            keep_out = box(-1, y0, zone_px * pmx + 1, y1) if y1 > 0 and y0 < zone_px * pmy else None
            block = _Block(np.random.default_rng([seed, r, c]), zone_px, pmx, pmy, keep_out)
            canvas = PAINTERS[zones[r, c]](block)
            rgb[r * zone_px:(r + 1) * zone_px, c * zone_px:(c + 1) * zone_px] = block.render(canvas)
            to_crs = transform @ Affine.translation(c * zone_px, r * zone_px) @ Affine.scale(1 / pmx, 1 / pmy)
            footprints += list(_to_crs(block.buildings, to_crs))
            fp_zone += [int(zones[r, c])] * len(block.buildings)
            roads += list(_to_crs(block.roads, to_crs))

    primary = box(0, road_y - PRIMARY_WIDTH_M / 2 / pmy, width, road_y + PRIMARY_WIDTH_M / 2 / pmy)
    road_px = rasterize([(primary, 1)], out_shape=(height, width), dtype="uint8").astype(bool)
    rgb[road_px] = ASPHALT
    highway = ["residential"] * len(roads) + ["primary"]
    roads += list(_to_crs([LineString([(0, road_y), (width, road_y)])], transform))

    data = _finish(rgb, np.random.default_rng([seed, 1 << 20]), dtype, bands, nodata)
    _write(path, data, transform, crs, nodata)
    fp = gpd.GeoDataFrame({"zone": np.array(fp_zone, dtype=int)}, geometry=footprints, crs=crs)
    rd = gpd.GeoDataFrame({"highway": highway}, geometry=roads, crs=crs)
    return SyntheticCity(path, fp, rd, zones, zone_px, transform, str(crs))
