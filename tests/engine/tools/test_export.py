"""Exporting a run's GeoPackage: Shapefile (.prj, UTF-8 .cpg), one GeoPackage per layer, CSV without geometry."""
from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import shapely
from pyproj import CRS

from engine.errors import BadInput
from engine.tools.export import run_export


@pytest.fixture
def run_gpkg(tmp_path):
    """Two layers like a run's: tiles (ints, floats with a null, a non-ASCII text) and clusters."""
    boxes = [shapely.box(500000 + 10 * i, 700000, 500010 + 10 * i, 700010) for i in range(3)]
    tiles = gpd.GeoDataFrame({"tile_id": np.array([0, 1, 2], dtype=np.int64), "cluster": [0, 1, 1],
                              "bldg_mean": [12.5, np.nan, 3.25], "note": ["Kampala–Nakawa", "Bubeneč", "x"]},
                             geometry=boxes, crs="EPSG:32636")
    clusters = gpd.GeoDataFrame({"cluster": [0, 1], "tiles": [1, 2], "bmean_avg": [12.5, 3.25]},
                                geometry=[boxes[0], shapely.union_all(boxes[1:])], crs="EPSG:32636")
    path = tmp_path / "run.gpkg"
    pyogrio.write_dataframe(tiles, path, layer="tiles")
    pyogrio.write_dataframe(clusters, path, layer="clusters")
    return path


def test_shapefile_per_layer_with_prj_and_utf8_cpg(run_gpkg, tmp_path):
    out = run_export(run_gpkg, "shp", tmp_path / "shp")
    assert set(out) == {"tiles", "clusters"}
    for layer, shp in out.items():
        assert shp == tmp_path / "shp" / f"run_{layer}.shp"
        for ext in (".shp", ".shx", ".dbf", ".prj", ".cpg"):
            assert shp.with_suffix(ext).exists(), ext
        assert shp.with_suffix(".cpg").read_text().strip().upper() in ("UTF-8", "UTF8")
        assert CRS.from_wkt(shp.with_suffix(".prj").read_text()).to_epsg() == 32636
        src = gpd.read_file(run_gpkg, layer=layer)
        back = gpd.read_file(shp)
        assert list(back.columns) == list(src.columns)
        pd.testing.assert_frame_equal(pd.DataFrame(back.drop(columns="geometry")),
                                      pd.DataFrame(src.drop(columns="geometry")), check_dtype=False)
        assert back.geometry.normalize().geom_equals(src.geometry.normalize()).all()
    assert [p.name for p in (tmp_path / "shp").iterdir() if p.name.startswith(".")] == []   # no temp folder left


def test_csv_without_geometry_and_gpkg_per_layer(run_gpkg, tmp_path):
    out = run_export(run_gpkg, "csv", tmp_path / "csv")
    tiles = pd.read_csv(out["tiles"], encoding="utf-8")
    assert list(tiles.columns) == ["tile_id", "cluster", "bldg_mean", "note"]
    assert tiles["note"].tolist() == ["Kampala–Nakawa", "Bubeneč", "x"]
    assert np.isnan(tiles["bldg_mean"][1])
    out = run_export(run_gpkg, "gpkg", tmp_path / "gpkg")
    for layer, path in out.items():
        assert path.name == f"run_{layer}.gpkg"
        assert [str(n) for n, _ in pyogrio.list_layers(path)] == [layer]
        assert len(gpd.read_file(path, layer=layer)) == len(gpd.read_file(run_gpkg, layer=layer))


def test_long_field_name_is_refused_before_writing(run_gpkg, tmp_path):
    long = gpd.GeoDataFrame({"cluster_mean": [1.0]}, geometry=[shapely.box(0, 0, 1, 1)], crs="EPSG:32636")
    pyogrio.write_dataframe(long, run_gpkg, layer="extra")
    with pytest.raises(BadInput, match="'extra'.*cluster_mean"):
        run_export(run_gpkg, "shp", tmp_path / "shp")
    assert not (tmp_path / "shp").exists() or not any((tmp_path / "shp").iterdir())
    assert "extra" in run_export(run_gpkg, "csv", tmp_path / "csv")       # CSV has no such limit


def test_nothing_overwritten_without_the_flag(run_gpkg, tmp_path):
    out_dir = tmp_path / "shp"
    run_export(run_gpkg, "shp", out_dir)
    dbf = out_dir / "run_tiles.dbf"
    dbf.write_bytes(b"not a dbf")
    with pytest.raises(BadInput, match="--overwrite"):
        run_export(run_gpkg, "shp", out_dir)
    assert dbf.read_bytes() == b"not a dbf"
    run_export(run_gpkg, "shp", out_dir, overwrite=True)
    assert len(gpd.read_file(out_dir / "run_tiles.shp")) == 3


def test_bad_format_and_missing_run(run_gpkg, tmp_path):
    with pytest.raises(BadInput, match="'xlsx' is not one of shp, gpkg, csv") as bad:
        run_export(run_gpkg, "xlsx", tmp_path)
    assert (bad.value.param, bad.value.code) == ("format", "bad_choice")
    with pytest.raises(BadInput, match="does not exist") as bad:
        run_export(tmp_path / "nope.gpkg", "shp", tmp_path)
    assert (bad.value.param, bad.value.code) == ("run", "not_found")
    with pytest.raises(BadInput, match="the folder .*a does not exist") as bad:
        run_export(run_gpkg, "shp", tmp_path / "a" / "b")
    assert (bad.value.param, bad.value.code) == ("out", "not_found")
