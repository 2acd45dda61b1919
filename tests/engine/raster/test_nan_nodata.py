"""NaN and infinities in float rasters are invalid pixels, with or without a nodata value.

A 128 x 128 float32 raster of three bands whose top-left quarter is NaN (or +inf, -inf) and that has no
nodata value: with 32 px tiles the four tiles of that quarter have valid fraction 0 and ``--min-valid``
skips them; no NaN reaches the tile arrays, the stretch or the features.
"""
from __future__ import annotations

import math
import warnings

import geopandas as gpd
import numpy as np
import pytest
from affine import Affine

from engine.progress import Progress
from engine.raster.tiling import Stretch, TiledRaster, finite_pixels, to_rgb8
from engine.tools.cluster import select_tiles
from tests.engine.helpers import write_raster

SIZE, TILE = 128, 32
BAD = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf}


def float_raster(path, fill=np.nan, nodata=None, band=None, **kw):
    rng = np.random.default_rng(0)
    data = (rng.normal(1000.0, 200.0, (3, SIZE, SIZE))).astype(np.float32)
    half = SIZE // 2
    if band is None:
        data[:, :half, :half] = fill
    else:
        data[band, :half, :half] = fill                # one band is enough to make the pixel invalid
    return write_raster(path, data, nodata=nodata, **kw)


def expected_valid() -> np.ndarray:
    v = np.ones((SIZE // TILE, SIZE // TILE), np.float32)
    v[:2, :2] = 0.0
    return v


@pytest.mark.parametrize("bad", list(BAD))
def test_nonfinite_quarter_without_nodata_is_invalid(tmp_path, bad):
    path = float_raster(tmp_path / "f.tif", BAD[bad])
    with warnings.catch_warnings():
        warnings.simplefilter("error")                  # no RuntimeWarning from casting NaN / inf
        with TiledRaster(str(path), f"{TILE}px") as tr:
            assert not tr.all_valid and tr.checks_finite
            valid = tr.valid_fraction()
            np.testing.assert_array_equal(valid, expected_valid())
            assert np.isfinite(tr.stretch.lo).all() and np.isfinite(tr.stretch.hi).all()
            assert 500 < tr.stretch.lo.min() < tr.stretch.hi.max() < 1500    # from the finite pixels only
            rows, cols, v = select_tiles(tr, 0.5, None, None, Progress("none"), str(path))
            assert len(rows) == 12
            assert not ((rows < 2) & (cols < 2)).any()
            for r in range(tr.grid.n_rows):
                tiles = tr.read_tiles(r, list(range(tr.grid.n_cols)))
                assert tiles.dtype == np.uint8
                if r < 2:
                    assert (tiles[:2] == 0).all()          # the invalid quarter reads as 0
                assert tiles[2:].std() > 10                # the valid part keeps its contrast
            crop = tr.read_window_rgb(0, 0, 80)
            assert (crop[:, :64, :64] == 0).all() and crop[:, 64:, 64:].std() > 10
            ql, _ = tr.read_quicklook(64)
            assert ql.dtype == np.uint8


def test_a_nan_in_one_band_makes_the_pixel_invalid(tmp_path):
    path = float_raster(tmp_path / "f.tif", np.nan, band=1)
    with TiledRaster(str(path), f"{TILE}px") as tr:
        np.testing.assert_array_equal(tr.valid_fraction(), expected_valid())


def test_nan_counts_as_well_as_the_nodata_value(tmp_path):
    """nodata -9999 in the bottom-right quarter and NaN in the top-left: both are invalid."""
    rng = np.random.default_rng(1)
    data = rng.normal(1000.0, 200.0, (1, SIZE, SIZE)).astype(np.float32)
    data[:, :64, :64] = np.nan
    data[:, 64:, 64:] = -9999
    data[:, 64:80, :16] = np.inf                       # a quarter of tile (2, 0)
    path = write_raster(tmp_path / "n.tif", data, nodata=-9999)
    with TiledRaster(str(path), f"{TILE}px") as tr:
        v = tr.valid_fraction()
        want = expected_valid()
        want[2:, 2:] = 0.0
        want[2, 0] = 0.75
        np.testing.assert_allclose(v, want)
        assert np.isfinite(tr.stretch.lo).all() and tr.stretch.lo[0] > 0


def test_partial_nan_tile_has_its_share(tmp_path):
    data = np.ones((1, SIZE, SIZE), np.float32)
    data[:, :16, :32] = np.nan                         # half of tile (0, 0)
    data[:, 40:48, 40:48] = 5.0
    path = write_raster(tmp_path / "p.tif", data)
    with TiledRaster(str(path), f"{TILE}px") as tr:
        v = tr.valid_fraction()
        assert v[0, 0] == pytest.approx(0.5) and (v.ravel()[1:] == 1).all()


def test_stretch_and_to_rgb8_turn_nonfinite_values_into_zero():
    s = Stretch(np.array([0.0]), np.array([10.0]))
    raw = np.array([[[np.nan, np.inf, -np.inf, 5.0, 20.0]]], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = to_rgb8(raw, s)
        assert out.shape == (3, 1, 5)
        assert out[0, 0].tolist() == [0, 0, 0, 127, 255]
        assert to_rgb8(raw, None)[0, 0].tolist() == [0, 0, 0, 5, 20]
    assert finite_pixels(raw).tolist() == [[False, False, False, True, True]]
    assert finite_pixels(np.zeros((2, 3, 4), np.uint8)).all()


def test_warped_metre_tiles_of_a_geographic_nan_raster(tmp_path):
    """Metre tiles on a geographic raster read through a warp; NaN stays invalid there and never leaks."""
    t = Affine(1e-5, 0, 32.58, 0, -1e-5, 0.35)         # ~1.1 m pixels near Kampala
    path = float_raster(tmp_path / "g.tif", np.nan, crs="EPSG:4326", transform=t)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with TiledRaster(str(path), "30m") as tr:
            assert tr.warped
            v = tr.valid_fraction()
            assert np.isfinite(v).all()
            assert v.min() < 0.1                        # the NaN quarter
            assert v.max() > 0.9
            for r in range(tr.grid.n_rows):
                tiles = tr.read_tiles(r, list(range(tr.grid.n_cols)))
                assert tiles.dtype == np.uint8


def test_cluster_run_skips_the_nan_quarter_and_its_features_are_finite(tmp_path):
    """End to end: the tiles layer has no tile in the NaN quarter and every valid_frac >= --min-valid."""
    from engine.tools.cluster import ClusterParams, run_cluster

    path = float_raster(tmp_path / "f.tif", np.nan)
    out = tmp_path / "run.gpkg"
    manifest = run_cluster(ClusterParams(raster=str(path), out=str(out), k=2, tile_size=f"{TILE}px",
                                         weights="none", seed=0, min_valid=0.5, quicklook=False,
                                         use_cache=False))
    tiles = gpd.read_file(out, layer="tiles")
    assert len(tiles) == 12
    assert not ((tiles["row"] < 2) & (tiles["col"] < 2)).any()
    assert (tiles["valid_frac"] >= 0.5).all()
    for col in ("clust_dist", "pc1", "pc2"):
        if col in tiles:
            assert tiles[col].map(math.isfinite).all(), col
    assert manifest["tiling"]["tiles_valid"] == 12


def test_features_of_nan_tiles_are_finite(tmp_path):
    from engine.features.extract import FeatureExtractor, extract_features

    path = float_raster(tmp_path / "f.tif", np.nan)
    with TiledRaster(str(path), f"{TILE}px") as tr:
        rows = np.repeat(np.arange(4), 4)
        cols = np.tile(np.arange(4), 4)
        fx = FeatureExtractor("resnet18", "none", "cpu", "fp32")
        feats = np.zeros((16, fx.dim), np.float32)
        extract_features(tr, rows, cols, fx, feats, batch_size=8)
        assert np.isfinite(feats).all()


@pytest.mark.parametrize("bad", list(BAD))
def test_segment_maps_nonfinite_pixels_as_nodata(tmp_path, bad):
    """engine.segmentation.infer.Reader: the NaN (or inf) quarter of a float raster without a nodata value is
    nodata in the mask (255) and -1 in the probabilities, and counts in no valid pixel."""
    import rasterio
    import torch
    from torch import nn

    from engine.tools.segment import SegmentParams, run_segment

    class Bright(nn.Module):                          # logit > 0 where the stretched brightness is above 128
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 1, 1)
            with torch.no_grad():
                self.conv.weight.fill_(1.0 / (3 * 8))
                self.conv.bias.fill_(-128.0 / 8)

        def forward(self, x):
            return self.conv(x.float())

    path = float_raster(tmp_path / "f.tif", BAD[bad])
    net = Bright()
    meta = {"encoder": "test", "bands": [1, 2, 3], "n_bands": 3, "stretch": None, "pixel_size_m": 0.5, "chip": 64}
    m = run_segment(SegmentParams(raster=str(path), model=(net, meta), out=str(tmp_path / "b.gpkg"), overlap=16,
                                  device="cpu", precision="fp32", probability=True))
    half = SIZE // 2
    assert m["valid_px"] == SIZE * SIZE - half * half
    with rasterio.open(tmp_path / "b_mask.tif") as ds:
        mask = ds.read(1)
    with rasterio.open(tmp_path / "b_prob.tif") as ds:
        prob = ds.read(1)
    assert (mask[:half, :half] == 255).all() and (prob[:half, :half] == -1).all()
    rest = np.ones(mask.shape, bool)
    rest[:half, :half] = False
    assert np.isin(mask[rest], (0, 1)).all() and ((prob[rest] >= 0) & (prob[rest] <= 1)).all()
