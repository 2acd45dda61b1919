"""Vector inputs of the wrong kind, damaged or without a CRS: one BadInput naming the input and the fix, from
the one reader every tool uses (engine.io.vectors), never an AttributeError or OGR's own advice.

Real files throughout: CSV tables, attribute-only GeoPackages, rasters, text, empty and cut files, Shapefiles
that lost their .prj or half their .shp.
"""
from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
from shapely.geometry import LineString, Point, box

from engine.errors import BadInput
from engine.io.vectors import check_vector, read_vector
from engine.raster.area import read_area
from engine.segmentation.evaluate import evaluate
from engine.stats.measures import read_buildings, read_roads
from tests.engine.helpers import REPO, write_raster

CRS = "EPSG:32630"
X0, Y0 = 500000.0, 700000.0
OGR_NOISE = ("It might help", "sqlite3_prepare", "AttributeError", "Traceback", "<DRIVER>")


def squares(n=3):
    return [box(X0 + 10 * i, Y0 - 10, X0 + 10 * i + 5, Y0 - 5) for i in range(n)]


def good_polygons(path):
    gpd.GeoDataFrame({"a": range(3)}, geometry=squares(), crs=CRS).to_file(path)
    return path


# --------------------------------------------------------------------------------------- the bad files


def bad_file(kind: str, d: Path) -> "tuple[Path, str]":
    """(a file that is no usable vector input, a pattern its message must contain)."""
    if kind == "csv":
        p = d / "table.csv"
        p.write_text("id,height\n1,12.5\n2,8.0\n")
        return p, r"has no geometry \(a table without shapes, such as a CSV\)"
    if kind == "attribute table":
        p = d / "table.gpkg"
        pyogrio.write_dataframe(pd.DataFrame({"id": [1, 2]}), p, layer="attributes")
        return p, "has no geometry"
    if kind == "raster":
        p = write_raster(d / "image.tif", np.zeros((1, 8, 8), np.uint8))
        return p, "is a raster, not a vector layer"
    if kind == "text":
        p = d / "notes.geojson"
        p.write_text("these are not the footprints you are looking for\n")
        return p, "(is not a vector file GDAL can read|damaged or truncated)"
    if kind == "empty file":
        p = d / "empty.gpkg"
        p.write_bytes(b"")
        return p, r"is empty \(0 bytes\)"
    if kind == "cut geopackage":
        whole = good_polygons(d / "whole.gpkg")
        p = d / "cut.gpkg"
        p.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
        return p, "damaged or truncated"
    if kind == "cut geojson":
        whole = good_polygons(d / "whole.geojson")
        p = d / "cut.geojson"
        p.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
        return p, "damaged or truncated"
    if kind == "cut shapefile":
        gpd.GeoDataFrame(geometry=squares(40), crs=CRS).to_file(d / "cut.shp")
        shp = d / "cut.shp"
        shp.write_bytes(shp.read_bytes()[: shp.stat().st_size // 2])
        return shp, r"damaged or truncated \(cut\.shp is shorter than its header says\)"
    if kind == "no crs":
        gpd.GeoDataFrame(geometry=squares(), crs=CRS).to_file(d / "lost.shp")
        (d / "lost.prj").unlink()                                # a Shapefile that lost its .prj
        return d / "lost.shp", "has no CRS; set one"
    if kind == "folder":
        p = d / "folder"
        p.mkdir()
        return p, "is a folder"
    if kind == "missing":
        return d / "nowhere.gpkg", "no such file"
    raise AssertionError(kind)


KINDS = ("csv", "attribute table", "raster", "text", "empty file", "cut geopackage", "cut geojson",
         "cut shapefile", "no crs", "folder", "missing")


def plain(msg: str) -> None:
    assert "\n" not in msg and not any(n in msg for n in OGR_NOISE), msg


# readers: (flag, call(path)) - each as the tools call it
READERS = {
    "--buildings": lambda p: read_buildings(p, CRS),
    "--roads": lambda p: read_roads(p, CRS),
    "--area": lambda p: read_area(p, CRS),
    "--label-area": lambda p: read_buildings(p, CRS, "--label-area"),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("flag", list(READERS))
def test_every_reader_names_the_input_and_the_fix(tmp_path, kind, flag):
    path, why = bad_file(kind, tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                           # no library warning on the way either
        with pytest.raises(BadInput, match=rf"^{flag} '[^']*{path.name}'.*{why}") as err:
            READERS[flag](path)
    plain(str(err.value))


@pytest.mark.parametrize("kind", KINDS)
def test_truth_of_evaluate_seg_is_checked_before_scoring(tmp_path, kind):
    pred = tmp_path / "pred"
    pred.mkdir()
    mask = good_polygons(pred / "p.gpkg")
    path, why = bad_file(kind, tmp_path)
    with pytest.raises(BadInput, match=rf"^--truth '[^']*{path.name}'.*{why}") as err:
        evaluate(mask, path)
    plain(str(err.value))


def test_the_check_reads_no_features_and_says_what_it_found(tmp_path):
    path = good_polygons(tmp_path / "b.gpkg")
    info = check_vector(path, "--buildings", kind="polygon")
    assert (info.path, info.layer, info.crs, info.geometry_type, info.features) == (path, None, CRS, "Polygon", 3)


def test_an_empty_layer_is_for_the_caller_to_judge(tmp_path):
    gpd.GeoDataFrame(geometry=[], crs=CRS).to_file(tmp_path / "none.gpkg")
    assert len(read_vector(tmp_path / "none.gpkg", "--roads")) == 0
    assert len(read_roads(tmp_path / "none.gpkg", CRS)) == 0
    assert len(read_buildings(tmp_path / "none.gpkg", CRS, allow_empty=True)) == 0
    with pytest.raises(BadInput, match=r"^--buildings .*none\.gpkg.* has no polygons; give building footprints"):
        read_buildings(tmp_path / "none.gpkg", CRS)
    with pytest.raises(BadInput, match=r"^--area .*none\.gpkg.* has no polygons"):
        read_area(tmp_path / "none.gpkg", CRS)


def test_a_csv_with_wkt_geometry_but_no_crs_is_refused_unless_the_caller_assumes_one(tmp_path):
    p = tmp_path / "shapes.csv"
    p.write_text('WKT,id\n"POLYGON ((500000 699990, 500005 699990, 500005 699995, 500000 699990))",1\n')
    with pytest.raises(BadInput, match=r"^--buildings .*shapes\.csv.* has no CRS; set one"):
        read_buildings(p, CRS)
    found: list[str] = []
    b = read_buildings(p, CRS, assume_crs=CRS, warnings=found)
    assert len(b) == 1 and b.crs == CRS
    assert found == [f"--buildings {str(p)!r} has no CRS; taken to be {CRS} (the raster's). If it is another, "
                     "set one (e.g. in QGIS: Layer Properties > Source, or ogr2ogr -a_srs EPSG:XXXX)."]


def test_layers_are_chosen_by_geometry_or_named(tmp_path):
    p = tmp_path / "many.gpkg"
    gpd.GeoDataFrame(geometry=squares(), crs=CRS).to_file(p, layer="buildings")
    gpd.GeoDataFrame(geometry=[LineString([(X0, Y0), (X0 + 9, Y0)])], crs=CRS).to_file(p, layer="roads")
    pyogrio.write_dataframe(pd.DataFrame({"id": [1]}), p, layer="notes")
    assert len(read_buildings(p, CRS)) == 3 and len(read_roads(p, CRS)) == 1
    gpd.GeoDataFrame(geometry=squares(1), crs=CRS).to_file(p, layer="parcels")
    assert len(read_buildings(p, CRS)) == 3          # two polygon layers: the one named like buildings
    gpd.GeoDataFrame(geometry=squares(1), crs=CRS).to_file(tmp_path / "two.gpkg", layer="a")
    gpd.GeoDataFrame(geometry=squares(2), crs=CRS).to_file(tmp_path / "two.gpkg", layer="b")
    with pytest.raises(BadInput, match=r"^--area .*two\.gpkg.* has 2 layers \(a, b\); name one"):
        read_area(tmp_path / "two.gpkg", CRS)
    assert len(read_buildings(f"{tmp_path / 'two.gpkg'}|layername=b", CRS)) == 2
    with pytest.raises(BadInput, match=r"^--truth .* has no layer 'c'; it has a, b"):
        read_buildings(f"{tmp_path / 'two.gpkg'}|layername=c", CRS, "--truth")
    with pytest.raises(BadInput, match=r"^--roads .*notes.* has no geometry"):
        read_roads(f"{p}|layername=notes", CRS)


def test_a_sound_shapefile_and_its_empty_twin_pass_the_length_check(tmp_path):
    gpd.GeoDataFrame({"a": range(40)}, geometry=squares(40), crs=CRS).to_file(tmp_path / "ok.shp")
    assert len(read_buildings(tmp_path / "ok.shp", CRS)) == 40
    gpd.GeoDataFrame({"a": []}, geometry=[], crs=CRS).to_file(tmp_path / "none.shp")
    assert len(read_roads(tmp_path / "none.shp", CRS)) == 0
    dbf = tmp_path / "ok.dbf"
    dbf.write_bytes(dbf.read_bytes()[:-200])
    with pytest.raises(BadInput, match=r"ok\.dbf is shorter than its header says"):
        read_buildings(tmp_path / "ok.shp", CRS)


# ---------------------------------------------------------------------- tools: exit 2, before work, no files


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "engine", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "PYTHONWARNINGS": "default"})


@pytest.mark.parametrize("flag", ["--buildings", "--area"])
def test_cluster_with_a_csv_footprint_or_area_stops_with_exit_2_and_writes_nothing(kampala_z19, tmp_path, flag):
    csv, _ = bad_file("csv", tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    proc = run_cli("cluster", kampala_z19, "--out", out / "x.gpkg", "--k", 3, "--weights", "none", flag, csv)
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert flag in last and "has no geometry" in last and "AttributeError" not in proc.stderr
    assert list(out.iterdir()) == []


def test_train_seg_with_a_table_as_footprints_or_label_area_writes_nothing(kampala_z19, tmp_path):
    from engine.tools.train_seg import TrainParams, run_train

    csv, _ = bad_file("csv", tmp_path)
    raster_buildings = REPO / "resources" / "sample" / "kampala_ug_osm_buildings.geojson"
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(BadInput, match=r"^--buildings .*table\.csv.* has no geometry"):
        run_train(TrainParams(raster=str(kampala_z19), buildings=str(csv), out=str(out / "m.pt"), weights="none",
                              chip=64, epochs=1))
    with pytest.raises(BadInput, match=r"^--label-area .*table\.csv.* has no geometry"):
        run_train(TrainParams(raster=str(kampala_z19), buildings=str(raster_buildings), out=str(out / "m.pt"),
                              weights="none", chip=64, epochs=1, label_area=str(csv)))
    assert list(out.iterdir()) == []


def test_footprints_without_crs_or_points_as_footprints_through_the_cli(kampala_z19, tmp_path):
    nocrs, _ = bad_file("no crs", tmp_path)
    gpd.GeoDataFrame(geometry=[Point(X0, Y0)], crs=CRS).to_file(tmp_path / "pts.gpkg")
    for bad, why in ((nocrs, "has no CRS"), (tmp_path / "pts.gpkg", "has no polygons")):
        proc = run_cli("cluster", kampala_z19, "--out", tmp_path / "x.gpkg", "--k", 3, "--weights", "none",
                       "--buildings", bad)
        assert proc.returncode == 2 and why in proc.stderr and "--buildings" in proc.stderr, proc.stderr
    assert not any(p.name.startswith("x") for p in tmp_path.iterdir())
