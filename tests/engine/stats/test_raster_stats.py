"""NDVI and population density per tile on generated rasters with values worked out by hand."""
from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import shapely
from affine import Affine

from engine.errors import BadInput
from engine.stats.raster import ground_area_m2, ndvi, pop_dens
from tests.engine.helpers import write_raster

X0, Y0 = 500000.0, 700000.0   # UTM 30N, about 6.3 N 3 W


def _tiles(boxes, crs="EPSG:32630"):
    return gpd.GeoSeries([shapely.box(*b) for b in boxes], crs=crs)


@pytest.fixture
def four_band(tmp_path):
    """4 x 8 px, 1 m pixels: band 1 red, band 4 NIR, bands 2-3 noise; nodata 0.

    Left 4x4 tile: NIR 60, red 20 (NDVI 0.5) except pixel (0, 0) whose NIR is
    nodata (its red of 200 would pull the mean down if it were counted).
    Right 4x4 tile: rows 0-1 NIR 30, red 10 (0.5); rows 2-3 NIR 10, red 40
    (-0.6): mean of 8 x 0.5 and 8 x -0.6 = -0.05.
    """
    data = np.full((4, 4, 8), 7, dtype=np.uint16)
    red, nir = data[0], data[3]
    red[:, :4], nir[:, :4] = 20, 60
    nir[0, 0], red[0, 0] = 0, 200
    red[:2, 4:], nir[:2, 4:] = 10, 30
    red[2:, 4:], nir[2:, 4:] = 40, 10
    return write_raster(tmp_path / "ms.tif", data, transform=Affine(1, 0, X0, 0, -1, Y0), nodata=0)


def test_ndvi_means_by_hand_with_nodata_excluded(four_band):
    tiles = _tiles([(X0, Y0 - 4, X0 + 4, Y0), (X0 + 4, Y0 - 4, X0 + 8, Y0), (X0 + 100, Y0, X0 + 104, Y0 + 4)])
    got = ndvi(four_band, tiles, nir_band=4, red_band=1)
    assert got.name == "ndvi"
    assert got.iloc[0] == pytest.approx(0.5)
    assert got.iloc[1] == pytest.approx(-0.05)
    assert np.isnan(got.iloc[2])            # outside the raster


def test_ndvi_tiles_in_another_crs_are_reprojected(four_band):
    utm = _tiles([(X0, Y0 - 4, X0 + 4, Y0), (X0 + 4, Y0 - 4, X0 + 8, Y0)])
    geo = utm.to_crs("EPSG:4326")
    got = ndvi(four_band, geo, nir_band=4, red_band=1)
    assert got.tolist() == pytest.approx([0.5, -0.05])


def test_ndvi_band_out_of_range_is_bad_input(four_band):
    with pytest.raises(BadInput, match="--nir-band 5"):
        ndvi(four_band, _tiles([(X0, Y0 - 4, X0 + 4, Y0)]), nir_band=5, red_band=1)


def test_pop_dens_area_weighted_by_hand(tmp_path):
    """100 m cells of 100, 200 / 300, 400 people."""
    data = np.array([[[100, 200], [300, 400]]], dtype=np.float32)
    pop = write_raster(tmp_path / "pop.tif", data, transform=Affine(100, 0, X0, 0, -100, Y0), nodata=-1)
    tiles = _tiles([
        (X0, Y0 - 100, X0 + 100, Y0),            # cell (0, 0): 100 / 0.01 km2
        (X0 + 50, Y0 - 100, X0 + 150, Y0),       # half of 100 + half of 200 = 150 in 0.01 km2
        (X0, Y0 - 200, X0 + 200, Y0),            # all: 1000 in 0.04 km2
        (X0 + 150, Y0 - 100, X0 + 250, Y0),      # half inside the raster: half of 200 in 0.01 km2
        (X0 + 1000, Y0, X0 + 1100, Y0 + 100),    # outside
    ])
    got = pop_dens(pop, tiles)
    assert got.name == "pop_dens"
    assert got.iloc[:4].tolist() == pytest.approx([10000, 15000, 25000, 10000])
    assert np.isnan(got.iloc[4])


def test_pop_dens_nodata_cells_count_as_no_people(tmp_path):
    data = np.array([[[100, -1]]], dtype=np.float32)
    pop = write_raster(tmp_path / "pop.tif", data, transform=Affine(100, 0, X0, 0, -100, Y0), nodata=-1)
    got = pop_dens(pop, _tiles([(X0, Y0 - 100, X0 + 200, Y0), (X0 + 100, Y0 - 100, X0 + 200, Y0)]))
    assert got.iloc[0] == pytest.approx(100 / 0.02)
    assert np.isnan(got.iloc[1])              # only a nodata cell: no valid cell overlapped


@pytest.mark.parametrize("tile_crs", ["EPSG:3857", "EPSG:4326"])
def test_pop_dens_raster_in_another_crs_uniform_density(tmp_path, tile_crs):
    """1 person per 10 m x 10 m cell in UTM 36N (Kampala) is 10,000 per km2 whatever CRS the tiles are in."""
    x0, y0 = 450000.0, 40000.0
    data = np.ones((1, 100, 100), dtype=np.float32)
    pop = write_raster(tmp_path / "pop.tif", data, crs="EPSG:32636", transform=Affine(10, 0, x0, 0, -10, y0))
    utm = _tiles([(x0 + 203, y0 - 517, x0 + 403, y0 - 317), (x0 + 611, y0 - 800, x0 + 711, y0 - 650)],
                 crs="EPSG:32636")
    tiles = utm.to_crs(tile_crs)
    got = pop_dens(pop, tiles)
    assert got.tolist() == pytest.approx([10000, 10000], rel=5e-3)


def test_ground_area_of_web_mercator_tiles_is_true_area():
    utm = _tiles([(X0, Y0, X0 + 200, Y0 + 200)])
    merc = utm.to_crs("EPSG:3857")
    assert merc.area.iloc[0] > 40000 * 1.01          # Mercator inflates areas
    assert ground_area_m2(merc)[0] == pytest.approx(40000, rel=2e-3)


def test_missing_population_raster_is_bad_input(tmp_path):
    with pytest.raises(BadInput, match="--population"):
        pop_dens(tmp_path / "nope.tif", _tiles([(X0, Y0, X0 + 1, Y0 + 1)]))
