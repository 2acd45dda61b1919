"""evaluate(): pixel and object scores on hand-made layouts whose values are worked out by hand.

Grid: 10 x 10 pixels of 1 m in UTM 30N, top-left corner (500000, 700010); pixel (row r, col c) covers
x in [500000 + c, +1), y in [700010 - r - 1, 700010 - r).

Prediction (mask):  A = rows 0-3, cols 0-3 (16 px);  B = rows 6-8, cols 6-8 (9 px)
Truth (footprints): A' = rows 0-3, cols 2-5 (16 px); B' = rows 6-8, cols 6-7 (6 px)

A/A' overlap 8 px (IoU 8/24 = 1/3: not matched), B/B' overlap 6 px (IoU 6/9: matched).
tp = 8 + 6 = 14, fp = 8 + 3 = 11, fn = 8 + 0 = 8, tn = 100 - (14 + 11 + 8) = 67.
IoU = 14/33, accuracy = 81/100, precision = 14/25, recall = 14/22, F1 = 28/47.
Objects: 2 predicted, 2 true, 1 matched -> precision = recall = F1 = 0.5.
"""
from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from affine import Affine
from shapely.geometry import box

from engine.errors import BadInput
from engine.segmentation.evaluate import evaluate, match_objects
from tests.engine.segmentation.helpers import CRS, X0, Y0, cells, write_mask, write_truth


def test_mask_scores_by_hand(tmp_path):
    s = evaluate(write_mask(tmp_path / "m.tif"), write_truth(tmp_path / "t.gpkg"))
    assert (s["tp"], s["fp"], s["fn"], s["tn"]) == (14, 11, 8, 67)
    assert s["iou"] == pytest.approx(14 / 33)
    assert s["accuracy"] == pytest.approx(0.81)
    assert s["precision"] == pytest.approx(14 / 25)
    assert s["recall"] == pytest.approx(14 / 22)
    assert s["f1"] == pytest.approx(28 / 47)
    assert (s["n_pred"], s["n_truth"], s["n_matched"]) == (2, 2, 1)
    assert s["obj_f1"] == pytest.approx(0.5) and s["unit"] == "px"


def test_truth_in_another_crs_gives_the_same_pixels(tmp_path):
    s = evaluate(write_mask(tmp_path / "m.tif"), write_truth(tmp_path / "t.gpkg", "EPSG:4326"))
    assert (s["tp"], s["fp"], s["fn"], s["tn"]) == (14, 11, 8, 67)
    assert s["n_matched"] == 1


def test_area_limits_the_scores(tmp_path):
    """Area = cols 0-4 (50 px): pred 16 px, truth 12 px (cols 2-4), overlap 8 -> tp 8, fp 8, fn 4, tn 30;
    objects: only A and A' count (their representative points are in the area), not matched."""
    gpd.GeoDataFrame(geometry=[cells(0, 10, 0, 5)], crs=CRS).to_file(tmp_path / "area.gpkg")
    s = evaluate(write_mask(tmp_path / "m.tif"), write_truth(tmp_path / "t.gpkg"), area=tmp_path / "area.gpkg")
    assert (s["tp"], s["fp"], s["fn"], s["tn"]) == (8, 8, 4, 30)
    assert s["iou"] == pytest.approx(8 / 20)
    assert (s["n_pred"], s["n_truth"], s["n_matched"]) == (1, 1, 0)
    assert s["obj_f1"] == 0.0


def test_nodata_pixels_are_not_scored(tmp_path):
    """Row 9 is nodata: 10 true-negative pixels fewer, nothing else changes."""
    s = evaluate(write_mask(tmp_path / "m.tif", nodata=255), write_truth(tmp_path / "t.gpkg"))
    assert (s["tp"], s["fp"], s["fn"], s["tn"]) == (14, 11, 8, 57)


def test_small_blocks_give_the_same_scores(tmp_path):
    a = evaluate(write_mask(tmp_path / "m.tif"), write_truth(tmp_path / "t.gpkg"))
    b = evaluate(tmp_path / "m.tif", tmp_path / "t.gpkg", block=3)     # A and B cross block borders
    assert a == b


def test_vector_prediction_exact_areas(tmp_path):
    """Same shapes as polygons: extent = bbox of both = 9 x 9 = 81 m2; union 33 -> tn 48."""
    gpd.GeoDataFrame(geometry=[cells(0, 4, 0, 4), cells(6, 9, 6, 9)], crs=CRS).to_file(tmp_path / "p.gpkg")
    s = evaluate(tmp_path / "p.gpkg", write_truth(tmp_path / "t.gpkg", "EPSG:4326"))
    assert s["unit"] == "m2" and s["pred_kind"] == "vector"
    assert s["tp"] == pytest.approx(14, rel=1e-4) and s["fp"] == pytest.approx(11, rel=1e-4)
    assert s["fn"] == pytest.approx(8, rel=1e-4) and s["tn"] == pytest.approx(81 - 33, abs=1e-2)
    assert s["iou"] == pytest.approx(14 / 33, rel=1e-4)
    assert s["n_matched"] == 1 and s["obj_precision"] == pytest.approx(0.5)


def test_vector_prediction_scored_within_its_segmented_raster(tmp_path):
    """A segment output (p.gpkg with p_mask.tif next to it) mapped only cols 0-4 of the 10 x 10 scene: the true
    building at cols 6-8 lies beyond that raster and is not a miss; the one at cols 2-6 is clipped to it."""
    gpd.GeoDataFrame(geometry=[cells(0, 4, 0, 4)], crs=CRS).to_file(tmp_path / "p.gpkg")
    with rasterio.open(tmp_path / "p_mask.tif", "w", driver="GTiff", width=5, height=10, count=1, dtype="uint8",
                       crs=CRS, transform=Affine(1, 0, X0, 0, -1, Y0)) as ds:
        ds.write(np.zeros((1, 10, 5), np.uint8))
    s = evaluate(tmp_path / "p.gpkg", write_truth(tmp_path / "t.gpkg"))
    # extent 5 x 10 = 50 m2; pred 16, truth 4 x 3 = 12 inside, overlap 8 -> tp 8, fp 8, fn 4, tn 30
    assert (s["tp"], s["fp"], s["fn"]) == pytest.approx((8, 8, 4), rel=1e-6)
    assert s["tn"] == pytest.approx(30, abs=1e-6)
    assert (s["n_pred"], s["n_truth"]) == (1, 1)
    warnings = []
    (tmp_path / "p_mask.tif").unlink()
    evaluate(tmp_path / "p.gpkg", tmp_path / "t.gpkg", warnings=warnings)
    assert any("bounding box" in w and "--area" in w for w in warnings)


def test_matching_is_one_to_one():
    """One prediction covering two true halves: IoU 0.5 each; only one match, greedy by IoU."""
    pred = [box(0, 0, 2, 1)]
    truth = [box(0, 0, 1, 1), box(1, 0, 2, 1)]
    m = match_objects(pred, truth)
    assert len(m) == 1 and m[0][2] == pytest.approx(0.5)
    assert match_objects([box(0, 0, 3, 1)], truth) == []          # IoU 1/3 each


def test_bad_inputs(tmp_path):
    mask = write_mask(tmp_path / "m.tif")
    with pytest.raises(BadInput, match="--truth"):
        evaluate(mask, tmp_path / "missing.gpkg")
    far = gpd.GeoDataFrame(geometry=[box(0, 0, 1, 1)], crs=CRS)
    far.to_file(tmp_path / "far.gpkg")
    with pytest.raises(BadInput, match="does not overlap"):
        evaluate(mask, tmp_path / "far.gpkg")
