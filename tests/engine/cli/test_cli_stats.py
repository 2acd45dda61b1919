"""`stats` and `export` through the real CLI, and statistics as part of `cluster`."""
from __future__ import annotations

import json

import geopandas as gpd
import pyogrio
import pytest

from engine.stats.measures import eta_squared
from tests.engine.helpers import run_cli


@pytest.fixture(scope="module")
def city_layers(city, tmp_path_factory):
    """The synthetic city's footprints and roads as GeoPackages."""
    folder = tmp_path_factory.mktemp("layers")
    city.footprints.to_file(folder / "buildings.gpkg")
    city.roads.to_file(folder / "roads.gpkg")
    return folder / "buildings.gpkg", folder / "roads.gpkg"


def test_cluster_with_buildings_and_roads_writes_the_statistics(city, city_layers, tmp_path):
    buildings, roads = city_layers
    out = tmp_path / "c.gpkg"
    proc = run_cli("cluster", city.raster, "--out", out, "--k", 4, "--backbone", "efficientnet_lite0",
                   "--buildings", buildings, "--roads", roads, "--no-quicklook", check=0)
    assert "eta-squared bldg_cov" in proc.stderr
    tiles = gpd.read_file(out, layer="tiles")
    for col in ("bldg_count", "bldg_area", "bldg_cov", "bldg_mean", "bldg_orien", "road_len", "road_dist",
                "major_dist"):
        assert col in tiles.columns
    clusters = gpd.read_file(out, layer="clusters")
    assert clusters.tiles.sum() == len(tiles) and len(clusters) == 4
    manifest = json.loads((tmp_path / "c_manifest.json").read_text())
    eta = {r["stat"]: r["eta2"] for r in manifest["statistics"]["eta_squared"]}
    assert eta["bldg_cov"] == pytest.approx(eta_squared(tiles.cluster, tiles.bldg_cov), abs=1e-9)
    assert eta["bldg_cov"] > 0.5                       # the city's zones differ by building coverage
    for name in ("c_stats.csv", "c_profile.png", "c_boxes.png", "c_model.pt", "c_clusters.tif"):
        assert (tmp_path / name).is_file()


def test_stats_then_export_to_shapefile_and_csv(city, city_layers, tmp_path):
    buildings, roads = city_layers
    out = tmp_path / "r.gpkg"
    run_cli("cluster", city.raster, "--out", out, "--k", 3, "--weights", "none", "--no-quicklook", check=0)
    run_cli("stats", out, "--buildings", buildings, check=0)
    again = run_cli("stats", out, "--buildings", buildings)
    assert again.returncode == 2 and "--overwrite" in again.stderr
    proc = run_cli("stats", out, "--roads", roads, "--road-field", "kind", "--overwrite", check=0)  # no such field
    assert "--road-field" in proc.stderr
    assert "major_dist" not in pyogrio.read_info(out, layer="tiles")["fields"]
    run_cli("export", out, "--format", "shp", "--out", tmp_path / "shp", check=0)
    for ext in (".shp", ".prj", ".cpg", ".dbf"):
        assert (tmp_path / "shp" / f"r_tiles{ext}").is_file()
    shp = gpd.read_file(tmp_path / "shp" / "r_tiles.shp")
    assert list(shp.columns) == list(gpd.read_file(out, layer="tiles").columns)
    run_cli("export", out, "--format", "csv", "--out", tmp_path / "csv", check=0)
    csv = (tmp_path / "csv" / "r_tiles.csv").read_text().splitlines()
    assert "geometry" not in csv[0] and len(csv) == len(shp) + 1
    proc = run_cli("export", out, "--format", "csv", "--out", tmp_path / "csv")
    assert proc.returncode == 2 and "--overwrite" in proc.stderr


def test_missing_statistics_input_is_refused_before_clustering(city, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = run_cli("cluster", city.raster, "--out", out_dir / "c.gpkg", "--weights", "none",
                   "--roads", tmp_path / "nope.gpkg")
    assert proc.returncode == 2 and "error: --roads:" in proc.stderr and "does not exist" in proc.stderr
    assert list(out_dir.iterdir()) == []


def test_sweep_with_statistics_explains_them_for_every_k_and_tile_size(city, city_layers, tmp_path):
    import pandas as pd

    buildings, roads = city_layers
    out = tmp_path / "s.gpkg"
    run_cli("sweep", city.raster, "--out", out, "--k", "2..4", "--tile-size", "64px,128px", "--buildings", buildings,
            "--roads", roads, "--progress", "none", check=0)
    eta = pd.read_csv(tmp_path / "s_stats_eta.csv")
    assert set(eta.tile_size) == {"64px", "128px"} and set(eta.k) == {2, 3, 4}
    assert {"bldg_cov", "road_len", "major_dist"} <= set(eta.stat)
    tiles = gpd.read_file(out, layer="tiles_64px")
    row = eta[(eta.tile_size == "64px") & (eta.k == 3) & (eta.stat == "bldg_cov")].eta2.item()
    assert row == pytest.approx(eta_squared(tiles.k3, tiles.bldg_cov), abs=1e-5)
    assert len(gpd.read_file(out, layer="clusters_64px_k4")) == 4
    assert (tmp_path / "s_stats_eta.png").read_bytes()[:4] == b"\x89PNG"
    manifest = json.loads((tmp_path / "s_manifest.json").read_text())
    assert manifest["complete"] and "sweep_statistics" in manifest


def test_python_run_cluster_with_buildings_equals_the_cli(city, city_layers, tmp_path):
    """``run_cluster(..., buildings=..., roads=...)`` from Python runs the full statistics as the CLI does
    (the chaining lives in the tool function, not in cli.py): same tiles columns and values, same clusters."""
    from engine.tools.cluster import ClusterParams, run_cluster

    buildings, roads = city_layers
    cli_out, py_out = tmp_path / "cli.gpkg", tmp_path / "py.gpkg"
    run_cli("cluster", city.raster, "--out", cli_out, "--k", 3, "--weights", "none", "--seed", 1,
            "--buildings", buildings, "--roads", roads, "--no-quicklook", check=0)
    manifest = run_cluster(ClusterParams(raster=str(city.raster), out=str(py_out), k=3, weights="none", seed=1,
                                         buildings=str(buildings), roads=str(roads), quicklook=False))
    assert "statistics" in manifest
    for layer in ("tiles", "clusters"):
        cli, py = gpd.read_file(cli_out, layer=layer), gpd.read_file(py_out, layer=layer)
        assert list(py.columns) == list(cli.columns), layer
        assert layer == "clusters" or {"bldg_area", "bldg_cov", "road_len"} <= set(py.columns)
        assert py.drop(columns="geometry").equals(cli.drop(columns="geometry")), layer
        assert py.geometry.geom_equals(cli.geometry).all(), layer
    for name in ("py_stats.csv", "py_profile.png", "py_boxes.png"):
        assert (tmp_path / name).is_file()


def test_python_run_cluster_removes_the_run_when_the_statistics_fail(city, city_layers, tmp_path):
    from engine.errors import BadInput
    from engine.tools.cluster import ClusterParams, run_cluster

    _, roads = city_layers
    out = tmp_path / "bad.gpkg"
    with pytest.raises(BadInput, match="--road-field"):
        run_cluster(ClusterParams(raster=str(city.raster), out=str(out), k=3, weights="none", roads=str(roads),
                                  road_field="", quicklook=False))      # checked by the stats, after clustering
    assert not [p.name for p in tmp_path.iterdir() if p.name != "cache"]   # the feature cache stays
    with pytest.raises(BadInput, match="does not exist") as missing:     # checked before any work
        run_cluster(ClusterParams(raster=str(city.raster), out=str(out), k=3, weights="none",
                                  buildings=str(tmp_path / "missing.gpkg")))
    assert (missing.value.param, missing.value.code) == ("buildings", "not_found")
