"""The array-based outline tracer gives the polygons GDAL's polygoniser gives, vertex for vertex."""
from __future__ import annotations

import numpy as np
import pytest
import rasterio.features
import shapely
from affine import Affine
from scipy import ndimage

from engine.segmentation.outlines import mask_polygons
from engine.segmentation.polygons import BlockPolygonizer, drop_small_holes


def gdal_polygons(mask: np.ndarray, r0: int = 0, c0: int = 0) -> list:
    """The oracle: rasterio.features.shapes (GDAL's polygoniser), 4-connected, pixel coordinates."""
    m = mask.astype(np.uint8)
    return [shapely.geometry.shape(g) for g, _ in
            rasterio.features.shapes(m, mask=m > 0, transform=Affine.translation(c0, r0), connectivity=4)]


def canonical(polys) -> list[str]:
    """Collinear vertices dropped, rings started canonically, sorted: equal lists mean the same rings."""
    arr = np.array(polys, dtype=object)
    if not len(arr):
        return []
    return sorted(shapely.to_wkt(shapely.normalize(shapely.simplify(arr, 0.0, preserve_topology=False))))


def assert_as_gdal(mask: np.ndarray, r0: int = 0, c0: int = 0) -> list:
    ours = mask_polygons(mask, r0, c0)
    assert all(shapely.is_valid(ours)), [shapely.is_valid_reason(p) for p in ours]
    assert canonical(ours) == canonical(gdal_polygons(mask, r0, c0))
    # vertices only where the outline turns: our rings are already free of collinear vertices
    assert [shapely.get_num_coordinates(p) for p in ours] == \
        [shapely.get_num_coordinates(shapely.simplify(p, 0.0, preserve_topology=False)) for p in ours]
    return ours


def grid(rows: str) -> np.ndarray:
    return np.array([[c == "#" for c in r] for r in rows.split()], dtype=bool)


def test_one_pixel_is_a_unit_square_at_its_offset():
    (p,) = assert_as_gdal(np.ones((1, 1), bool), r0=7, c0=3)
    assert p.equals(shapely.box(3, 7, 4, 8))


def test_empty_and_full_masks():
    assert mask_polygons(np.zeros((5, 4), bool)) == []
    (p,) = assert_as_gdal(np.ones((5, 4), bool))
    assert p.equals(shapely.box(0, 0, 4, 5)) and shapely.get_num_coordinates(p) == 5


def test_regions_touching_only_at_a_corner_stay_apart():
    polys = assert_as_gdal(grid("#. .#"))
    assert len(polys) == 2 and sorted(p.area for p in polys) == [1, 1]


def test_a_region_reaching_round_to_touch_itself_at_a_corner_keeps_a_valid_hole():
    # the ring of '#' closes on itself diagonally at (row 2, col 2)/(row 3, col 3): the enclosed background
    # becomes a hole that touches the shell at one point, not a shell that crosses itself
    mask = grid("""
        #####.
        #...#.
        #..#..
        ####.#
        .....#
    """)
    polys = assert_as_gdal(mask)
    big = max(polys, key=lambda p: p.area)
    assert len(big.interiors) == 1 and big.is_valid


def test_holes_touching_each_other_at_a_corner():
    mask = grid("""
        #####
        #.###
        ##.##
        #####
    """)
    (p,) = assert_as_gdal(mask)
    assert len(p.interiors) == 2 and p.area == 18


def test_nested_regions_inside_holes():
    mask = np.zeros((9, 9), bool)
    mask[0:9, 0:9] = True
    mask[1:8, 1:8] = False
    mask[2:7, 2:7] = True
    mask[3:6, 3:6] = False
    mask[4, 4] = True
    polys = assert_as_gdal(mask)
    assert sorted(len(p.interiors) for p in polys) == [0, 1, 1]


@pytest.mark.parametrize("seed", range(40))
def test_random_masks_give_gdals_polygons(seed):
    rng = np.random.default_rng(seed)
    h, w = rng.integers(1, 40, 2)
    mask = rng.random((h, w)) < rng.uniform(0.1, 0.9)
    assert_as_gdal(mask, int(rng.integers(0, 9)), int(rng.integers(0, 9)))


def test_blobs_like_a_building_mask_give_gdals_polygons():
    rng = np.random.default_rng(3)
    mask = ndimage.gaussian_filter(rng.random((300, 260)), 2.5) > 0.52
    polys = assert_as_gdal(mask, 512, 1024)
    assert len(polys) > 50
    assert sum(p.area for p in polys) == mask.sum()


def test_rejects_a_mask_that_is_not_2d():
    with pytest.raises(ValueError, match="2-D"):
        mask_polygons(np.ones((2, 3, 4), bool))


def test_block_polygonizer_gives_one_polygon_per_region_whatever_the_blocks():
    rng = np.random.default_rng(5)
    mask = ndimage.gaussian_filter(rng.random((230, 270)), 3) > 0.5
    whole = canonical(mask_polygons(mask))
    for block, band in ((64, 37), (100, 100), (512, 230)):
        poly = BlockPolygonizer(270, 230, block)
        got = []
        for r in range(0, 230, band):
            got.extend(poly.add(mask[r:r + band]))
        got.extend(poly.finish())
        assert canonical(got) == whole, (block, band)


def test_drop_small_holes_keeps_the_large_ones():
    outer = shapely.box(0, 0, 10, 10)
    p = shapely.Polygon(outer.exterior, [shapely.box(1, 1, 2, 2).exterior, shapely.box(4, 4, 7, 7).exterior])
    plain = shapely.box(20, 20, 22, 22)
    out = drop_small_holes(np.array([p, plain], dtype=object), min_area=4.0)
    assert [len(g.interiors) for g in out] == [1, 0]
    assert out[0].area == 100 - 9 and out[1].equals(plain)
