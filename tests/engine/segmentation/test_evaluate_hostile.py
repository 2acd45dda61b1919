"""evaluate-seg with hostile input: an --area off the data, inputs of the wrong kind, damaged files, warnings.

The layouts are those of test_segment_evaluate (10 x 10 pixels of 1 m in UTM 30N). Every bad input is a
BadInput naming the input (never all-zero scores, never an AttributeError), and data warnings are plain
lines, never Python warnings with a source line.
"""
from __future__ import annotations

import re
import subprocess
import sys
import warnings

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from affine import Affine
from shapely.geometry import Polygon, box

from engine.errors import BadInput
from engine.segmentation.evaluate import evaluate
from tests.engine.helpers import REPO
from tests.engine.segmentation.helpers import CRS, X0, Y0, cells, write_mask, write_truth


def write_area(path, *geoms, crs=CRS):
    gpd.GeoDataFrame(geometry=list(geoms), crs=crs).to_file(path)
    return path


@pytest.fixture
def mask(tmp_path):
    return write_mask(tmp_path / "m.tif")


@pytest.fixture
def truth(tmp_path):
    return write_truth(tmp_path / "t.gpkg")


@pytest.fixture
def vpred(tmp_path):
    g = gpd.GeoDataFrame(geometry=[cells(0, 4, 0, 4), cells(6, 9, 6, 9)], crs=CRS)
    g.to_file(tmp_path / "p.gpkg")
    return tmp_path / "p.gpkg"


# ------------------------------------------------------------------------------------ --area off the data


def test_mask_area_outside_the_mask_is_bad_input(tmp_path, mask, truth):
    far = write_area(tmp_path / "far.gpkg", box(X0 + 1000, Y0 + 1000, X0 + 1010, Y0 + 1010))
    with pytest.raises(BadInput, match=r"^--area .*far\.gpkg.* does not overlap the mask .*m\.tif"):
        evaluate(mask, truth, far)


def test_mask_area_over_nodata_only_is_bad_input(tmp_path, truth):
    m = write_mask(tmp_path / "m.tif", nodata=255)          # row 9 is nodata
    strip = write_area(tmp_path / "strip.gpkg", cells(9, 10, 0, 10))
    with pytest.raises(BadInput, match=r"^--area .*strip\.gpkg.* leaves no pixel"):
        evaluate(m, truth, strip)


def test_mask_area_smaller_than_a_pixel_centre_is_bad_input(tmp_path, mask, truth):
    tiny = write_area(tmp_path / "tiny.gpkg", box(X0 + 0.1, Y0 - 0.2, X0 + 0.3, Y0 - 0.1))
    with pytest.raises(BadInput, match=r"^--area .* leaves no pixel"):
        evaluate(mask, truth, tiny)


def test_mask_of_nodata_only_is_bad_input(tmp_path, truth):
    path = tmp_path / "empty.tif"
    with rasterio.open(path, "w", driver="GTiff", width=10, height=10, count=1, dtype="uint8", crs=CRS,
                       transform=Affine(1, 0, X0, 0, -1, Y0), nodata=0) as ds:
        ds.write(np.zeros((10, 10), np.uint8), 1)
    with pytest.raises(BadInput, match=r"^--pred .*empty\.tif.* no valid pixel"):
        evaluate(path, truth)


def test_area_partly_on_the_mask_still_scores(tmp_path, mask, truth):
    half = write_area(tmp_path / "half.gpkg", box(X0 - 100, Y0 - 5, X0 + 10, Y0 + 100))   # rows 0-4
    s = evaluate(mask, truth, half)
    assert s["tp"] + s["fp"] + s["fn"] + s["tn"] == 50


def test_vector_area_outside_the_layers_is_bad_input(tmp_path, vpred, truth):
    far = write_area(tmp_path / "far.gpkg", box(X0 + 1000, Y0 + 1000, X0 + 1010, Y0 + 1010))
    with pytest.raises(BadInput, match=r"^--area .*far\.gpkg.* does not overlap the buildings of --pred"):
        evaluate(vpred, truth, far)


def test_vector_area_outside_the_mapped_raster_is_bad_input(tmp_path, truth):
    pred = tmp_path / "b.gpkg"
    gpd.GeoDataFrame(geometry=[cells(0, 4, 0, 4)], crs=CRS).to_file(pred)
    write_mask(tmp_path / "b_mask.tif")                     # what `segment` writes next to it
    beside = write_area(tmp_path / "beside.gpkg", box(X0 + 20, Y0 - 10, X0 + 30, Y0))
    with pytest.raises(BadInput, match=r"does not overlap the raster .*b\.gpkg.* was mapped from"):
        evaluate(pred, truth, beside)


def test_vector_area_inside_scores_as_before(tmp_path, vpred, truth):
    inside = write_area(tmp_path / "in.gpkg", box(X0, Y0 - 10, X0 + 10, Y0))
    s = evaluate(vpred, truth, inside)
    assert (s["tp"], s["fp"], s["fn"]) == pytest.approx((14, 11, 8))
    assert s["unit"] == "m2" and s["warnings"] == []


# ------------------------------------------------------------------------------- files of the wrong kind


def _csv(path):
    path.write_text("id,name\n1,a\n2,b\n")
    return path


@pytest.mark.parametrize("kind", ["csv", "raster", "text", "folder", "empty"])
def test_truth_that_is_not_a_vector_with_geometry_is_bad_input(tmp_path, mask, kind):
    if kind == "csv":
        bad = _csv(tmp_path / "truth.csv")
    elif kind == "raster":
        bad = write_mask(tmp_path / "truth.tif")
    elif kind == "text":
        bad = tmp_path / "truth.geojson"
        bad.write_text("this is not json")
    elif kind == "folder":
        bad = tmp_path / "truth_dir"
        bad.mkdir()
    else:
        bad = tmp_path / "truth.gpkg"
        bad.write_bytes(b"")
    why = "(no geometry|cannot be read|folder|is a raster|is empty|not a vector file)"
    with pytest.raises(BadInput, match=rf"^--truth .*truth.*{why}.*true building"):
        evaluate(mask, bad)


def test_pred_csv_and_area_csv_are_bad_input(tmp_path, mask, truth):
    with pytest.raises(BadInput, match=r"^--pred .*p\.csv.* no geometry"):
        evaluate(_csv(tmp_path / "p.csv"), truth)
    with pytest.raises(BadInput, match=r"^--area .*a\.csv.* no geometry"):
        evaluate(mask, truth, _csv(tmp_path / "a.csv"))


def test_truth_layer_name_that_does_not_exist_is_bad_input(tmp_path, mask, truth):
    with pytest.raises(BadInput, match=r"^--truth .* has no layer 'nope'"):
        evaluate(mask, f"{truth}|layername=nope")


def test_truncated_mask_is_bad_input(tmp_path, truth):
    big = tmp_path / "big.tif"
    rng = np.random.default_rng(0)
    with rasterio.open(big, "w", driver="GTiff", width=512, height=512, count=1, dtype="uint8", crs=CRS,
                       transform=Affine(1, 0, X0, 0, -1, Y0)) as ds:
        ds.write((rng.random((512, 512)) > 0.5).astype(np.uint8), 1)
    cut = tmp_path / "cut.tif"
    cut.write_bytes(big.read_bytes()[: big.stat().st_size // 3])
    with pytest.raises(BadInput, match=r"^--pred .*cut\.tif.* cannot be read"):
        evaluate(cut, truth, block=128)


# ------------------------------------------------------------------------------------------- warnings


def _bowtie_truth(path):
    bowtie = Polygon([(X0 + 6, Y0 - 6), (X0 + 8, Y0 - 8), (X0 + 8, Y0 - 6), (X0 + 6, Y0 - 8)])   # invalid
    gpd.GeoDataFrame(geometry=[cells(0, 4, 2, 6), bowtie], crs=CRS).to_file(path)
    return path


def test_no_python_warning_and_the_data_warning_as_one_line(tmp_path, mask, vpred, capsys):
    truth = _bowtie_truth(tmp_path / "bow.gpkg")
    with warnings.catch_warnings():
        warnings.simplefilter("error")               # any Python warning (library or ours) fails the test
        s = evaluate(mask, truth)
        v = evaluate(vpred, truth)
    err = capsys.readouterr().err
    assert "warning: --truth: 1 invalid geometry repaired with make_valid." in err.splitlines()
    assert any("bounding box" in w for w in v["warnings"])
    assert s["warnings"] == ["--truth: 1 invalid geometry repaired with make_valid."]
    given: list[str] = []
    evaluate(mask, truth, warnings=given)
    assert given == s["warnings"] and capsys.readouterr().err == ""


def test_cli_prints_no_source_lines(tmp_path, mask):
    truth = _bowtie_truth(tmp_path / "bow.gpkg")
    proc = subprocess.run([sys.executable, "-m", "engine", "evaluate-seg", "--pred", str(mask), "--truth",
                           str(truth)], cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    assert not re.search(r"\.py:\d+: \w*Warning", proc.stderr), proc.stderr
    assert "invalid geometry repaired" in proc.stderr
    far = write_area(tmp_path / "far.gpkg", box(X0 + 1000, Y0 + 1000, X0 + 1010, Y0 + 1010))
    proc = subprocess.run([sys.executable, "-m", "engine", "evaluate-seg", "--pred", str(mask), "--truth",
                           str(truth), "--area", str(far)], cwd=REPO, capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "does not overlap" in proc.stderr and "Traceback" not in proc.stderr
