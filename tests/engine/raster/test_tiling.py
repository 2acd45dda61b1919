"""Tiling: grid arithmetic, where tiles are on the ground, bands, dtypes and validity."""
from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import Geod, Transformer
from shapely.geometry import Point

from engine.errors import BadInput
from engine.raster.tiling import GDAL_ENV, MIN_BLOCK_CACHE, Length, TiledRaster, TileGrid, block_cache_bytes, utm_crs_for
from engine.tools.cluster import tile_frames
from tests.engine.helpers import shared


# ------------------------------------------------------------------ Length
@pytest.mark.parametrize("text, value, unit", [("64px", 64, "px"), ("64", 64, "px"), ("20m", 20, "m"),
                                               ("12.5 m", 12.5, "m"), (32, 32, "px")])
def test_length_parses(text, value, unit):
    length = Length.parse(text)
    assert (length.value, length.unit) == (value, unit)


@pytest.mark.parametrize("text", ["64 pixels", "m20", "-3px", "12.5px", ""])
def test_length_rejects_nonsense(text):
    with pytest.raises(BadInput, match="--tile-size"):
        Length.parse(text)


# ------------------------------------------------------------------ grid arithmetic
@settings(max_examples=150, deadline=None)
@given(width=st.integers(16, 300), height=st.integers(16, 300), size=st.integers(16, 120),
       overlap_frac=st.floats(0, 0.9), edge=st.sampled_from(["drop", "pad"]))
def test_grid_covers_the_raster_exactly(width, height, size, overlap_frac, edge):
    if size > min(width, height):
        with pytest.raises(BadInput, match="larger than the raster"):
            TileGrid(width, height, size, size, Affine.identity(), edge)
        return
    stride = max(1, size - int(overlap_frac * size))
    grid = TileGrid(width, height, size, stride, Affine.identity(), edge)
    covered = np.zeros((height, width), dtype=np.int32)
    for tile in grid:
        w = tile.window
        assert w.col_off < width and w.row_off < height, "a tile starts outside the raster"
        if edge == "drop":
            assert w.col_off + size <= width and w.row_off + size <= height
        covered[int(w.row_off): int(w.row_off) + size, int(w.col_off): int(w.col_off) + size] += 1
    if edge == "pad":
        assert covered.min() >= 1, "pad leaves pixels uncovered"
    else:
        # only a right/bottom margin thinner than one stride is left out
        assert covered[: height - (height - size) % stride, : width - (width - size) % stride].min() >= 1
    if stride == size:
        assert covered.max() == 1, "tiles without overlap must not overlap"
    ids = [t.id for t in grid]
    assert ids == list(range(len(grid)))


def test_pad_edge_counts_outside_pixels_as_invalid(make_raster, rgb_noise):
    path = make_raster("pad.tif", rgb_noise(100, 100))
    with TiledRaster(path, "64px", edge="pad") as tiled:
        assert tiled.grid.shape == (2, 2)
        valid = tiled.valid_fraction()
        tiles = tiled.read_tiles(1, [1])
    assert valid[0, 0] == 1.0
    assert valid[1, 1] == pytest.approx(36 * 36 / 64 ** 2)
    assert (tiles[0, :, 36:, :] == 0).all() and (tiles[0, :, :, 36:] == 0).all()


# ------------------------------------------------------------------ GDAL's block cache
MIB = 1024 * 1024


def test_block_cache_holds_the_blocks_one_row_of_tiles_spans():
    # 64 px tiles in 512 px blocks never straddle two block rows: one row of blocks, RGB, a quarter more
    assert block_cache_bytes(16384, 3, 1, 512, 64, 64, 256, mask=False) == 512 * 16384 * 3 * 5 // 4
    # a one-byte mask band is read too when validity is not known by construction
    assert block_cache_bytes(16384, 3, 1, 512, 64, 64, 256, mask=True) == 512 * 16384 * 4 * 5 // 4
    # 100 px tiles in 256 px blocks: some rows straddle two block rows
    assert block_cache_bytes(8192, 3, 1, 256, 100, 100, 80, mask=False) == 2 * 256 * 8192 * 3 * 5 // 4
    # 64 px tiles with 32 px overlap in 64 px blocks: every row after the first spans two
    assert block_cache_bytes(32768, 3, 1, 64, 64, 32, 100, mask=False) == 2 * 64 * 32768 * 3 * 5 // 4
    # one row of tiles of a striped file spans many one-row strips
    assert block_cache_bytes(65536, 3, 1, 1, 64, 64, 100, mask=False) == 64 * 65536 * 3 * 5 // 4


def test_block_cache_stays_between_8_and_64_mib():
    assert block_cache_bytes(1024, 3, 1, 256, 64, 64, 16) == MIN_BLOCK_CACHE
    assert block_cache_bytes(200_000, 4, 2, 512, 224, 224, 900) == GDAL_ENV["GDAL_CACHEMAX"] == 64 * MIB


def test_an_open_raster_sets_the_cache_it_needs_and_closing_restores_the_enclosing_one(make_raster, rgb_noise):
    wide = make_raster("wide.tif", rgb_noise(512, 6144), tiled=True, blockxsize=512, blockysize=512)
    small = make_raster("small.tif", rgb_noise(256, 256))
    with TiledRaster(wide, "64px") as tiled:
        need = block_cache_bytes(6144, 3, 1, 512, 64, 64, tiled.grid.n_rows, mask=False)
        assert MIN_BLOCK_CACHE < need < GDAL_ENV["GDAL_CACHEMAX"]
        assert rasterio.env.getenv()["GDAL_CACHEMAX"] == need
        with TiledRaster(small, "64px"):
            assert rasterio.env.getenv()["GDAL_CACHEMAX"] == MIN_BLOCK_CACHE
        assert rasterio.env.getenv()["GDAL_CACHEMAX"] == need
        assert tiled.read_tiles(0, range(96)).shape == (96, 3, 64, 64)
    assert not rasterio.env.hasenv()


@pytest.mark.parametrize("tile_size, edge", [("512px", "drop"), ("8px", "drop"), ("64px", "wrap")])
def test_a_raster_refused_on_opening_leaves_no_gdal_settings_behind(make_raster, rgb_noise, tile_size, edge):
    """A process that goes on after a refusal (the Python API, a Dask worker, the CLI called in-process) keeps
    GDAL's settings as they were: tiles larger than the raster, too small, or an unknown edge rule."""
    small = make_raster("small.tif", rgb_noise(256, 256))
    with pytest.raises(BadInput):
        TiledRaster(small, tile_size, edge=edge)
    assert not rasterio.env.hasenv()


# ------------------------------------------------------------------ tiles on the ground
def _marker_raster(make_raster, crs, transform, size=(512, 512), at=(300, 200)):
    """Noise with a 6x6 pure-magenta marker whose top-left pixel is at (row, col) ``at``."""
    data = np.random.default_rng(1).integers(60, 200, size=(3, *size), dtype=np.uint8)
    r, c = at
    data[:, r: r + 6, c: c + 6] = np.array([255, 0, 255], dtype=np.uint8)[:, None, None]
    path = make_raster(f"marker_{crs.replace(':', '')}.tif", data, crs=crs, transform=transform)
    with rasterio.open(path) as src:
        x, y = src.xy(r + 3, c + 3)
    return path, (x, y)


def _tile_holding(tiled, point):
    rows, cols = np.indices(tiled.grid.shape).reshape(2, -1)
    frame = next(tile_frames(tiled, rows, cols, {"row": rows, "col": cols}))
    hit = frame[frame.contains(Point(point))]
    assert len(hit) == 1, f"{len(hit)} tiles contain the marker"
    return int(hit.row.iloc[0]), int(hit.col.iloc[0]), hit.geometry.iloc[0]


def _is_magenta(tile):
    r, g, b = tile.astype(int)
    return ((r > 200) & (g < 60) & (b > 200)).sum()


def test_tile_polygons_are_where_the_pixels_are_projected(make_raster):
    path, point = _marker_raster(make_raster, "EPSG:32630", Affine(0.5, 0, 500000, 0, -0.5, 700000))
    with TiledRaster(path, "64px") as tiled:
        row, col, poly = _tile_holding(tiled, point)
        assert (row, col) == (300 // 64, 200 // 64)
        assert poly.bounds == pytest.approx((500000 + col * 32, 700000 - (row + 1) * 32,
                                             500000 + (col + 1) * 32, 700000 - row * 32))
        assert _is_magenta(tiled.read_tiles(row, [col])[0]) == 36


def test_metre_tiles_on_projected_raster_use_its_pixel_size(make_raster, rgb_noise):
    path = make_raster("utm.tif", rgb_noise(200, 200), transform=Affine(0.25, 0, 500000, 0, -0.25, 700000))
    with TiledRaster(path, "16m", overlap="4m") as tiled:
        assert not tiled.warped
        assert (tiled.grid.size, tiled.grid.stride) == (64, 48)


@pytest.mark.parametrize("crs, lat", [("EPSG:4326", 0.31), ("EPSG:3857", 0.31), ("EPSG:3857", 50.0)])
def test_metre_tiles_are_true_ground_squares_on_geographic_and_web_mercator(make_raster, crs, lat):
    lon = 32.58
    to_crs = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    x0, y0 = to_crs.transform(lon, lat)
    # about 0.3 m ground pixels in the raster's own units
    if crs == "EPSG:4326":
        res_x, res_y = 0.3 / (111320 * np.cos(np.radians(lat))), 0.3 / 110574
    else:
        res_x = res_y = 0.3 / np.cos(np.radians(lat))
    path, point = _marker_raster(make_raster, crs, Affine(res_x, 0, x0, 0, -res_y, y0))
    with TiledRaster(path, "20m") as tiled:
        assert tiled.warped and tiled.working_crs == utm_crs_for(lon, lat)
        assert tiled.pixel_size_m == pytest.approx(0.3, rel=0.02)
        row, col, poly = _tile_holding(tiled, point)
        assert _is_magenta(tiled.read_tiles(row, [col])[0]) >= 25   # resampled, still there
    # the polygon is written in the raster's CRS and measures 20 m on the ground
    to_ll = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    lons, lats = to_ll.transform(*np.asarray(poly.exterior.coords).T)
    _, _, sides = Geod(ellps="WGS84").inv(lons[:-1], lats[:-1], lons[1:], lats[1:])
    assert sides == pytest.approx([20.0] * 4, rel=0.02)


# ------------------------------------------------------------------ bands, dtypes, validity
def test_real_16bit_single_band_is_stretched_and_replicated():
    path = shared("atlanta_us_spacenet4_pan_0p5m.tif")
    with rasterio.open(path) as src:
        assert src.dtypes[0] == "uint16" and src.count == 1
        full = src.read(1)
        valid = src.read_masks(1) > 0
    lo, hi = np.percentile(full[valid], [2, 98])
    with TiledRaster(path, "64px") as tiled:
        assert tiled.bands == [1]
        s_lo, s_hi = tiled.stretch.lo[0], tiled.stretch.hi[0]
        assert abs(s_lo - lo) < 0.05 * (hi - lo) and abs(s_hi - hi) < 0.05 * (hi - lo)
        tiles = np.concatenate([tiled.read_tiles(r, range(tiled.grid.n_cols)) for r in range(tiled.grid.n_rows)])
    assert tiles.dtype == np.uint8 and tiles.shape[1] == 3
    assert (tiles[:, 0] == tiles[:, 1]).all() and (tiles[:, 1] == tiles[:, 2]).all()
    share_low, share_high = (tiles[:, 0] == 0).mean(), (tiles[:, 0] == 255).mean()
    assert 0.005 < share_low < 0.06 and 0.005 < share_high < 0.06   # about 2% clipped at each end


def test_stretch_is_estimated_from_windows_not_the_whole_raster(make_raster, monkeypatch):
    data = np.random.default_rng(0).integers(200, 3000, size=(3, 1024, 1024), dtype=np.uint16)
    path = make_raster("u16.tif", data)
    seen = []
    real_read = rasterio.io.DatasetReader.read

    def spy(self, *args, **kwargs):
        w = kwargs.get("window")
        seen.append(None if w is None else (int(w.height), int(w.width)))
        return real_read(self, *args, **kwargs)

    monkeypatch.setattr(rasterio.io.DatasetReader, "read", spy)
    with TiledRaster(path, "64px"):
        pass
    assert seen and None not in seen and max(h * w for h, w in seen) <= 512 * 512


def test_band_choice_and_unknown_band(make_raster, rgb_noise):
    data = rgb_noise(128, 128)
    path = make_raster("rgb.tif", data)
    with TiledRaster(path, "64px", bands="2") as tiled:
        tile = tiled.read_tiles(0, [0])[0]
    assert (tile == data[1, :64, :64]).all(axis=(1, 2)).all()
    with TiledRaster(path, "64px", bands="3,2,1") as tiled:
        assert (tiled.read_tiles(0, [1])[0] == data[::-1, :64, 64:128]).all()
    with pytest.raises(BadInput, match="band 4 does not exist"):
        TiledRaster(path, "64px", bands="1,2,4")
    with pytest.raises(BadInput, match="one band .* or three"):
        TiledRaster(path, "64px", bands="1,2")


def test_nodata_value_becomes_the_validity_mask(make_raster, rgb_noise):
    data = rgb_noise(128, 256)
    data[:, :, :128] = 0
    data[data == 0] = 1
    data[:, :, :128] = 0
    path = make_raster("nodata.tif", data, nodata=0)
    with TiledRaster(path, "64px") as tiled:
        valid = tiled.valid_fraction()
    assert valid[:, :2].max() == 0 and valid[:, 2:].min() == 1


def test_alpha_band_becomes_the_validity_mask(make_raster, rgb_noise):
    rgb = rgb_noise(128, 128)
    alpha = np.full((1, 128, 128), 255, dtype=np.uint8)
    alpha[:, :80] = 0
    path = make_raster("rgba.tif", np.concatenate([rgb, alpha]), photometric="RGB", alpha="YES")
    with TiledRaster(path, "64px") as tiled:
        assert tiled.bands == [1, 2, 3]
        valid = tiled.valid_fraction()
    assert valid[0].tolist() == [0, 0] and valid[1].tolist() == pytest.approx([48 / 64] * 2)


# ------------------------------------------------------------------ bad rasters
def test_missing_raster(tmp_path):
    with pytest.raises(BadInput, match="does not exist"):
        TiledRaster(tmp_path / "nope.tif")


def test_unreadable_raster(tmp_path):
    path = tmp_path / "text.tif"
    path.write_text("not a raster")
    with pytest.raises(BadInput, match="cannot be read"):
        TiledRaster(path)


def test_raster_without_crs(make_raster, rgb_noise):
    path = make_raster("nocrs.tif", rgb_noise(64, 64), crs=None)
    with pytest.raises(BadInput, match="no coordinate reference system"):
        TiledRaster(path)


def test_raster_without_geotransform(tmp_path, rgb_noise):
    path = tmp_path / "nogt.tif"
    with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=3, dtype="uint8") as dst:
        dst.write(rgb_noise(64, 64))
    with pytest.raises(BadInput, match="no (geotransform|coordinate reference)"):
        TiledRaster(path)


def test_tile_larger_than_raster(make_raster, rgb_noise):
    path = make_raster("small.tif", rgb_noise(50, 80))
    with pytest.raises(BadInput, match="larger than the raster"):
        TiledRaster(path, "64px")
