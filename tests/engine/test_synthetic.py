"""Tests for tests.synthetic, the synthetic city generator."""
from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine

from tests.synthetic import ZONES, SyntheticCity, make_city

ZONE_PX = 128


@pytest.fixture(scope="module")
def city(tmp_path_factory) -> SyntheticCity:
    return make_city(tmp_path_factory.mktemp("city") / "city.tif", zone_grid=(4, 4), zone_px=ZONE_PX, seed=5)


def read(city: SyntheticCity) -> np.ndarray:
    with rasterio.open(city.raster) as src:
        return src.read()


def per_zone(city: SyntheticCity, data: np.ndarray, zone: int) -> np.ndarray:
    """Pixels (bands, n) of all blocks of one zone."""
    mask = np.kron(city.zones == zone, np.ones((city.zone_px, city.zone_px), bool))
    return data[:, mask].astype(float)


def test_raster_profile(city):
    with rasterio.open(city.raster) as src:
        assert (src.width, src.height) == (4 * ZONE_PX, 4 * ZONE_PX)
        assert src.crs.to_epsg() == 32630 and city.crs == "EPSG:32630"
        assert src.transform == Affine(0.3, 0, 500000.0, 0, -0.3, 700000.0) == city.transform
        assert src.count == 3 and src.dtypes == ("uint8",) * 3
        assert src.nodata is None
        assert src.compression.name.lower() == "deflate"
        assert src.block_shapes[0] == (256, 256)


def test_small_raster_is_untiled(tmp_path):
    c = make_city(tmp_path / "c.tif", zone_grid=(2, 2), zone_px=64)
    with rasterio.open(c.raster) as src:
        assert (src.width, src.height) == (128, 128)
        assert not src.profile.get("tiled", False)


def test_layout_is_balanced_and_explicit_zones_are_kept(city, tmp_path):
    counts = np.bincount(city.zones.ravel(), minlength=len(ZONES))
    assert city.zones.shape == (4, 4) and (counts == 4).all()
    zones = np.array([[3, 2, 1], [0, 0, 0]])
    c = make_city(tmp_path / "z.tif", zones=zones, zone_px=64)
    assert np.array_equal(c.zones, zones)
    assert set(c.footprints.zone) <= {0, 1}


@pytest.mark.parametrize("tile_px", [64, 128])
def test_zone_of_tiles(city, tile_px):
    k = ZONE_PX // tile_px
    truth = city.zone_of_tiles(tile_px)
    assert truth.shape == (4 * k, 4 * k)
    for r, c in np.ndindex(truth.shape):
        assert truth[r, c] == city.zones[r // k, c // k]


@pytest.mark.parametrize("tile_px", [100, 0, 256])
def test_zone_of_tiles_rejects_non_divisors(city, tile_px):
    with pytest.raises(ValueError):
        city.zone_of_tiles(tile_px)


def test_footprints_lie_in_a_block_of_their_own_zone(city):
    fp = city.footprints
    assert list(fp.columns) == ["zone", "geometry"] and fp.crs.to_epsg() == 32630
    assert len(fp) > 0 and fp.is_valid.all()
    t = city.transform  # north-up, no rotation
    for geom, zone in zip(fp.geometry, fp.zone):
        minx, miny, maxx, maxy = geom.bounds
        c0, r0 = (minx - t.c) / t.a, (maxy - t.f) / t.e
        c1, r1 = (maxx - t.c) / t.a, (miny - t.f) / t.e
        assert 0 <= c0 < c1 <= 4 * ZONE_PX and 0 <= r0 < r1 <= 4 * ZONE_PX
        row, col = int(r0 // ZONE_PX), int(c0 // ZONE_PX)
        assert (int((r1 - 1e-6) // ZONE_PX), int((c1 - 1e-6) // ZONE_PX)) == (row, col)
        assert city.zones[row, col] == zone


def test_only_informal_and_formal_zones_have_buildings_and_they_do_not_overlap(city):
    fp = city.footprints
    assert set(fp.zone) == {0, 1}
    assert fp.union_all().area == pytest.approx(fp.area.sum(), rel=1e-6)


def test_informal_has_more_and_smaller_buildings_than_formal(city):
    fp = city.footprints.assign(area=city.footprints.area)
    informal, formal = fp[fp.zone == 0], fp[fp.zone == 1]
    assert len(informal) > 3 * len(formal)
    assert informal.area.median() < formal.area.median() / 2
    assert 10 < informal.area.median() < 60  # roughly 4-8 m sides
    assert 100 < formal.area.median() < 400  # roughly 12-20 m sides


def test_informal_roofs_are_rotated_and_formal_aligned(city):
    def deviation(g):  # of the first edge from the x axis, degrees in [0, 45]
        (x0, y0), (x1, y1) = g.exterior.coords[:2]
        a = np.degrees(np.arctan2(y1 - y0, x1 - x0)) % 90
        return min(a, 90 - a)

    fp = city.footprints
    formal = [deviation(g) for g in fp[fp.zone == 1].geometry]
    informal = [deviation(g) for g in fp[fp.zone == 0].geometry]
    assert max(formal) < 1e-6
    assert np.mean(informal) > 10


def test_zone_colours(city):
    data = read(city)
    veg, bare = per_zone(city, data, 2), per_zone(city, data, 3)
    assert veg[1].mean() > veg[0].mean()  # vegetation: G > R
    assert bare[0].mean() > bare[1].mean()  # bare soil: R > G
    assert (veg[1] - veg[0]).mean() > (bare[1] - bare[0]).mean() + 20
    means = np.array([per_zone(city, data, z).mean(axis=1) for z in range(4)])
    assert np.linalg.norm(means[:, None] - means[None], axis=-1)[np.triu_indices(4, 1)].min() > 15


def test_roads(city):
    roads = city.roads
    assert list(roads.columns) == ["highway", "geometry"] and roads.crs.to_epsg() == 32630
    assert set(roads.highway) == {"residential", "primary"}
    assert (roads.geom_type == "LineString").all()
    primary = roads[roads.highway == "primary"].geometry.iloc[0]
    with rasterio.open(city.raster) as src:
        b = src.bounds
    assert primary.length == pytest.approx(b.right - b.left)
    assert primary.coords[0][1] == pytest.approx(b.top - 2 * ZONE_PX * 0.3)  # middle row boundary
    assert not city.footprints.intersects(primary.buffer(6.0)).any()
    n_formal = int((city.zones == 1).sum())
    assert (roads.highway == "residential").sum() >= 2 * n_formal
    # the primary road is painted as dark asphalt
    data = read(city)
    row = 2 * ZONE_PX
    assert data[:, row - 5:row + 5].mean() < 90


def test_same_seed_is_identical_and_other_seed_differs(tmp_path):
    a = make_city(tmp_path / "a.tif", zone_grid=(2, 2), zone_px=128, seed=7)
    b = make_city(tmp_path / "b.tif", zone_grid=(2, 2), zone_px=128, seed=7)
    c = make_city(tmp_path / "c.tif", zone_grid=(2, 2), zone_px=128, seed=8)
    assert a.raster.read_bytes() == b.raster.read_bytes()
    assert a.footprints.geometry.to_wkb().tolist() == b.footprints.geometry.to_wkb().tolist()
    assert a.footprints.zone.tolist() == b.footprints.zone.tolist()
    assert a.roads.geometry.to_wkb().tolist() == b.roads.geometry.to_wkb().tolist()
    assert not np.array_equal(read(a), read(c))


def test_uint16_variant(tmp_path):
    zones = np.array([[0, 1], [2, 3]])
    c8 = make_city(tmp_path / "a.tif", zones=zones, zone_px=64, seed=2)
    c16 = make_city(tmp_path / "b.tif", zones=zones, zone_px=64, seed=2, dtype="uint16", nodata=0)
    with rasterio.open(c16.raster) as src:
        assert src.dtypes == ("uint16",) * 3 and src.nodata == 0
        data = src.read()
    assert 150 <= data.min() and data.max() <= 3100 and data.max() > 1500
    assert np.allclose(data, 200 + read(c8) * (2800 / 255), atol=7)  # same image, finer steps


def test_single_band_variant(tmp_path):
    zones = np.array([[0, 1], [2, 3]])
    rgb = read(make_city(tmp_path / "a.tif", zones=zones, zone_px=64, seed=2))
    c = make_city(tmp_path / "b.tif", zones=zones, zone_px=64, seed=2, bands=1)
    with rasterio.open(c.raster) as src:
        assert src.count == 1 and src.dtypes == ("uint8",)
        pan = src.read(1)
    assert np.abs(pan - rgb.mean(axis=0)).max() <= 1


def test_nodata_value_is_set_but_not_painted(tmp_path):
    c = make_city(tmp_path / "a.tif", zone_grid=(2, 2), zone_px=64, nodata=255)
    with rasterio.open(c.raster) as src:
        assert src.nodata == 255
        assert (src.read() != 255).all()


@pytest.mark.parametrize("crs, res, origin", [("EPSG:4326", 2.7e-6, (-0.2, 5.6)),
                                              ("EPSG:3857", 0.3, (-22000.0, 624000.0))])
def test_geographic_and_web_mercator(tmp_path, crs, res, origin):
    zones = np.array([[0, 1], [2, 3]])
    c = make_city(tmp_path / "g.tif", zones=zones, zone_px=128, res=res, crs=crs, origin=origin)
    with rasterio.open(c.raster) as src:
        assert src.crs.to_string() == crs and c.crs == crs
        b = src.bounds
    assert (b.left, b.top) == pytest.approx(origin)
    assert b.right - b.left == pytest.approx(256 * res) and b.top - b.bottom == pytest.approx(256 * res)
    if crs == "EPSG:4326":
        assert -180 <= b.left < b.right <= 180 and -90 <= b.bottom < b.top <= 90
    assert c.footprints.crs.to_string() == crs and c.roads.crs.to_string() == crs
    minx, miny, maxx, maxy = c.footprints.total_bounds
    assert b.left <= minx < maxx <= b.right and b.bottom <= miny < maxy <= b.top
    # building sizes stay in ground metres whatever the CRS
    fp = c.footprints.to_crs("EPSG:32630")
    area = fp.area.groupby(fp.zone).median()
    assert 10 < area[0] < 60 and 100 < area[1] < 400


def test_geographic_crs_needs_degrees(tmp_path):
    with pytest.raises(ValueError, match="degrees"):
        make_city(tmp_path / "g.tif", crs="EPSG:4326", zone_grid=(1, 1), zone_px=64)


@pytest.mark.parametrize("kw", [dict(zones=[[0, 4]]), dict(zones=[1, 2]), dict(dtype="float32"),
                                dict(bands=2), dict(res=0), dict(zone_px=4)])
def test_bad_arguments(tmp_path, kw):
    with pytest.raises(ValueError):
        make_city(tmp_path / "x.tif", **kw)
    assert not (tmp_path / "x.tif").exists()

