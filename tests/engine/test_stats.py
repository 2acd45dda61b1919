"""Statistics per tile on hand-made geometries with values worked out by hand."""
from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
from shapely.geometry import Point, box

from engine.errors import BadInput
from engine.stats import bldg_cov, eta_squared, read_buildings


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
    b = read_buildings(tmp_path / "b.gpkg", "EPSG:32630")
    assert len(b) == 2 and b.is_valid.all()
    assert b.area.sum() == pytest.approx(2.0 + 2.0)
    gpd.GeoDataFrame(geometry=[bowtie], crs="EPSG:32630").to_file(tmp_path / "nocrs.shp")
    (tmp_path / "nocrs.prj").unlink()                         # a Shapefile that lost its .prj
    with pytest.raises(BadInput, match="has no CRS"):
        read_buildings(tmp_path / "nocrs.shp", "EPSG:32630")
    gpd.GeoDataFrame(geometry=[Point(0, 0)], crs="EPSG:4326").to_file(tmp_path / "pts.gpkg")
    with pytest.raises(BadInput, match="has no polygons"):
        read_buildings(tmp_path / "pts.gpkg", "EPSG:32630")
