"""Statistics per tile on hand-made geometries with values worked out by hand."""
from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
from shapely.geometry import Point, box

from engine.errors import BadInput
from engine.stats.measures import bldg_cov, eta_squared, read_buildings


def test_a_square_building_across_two_tiles_covers_each_by_its_share():
    tiles = gpd.GeoSeries([box(0, 0, 10, 10), box(10, 0, 20, 10), box(20, 0, 30, 10)])
    # 4 m x 4 m straddling x = 10: 3 m in the first tile, 1 m in the second; and a 2x2 m one in the second
    buildings = gpd.GeoSeries([box(7, 2, 11, 6), box(14, 4, 16, 6)])
    cov = bldg_cov(tiles, buildings)
    assert cov.name == "bldg_cov"
    assert cov.tolist() == pytest.approx([12 / 100, (4 + 4) / 100, 0.0])


def test_no_buildings_means_zero_coverage():
    assert bldg_cov(gpd.GeoSeries([box(0, 0, 1, 1)]), gpd.GeoSeries([], dtype="geometry")).tolist() == [0.0]


def test_eta_squared_by_hand():
    labels = np.array([0, 0, 1, 1])
    y = np.array([1.0, 3.0, 5.0, 7.0])         # total SS 20, between SS 2 * (2-4)^2 + 2 * (6-4)^2 = 16
    assert eta_squared(labels, y) == pytest.approx(0.8)
    assert eta_squared(labels, np.ones(4)) == 0.0


def test_read_buildings_repairs_reprojects_and_refuses_bad_layers(tmp_path):
    bowtie = box(0, 0, 1, 1).union(box(1, 1, 2, 2))
    from shapely import Polygon

    invalid = Polygon([(0, 0), (2, 2), (2, 0), (0, 2)])       # self-intersecting
    gdf = gpd.GeoDataFrame(geometry=[bowtie, invalid, Point(0, 0)], crs="EPSG:32630")
    gdf.to_file(tmp_path / "b.gpkg")
    with pytest.warns(StatsWarning) as caught:              # no warnings list given: Python warnings
        b = read_buildings(tmp_path / "b.gpkg", "EPSG:32630")
    assert sorted(str(c.message) for c in caught) == [
        "--buildings: 1 feature(s) that are not polygons ignored (1 Point).",
        "--buildings: 1 invalid geometry repaired with make_valid."]
    assert len(b) == 2 and b.is_valid.all()
    assert b.area.sum() == pytest.approx(2.0 + 2.0)
    gpd.GeoDataFrame(geometry=[bowtie], crs="EPSG:32630").to_file(tmp_path / "nocrs.shp")
    (tmp_path / "nocrs.prj").unlink()                         # a Shapefile that lost its .prj
    with pytest.raises(BadInput, match="has no CRS"):
        read_buildings(tmp_path / "nocrs.shp", "EPSG:32630")
    gpd.GeoDataFrame(geometry=[Point(0, 0)], crs="EPSG:4326").to_file(tmp_path / "pts.gpkg")
    with pytest.raises(BadInput, match="has no polygons"):
        read_buildings(tmp_path / "pts.gpkg", "EPSG:32630")


# ---------------------------------------------------------------- issue 5: building and road statistics per tile

import math  # noqa: E402

import pandas as pd  # noqa: E402
import shapely  # noqa: E402
from shapely import LineString, affinity  # noqa: E402

from engine.stats.measures import (  # noqa: E402
    MAJOR_ROADS,
    MissingAttribute,
    StatsWarning,
    bldg_area,
    bldg_count,
    bldg_mean,
    bldg_orien,
    building_stats,
    major_dist,
    orientation,
    read_roads,
    road_dist,
    road_len,
    road_stats,
    to_metric,
)
from tests.engine.helpers import shared  # noqa: E402

TWO_TILES = gpd.GeoSeries([box(0, 0, 10, 10), box(10, 0, 20, 10)], index=[7, 8], crs="EPSG:32630")


def rect(cx, cy, w, h, angle):
    """A w x h rectangle centred on (cx, cy), turned ``angle`` degrees counter-clockwise."""
    return affinity.rotate(box(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), angle, origin="centroid")


def test_a_square_building_across_two_tiles_by_hand():
    # 4 x 4 m straddling x = 10: 3 m (12 m2) in tile 7, 1 m (4 m2) in tile 8; its centroid (9, 4) is in tile 7
    b = gpd.GeoSeries([box(7, 2, 11, 6)], crs="EPSG:32630")
    w = []
    df = building_stats(TWO_TILES, b, warnings=w)
    assert w == []
    assert list(df.columns) == ["bldg_count", "bldg_area", "bldg_cov", "bldg_mean", "bldg_orien"]
    assert list(df.index) == [7, 8]
    assert df.bldg_count.tolist() == [1, 0]
    assert df.bldg_area.tolist() == pytest.approx([12.0, 4.0])
    assert df.bldg_cov.tolist() == pytest.approx([0.12, 0.04])
    assert df.bldg_mean[7] == pytest.approx(16.0) and math.isnan(df.bldg_mean[8])     # full area, not clipped
    assert df.bldg_orien[7] == pytest.approx(0.0) and math.isnan(df.bldg_orien[8])
    for fn in (bldg_count, bldg_area, bldg_mean, bldg_orien):                      # the single functions agree
        s = fn(TWO_TILES, b)
        assert s.name == fn.__name__ and list(s.index) == [7, 8]
        pd.testing.assert_series_equal(s, df[fn.__name__])


def test_a_centroid_on_the_shared_edge_is_counted_once_in_the_first_tile():
    b = gpd.GeoSeries([box(8, 2, 12, 6)])                     # centroid (10, 4) on the edge x = 10
    assert bldg_count(TWO_TILES, b).tolist() == [1, 0]
    assert bldg_count(TWO_TILES[::-1], b).tolist() == [1, 0]   # first in the order given: now tile 8
    assert bldg_count(TWO_TILES[::-1], b).index.tolist() == [8, 7]


def test_orientation_of_rotated_rectangles_by_hand():
    shapes = gpd.GeoSeries([rect(5, 5, 4, 1, a) for a in (0, 30, 60, 45, 100, -20, 90)])
    # deviation from the nearest cardinal direction: 30 -> 30, 60 -> 30, 45 -> 45, 100 -> 10, -20 -> 20, 90 -> 0
    assert orientation(shapes).tolist() == pytest.approx([0, 30, 30, 45, 10, 20, 0], abs=1e-6)
    # tile 7 counts the 30 and 60 degree ones (mean 30), tile 8 a 10 degree one and an upright one (mean 5)
    b = gpd.GeoSeries([rect(3, 5, 4, 1, 30), rect(6, 5, 4, 1, 60), rect(15, 5, 4, 1, 10), rect(15, 2, 2, 1, 0)])
    assert bldg_orien(TWO_TILES, b).tolist() == pytest.approx([30.0, 5.0])
    assert bldg_count(TWO_TILES, b).tolist() == [2, 2]
    assert bldg_mean(TWO_TILES, b).tolist() == pytest.approx([4.0, 3.0])


def corner_roads():
    # a residential road y = x - 8 from (7, -1) to (11, 3) cuts tile 7's corner (8, 0)-(10, 2) and enters tile 8
    # up to (11, 3); a primary road runs along y = 30
    return gpd.GeoDataFrame({"highway": ["residential", "primary"]},
                            geometry=[LineString([(7, -1), (11, 3)]), LineString([(0, 30), (20, 30)])],
                            crs="EPSG:32630")


def test_a_road_crossing_a_tile_corner_by_hand():
    roads = corner_roads()
    w = []
    df = road_stats(TWO_TILES, roads, warnings=w)
    assert w == []
    assert list(df.columns) == ["road_len", "road_dist", "major_dist"] and list(df.index) == [7, 8]
    assert df.road_len.tolist() == pytest.approx([2 * math.sqrt(2), math.sqrt(2)])
    # tile 7's centroid (5, 5): perpendicular foot (9, 1) lies on the segment, |5 - 5 - 8| / sqrt 2 = 4 sqrt 2;
    # tile 8's centroid (15, 5): the foot (14, 6) is past the end, so the distance is to (11, 3): sqrt(16 + 4)
    assert df.road_dist.tolist() == pytest.approx([4 * math.sqrt(2), math.sqrt(20)])
    assert df.major_dist.tolist() == pytest.approx([25.0, 25.0])
    pd.testing.assert_series_equal(road_len(TWO_TILES, roads), df.road_len)
    pd.testing.assert_series_equal(road_dist(TWO_TILES, roads), df.road_dist)
    pd.testing.assert_series_equal(major_dist(TWO_TILES, roads), df.major_dist)
    # other classes count as major when asked; values match case-insensitively
    assert major_dist(TWO_TILES, roads, values=["Residential"]).tolist() == pytest.approx([4 * math.sqrt(2), math.sqrt(20)])
    assert set(MAJOR_ROADS) == {"motorway", "trunk", "primary", "secondary", "motorway_link", "trunk_link",
                                "primary_link", "secondary_link"}


def test_a_road_layer_without_the_class_attribute_leaves_major_dist_out_with_a_message():
    roads = corner_roads().rename(columns={"highway": "fclass"})
    with pytest.raises(MissingAttribute, match="'highway'.*--road-field.*fclass"):
        major_dist(TWO_TILES, roads)
    w = []
    df = road_stats(TWO_TILES, roads, warnings=w)
    assert list(df.columns) == ["road_len", "road_dist"]
    assert len(w) == 1 and "'highway'" in w[0] and "--road-field" in w[0]
    assert road_stats(TWO_TILES, roads, field="fclass").major_dist.tolist() == pytest.approx([25.0, 25.0])
    assert list(road_stats(TWO_TILES, roads, field=None).columns) == ["road_len", "road_dist"]
    w = []
    df = road_stats(TWO_TILES, corner_roads().iloc[:1], warnings=w)       # no major road at all
    assert df.major_dist.isna().all() and "no road has highway in" in w[0]


def test_empty_and_far_away_layers_give_0_or_null_and_a_warning_naming_the_layer():
    empty = gpd.GeoSeries([], dtype="geometry", crs="EPSG:32630")
    w = []
    df = building_stats(TWO_TILES, empty, warnings=w, name="--buildings")
    assert df.bldg_count.tolist() == [0, 0] and df.bldg_area.tolist() == [0, 0] and df.bldg_cov.tolist() == [0, 0]
    assert df.bldg_mean.isna().all() and df.bldg_orien.isna().all()
    assert len(w) == 1 and w[0].startswith("--buildings: no footprints (empty layer, or no polygons)")
    w = []
    df = road_stats(TWO_TILES, gpd.GeoDataFrame({"highway": []}, geometry=[], crs="EPSG:32630"), warnings=w)
    assert df.road_len.tolist() == [0, 0] and df.road_dist.isna().all() and df.major_dist.isna().all()
    assert len(w) == 1 and w[0].startswith("--roads: no roads (empty layer, or no lines)")
    far = gpd.GeoSeries([box(1000, 1000, 1010, 1010)])
    w = []
    assert building_stats(TWO_TILES, far, warnings=w, name="footprints.gpkg").bldg_count.tolist() == [0, 0]
    assert len(w) == 1 and "footprints.gpkg" in w[0] and "overlaps the tiles" in w[0]
    with pytest.warns(StatsWarning, match="--roads: none of the 1 roads overlaps"):      # no list: Python warnings
        df = road_stats(TWO_TILES, gpd.GeoDataFrame({"highway": ["primary"]},
                                                    geometry=[LineString([(0, 100), (20, 100)])]))
    assert df.road_len.tolist() == [0, 0] and df.road_dist.tolist() == pytest.approx([95.0, 95.0])


def test_invalid_and_mixed_geometries_in_the_statistics_are_repaired_or_left_out_and_reported():
    bowtie = shapely.Polygon([(0, 0), (4, 4), (4, 0), (0, 4)])      # two triangles of 4 m2 meeting at (2, 2)
    flat = shapely.Polygon([(12, 2), (13, 3), (14, 4), (12, 2)])   # no area: make_valid leaves a line, dropped
    # a 2 x 2 m square with a spike to (11, 1): make_valid gives a collection of the square and a line
    spike = shapely.Polygon([(12, 2), (14, 2), (14, 4), (12, 4), (12, 2), (11, 1), (12, 2)])
    w = []
    df = building_stats(TWO_TILES, gpd.GeoSeries([bowtie, None, flat, Point(15, 5), LineString([(11, 1), (12, 1)]),
                                                  spike]), warnings=w)
    assert df.bldg_count.tolist() == [1, 1] and df.bldg_area.tolist() == pytest.approx([8.0, 4.0])
    assert df.bldg_mean.tolist() == pytest.approx([8.0, 4.0]) and df.bldg_orien.tolist() == pytest.approx([0, 0])  # bowtie's box: 0..4
    assert w == ["--buildings: 2 feature(s) that are not polygons ignored (1 LineString, 1 Point).",
                 "--buildings: 3 invalid geometries repaired with make_valid (1 had no polygons left and was "
                 "dropped)."]
    assert bldg_count(TWO_TILES, gpd.GeoSeries([flat, Point(15, 5)])).tolist() == [0, 0]     # silently, alone
    w = []
    df = road_stats(TWO_TILES, gpd.GeoDataFrame({"highway": ["primary", "primary"]},
                                                geometry=[box(0, 0, 1, 1), LineString([(0, 5), (20, 5)])]),
                    warnings=w)
    assert df.road_len.tolist() == pytest.approx([10.0, 10.0]) and df.major_dist.tolist() == pytest.approx([0, 0])
    assert w == ["--roads: 1 feature(s) that are not lines ignored (1 Polygon)."]


def test_read_roads_keeps_lines_reports_the_rest_and_refuses_no_crs(tmp_path):
    line = LineString([(0, 0), (10, 0)])
    bad = LineString([(5, 5), (5, 5)])                           # one distinct point: invalid, nothing left
    gdf = gpd.GeoDataFrame({"highway": ["primary", "residential", "x", "y"]},
                           geometry=[line, bad, Point(1, 1), box(0, 0, 1, 1)], crs="EPSG:4326")
    gdf.to_file(tmp_path / "r.gpkg")
    w = []
    r = read_roads(tmp_path / "r.gpkg", "EPSG:32630", warnings=w)
    assert r.crs == "EPSG:32630" and r.highway.tolist() == ["primary"]
    assert any("2 feature(s) that are not lines ignored (1 Point, 1 Polygon)" in m for m in w)
    assert any("1 invalid geometry repaired with make_valid (1 had no lines left and was dropped)" in m for m in w)
    gpd.GeoDataFrame(geometry=[line], crs="EPSG:32630").to_file(tmp_path / "nocrs.shp")
    (tmp_path / "nocrs.prj").unlink()
    with pytest.raises(BadInput, match="--roads.*has no CRS"):
        read_roads(tmp_path / "nocrs.shp", "EPSG:32630")
    with pytest.raises(BadInput, match="no such file"):
        read_roads(tmp_path / "none.gpkg", "EPSG:32630")
    gpd.GeoDataFrame(geometry=[Point(0, 0)], crs="EPSG:32630").to_file(tmp_path / "pts.gpkg")
    w = []
    roads = read_roads(tmp_path / "pts.gpkg", None, warnings=w)     # nothing left: the statistics say so, once
    assert len(roads) == 0 and w == ["--roads: 1 feature(s) that are not lines ignored (1 Point)."]
    df = road_stats(TWO_TILES, roads, warnings=w)
    assert len(w) == 2 and w[1].startswith("--roads: no roads") and df.road_dist.isna().all()
    w = []
    assert len(read_buildings(tmp_path / "pts.gpkg", None, warnings=w, allow_empty=True)) == 0
    assert w == ["--buildings: 1 feature(s) that are not polygons ignored (1 Point)."]


def test_to_metric_projects_geographic_and_web_mercator_to_local_utm_and_keeps_metric():
    sq = gpd.GeoSeries([box(0, 0, 100, 100)], crs="EPSG:32630")
    assert to_metric(sq) is sq
    merc = gpd.GeoSeries([box(1600000, 6400000, 1600100, 6400100)], crs="EPSG:3857")    # Prague-ish, lat ~49.7
    m = to_metric(merc)
    assert m.crs.to_epsg() == 32633
    lat = math.degrees(2 * math.atan(math.exp(6400050 / 6378137.0)) - math.pi / 2)
    assert m.area[0] == pytest.approx((100 * math.cos(math.radians(lat))) ** 2, rel=2e-3)  # true ground m2
    assert to_metric(gpd.GeoSeries([box(32.58, 0.31, 32.59, 0.32)], crs="EPSG:4326")).crs.to_epsg() == 32636     # Kampala
    assert to_metric(merc, "EPSG:32630").crs.to_epsg() == 32630          # a metric hint is the target
    with pytest.raises(BadInput, match="no CRS"):
        to_metric(gpd.GeoSeries([Point(0, 0)]))


def grid(bounds, size, crs):
    x0, y0, x1, y1 = bounds
    xs, ys = np.arange(x0, x1, size), np.arange(y0, y1, size)
    gx, gy = np.meshgrid(xs, ys)
    return gpd.GeoSeries(shapely.box(gx.ravel(), gy.ravel(), gx.ravel() + size, gy.ravel() + size), crs=crs)


def test_prague_buildings_and_streets():
    path = shared("prague_cz_bubenec_momepy.gpkg")
    w = []
    b = read_buildings(path, None, warnings=w)                 # four layers: picks 'buildings' (polygons, named so)
    r = read_roads(path, None, warnings=w)                     # the only line layer: 'streets'
    assert len(b) == 144 and len(r) == 35 and w == []
    b, r = to_metric(b), to_metric(r)
    assert b.crs.to_epsg() == 32633 and r.crs == b.crs
    # orientation per building, independently: every edge of the minimum rotated rectangle, folded to 0-45
    indep = []
    for g in b:
        xy = np.asarray(g.minimum_rotated_rectangle.exterior.coords)
        a = np.degrees(np.arctan2(*(xy[1:] - xy[:-1]).T[::-1])) % 90
        dev = np.minimum(a, 90 - a)
        assert np.ptp(dev) < 0.1              # the four edges agree (GEOS rectangles are square to ~0.02 deg)
        indep.append(dev[0])
    ours = orientation(b)
    assert ours.tolist() == pytest.approx(indep, abs=1e-6)
    assert ours.between(0, 45).all()
    try:
        import momepy
    except ImportError:
        momepy = None
    if momepy is not None:
        assert ours.to_numpy() == pytest.approx(momepy.orientation(b).to_numpy(), abs=1e-6)
    tiles = grid(r.total_bounds, 100.0, b.crs)
    ws = []
    bs, rs = building_stats(tiles, b, warnings=ws), road_stats(tiles, r, warnings=ws)
    assert len(ws) == 1 and "'highway'" in ws[0]                # Prague's streets have no class attribute
    assert bs.bldg_count.sum() == 144 and bs.bldg_area.sum() == pytest.approx(b.area.sum())
    assert rs.road_len.sum() == pytest.approx(r.length.sum())
    counted = bs.bldg_count > 0
    assert (bs.bldg_mean[counted] * bs.bldg_count[counted]).sum() == pytest.approx(b.area.sum())
    # the mean orientation per tile from the per-building values and the centroid owner
    own = gpd.sjoin(gpd.GeoDataFrame({"o": ours.to_numpy()}, geometry=b.centroid.to_numpy(), crs=b.crs),
                    gpd.GeoDataFrame(geometry=tiles), predicate="within")
    expect = own.groupby("index_right").o.mean()
    assert bs.bldg_orien[expect.index].to_numpy() == pytest.approx(expect.to_numpy())
    d = r.distance(tiles.centroid.iloc[0])                      # road_dist of one tile, the slow way
    assert rs.road_dist.iloc[0] == pytest.approx(d.min())


def test_kampala_counts_per_tile_match_an_independent_centroid_join(kampala_z19, kampala_buildings):
    import rasterio

    with rasterio.open(kampala_z19) as src:
        bounds, crs = tuple(src.bounds), src.crs
    tiles = to_metric(grid(bounds, 80.0, crs))                  # Web Mercator squares -> UTM 36N quadrilaterals
    w = []
    b = read_buildings(kampala_buildings, tiles.crs, warnings=w)
    df = building_stats(tiles, b, warnings=w)
    cent = gpd.GeoDataFrame(geometry=b.centroid, crs=b.crs)
    joined = gpd.sjoin(cent, gpd.GeoDataFrame(geometry=tiles), predicate="within")
    expect = joined.groupby("index_right").size().reindex(tiles.index, fill_value=0)
    assert expect.sum() > 100
    assert df.bldg_count.tolist() == expect.tolist()
    assert df.bldg_cov.between(0, 1).all() and (df.bldg_area <= tiles.area + 1e-6).all()


def test_synthetic_city_major_dist_is_the_distance_to_the_primary_road(tmp_path):
    from tests.synthetic import make_city

    city = make_city(tmp_path / "c.tif", zone_grid=(2, 2), zone_px=128)
    roads = city.roads
    assert "primary" in set(roads.highway)
    x0, y0, x1, y1 = roads.total_bounds
    tiles = grid((x0, y0, x1, y1), 9.6, roads.crs)
    w = []
    df = road_stats(tiles, roads, warnings=w)
    assert w == []
    primary = roads[roads.highway == "primary"].geometry.iloc[0]
    py = primary.coords[0][1]                                      # a straight east-west line across the city
    assert df.major_dist.to_numpy() == pytest.approx(np.abs(tiles.centroid.y.to_numpy() - py))
    assert (df.road_dist <= df.major_dist + 1e-9).all()
    assert df.road_len.sum() == pytest.approx(roads.clip(box(x0, y0, x1, y1)).length.sum())
