"""train-seg, segment and evaluate-seg through the real CLI on a tiny synthetic city."""
from __future__ import annotations

import json

import geopandas as gpd
import pytest

from tests.engine.helpers import run_cli
from tests.synthetic import make_city


@pytest.fixture(scope="module")
def small_city(tmp_path_factory):
    folder = tmp_path_factory.mktemp("segcity")
    city = make_city(folder / "city.tif", zone_grid=(2, 2), zone_px=256, seed=5)
    city.footprints.to_file(folder / "buildings.gpkg")
    return city, folder / "buildings.gpkg"


def test_train_segment_evaluate(small_city, tmp_path):
    city, buildings = small_city
    model = tmp_path / "m.pt"
    proc = run_cli("train-seg", city.raster, "--buildings", buildings, "--out", model, "--encoder",
                   "efficientnet_lite0", "--chip", 64, "--epochs", 1, "--progress", "log", check=0)
    assert "best validation IoU" in proc.stderr and model.is_file()
    out = tmp_path / "b.gpkg"
    run_cli("segment", city.raster, "--model", model, "--out", out, "--overlap", 16, check=0)
    assert (tmp_path / "b_mask.tif").is_file() and (tmp_path / "b_manifest.json").is_file()
    layer = gpd.read_file(out, layer="buildings")
    assert {"area", "orien"} <= set(layer.columns)
    scores = json.loads(run_cli("evaluate-seg", "--pred", tmp_path / "b_mask.tif", "--truth", buildings,
                                check=0).stdout)
    assert 0 <= scores["iou"] <= 1 and {"precision", "recall", "f1", "obj_f1"} <= set(scores)
    again = run_cli("segment", city.raster, "--model", model, "--out", out)
    assert again.returncode == 2 and "--overwrite" in again.stderr


def test_segment_refuses_a_file_that_is_not_a_model(small_city, tmp_path):
    city, _ = small_city
    bad = tmp_path / "x.pt"
    bad.write_text("no")
    proc = run_cli("segment", city.raster, "--model", bad, "--out", tmp_path / "o.gpkg")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert not (tmp_path / "o.gpkg").exists()
