"""One model fitted on several places far apart (``cluster`` over cities): two "cities" cut from the Kampala
sample, the second reprojected to UTM 36S and moved about 1000 km away (towards Zanzibar), so the scenes are two
places in two CRSs. The run writes one tiles layer with both places (in EPSG:4326), one model, and ``predict``
on each place gives the labels the fit gave its tiles. k-means on efficientnet_lite0 features, seed 0, 64 px.
"""
from __future__ import annotations

import json

import numpy as np
import pyogrio
import pytest
import rasterio
from affine import Affine
from rasterio.warp import Resampling, calculate_default_transform, reproject

from engine.errors import BadInput
from engine.tools.cluster import ClusterParams
from engine.tools.cluster import run as run_cluster
from engine.tools.predict import PredictParams
from engine.tools.predict import run as run_predict
from tests.engine.helpers import KAMPALA, cut_strips, run_cli, write_raster

FAST = {"backbone": "efficientnet_lite0", "k": 4, "quicklook": False}
SHIFT = (735_000.0, -705_000.0)          # metres east and north in UTM 36S: from Kampala to about Zanzibar


@pytest.fixture(scope="module")
def cities(tmp_path_factory):
    """(kampala: two strips of one place, zanzibar: one scene in EPSG:32736 far away)."""
    folder = tmp_path_factory.mktemp("cities")
    a1, a2, b = cut_strips(KAMPALA, folder, cuts=((0, 192), (192, 384), (384, 768)))
    with rasterio.open(b) as src:
        t, w, h = calculate_default_transform(src.crs, "EPSG:32736", src.width, src.height, *src.bounds)
        data = np.zeros((3, h, w), np.uint8)
        mask = np.zeros((h, w), np.uint8)
        reproject(src.read(), data, src_transform=src.transform, src_crs=src.crs, dst_transform=t,
                  dst_crs="EPSG:32736", resampling=Resampling.nearest)
        reproject(src.dataset_mask(), mask, src_transform=src.transform, src_crs=src.crs, dst_transform=t,
                  dst_crs="EPSG:32736", resampling=Resampling.nearest)
    moved = Affine(t.a, t.b, t.c + SHIFT[0], t.d, t.e, t.f + SHIFT[1])
    data[:, mask == 0] = 0
    far = write_raster(folder / "zanzibar.tif", data, crs="EPSG:32736", transform=moved, nodata=0)
    return [a1, a2], far


@pytest.fixture(scope="module")
def both(cities, tmp_path_factory):
    (a1, a2), far = cities
    out = tmp_path_factory.mktemp("both") / "both.gpkg"
    manifest = run_cluster(ClusterParams(raster=[str(a1), str(a2), str(far)], out=str(out), **FAST))
    return out, manifest


def test_one_layer_holds_both_places_in_wgs84_with_one_model(cities, both):
    (a1, a2), far = cities
    out, manifest = both
    assert [p["scenes"] for p in manifest["places"]] == [[str(a1), str(a2)], [str(far)]]
    assert manifest["places"][0]["raster"].endswith("study.vrt") and manifest["places"][1]["raster"] == str(far)
    assert manifest["output_crs"] == "EPSG:4326"
    assert pyogrio.read_info(out, layer="tiles")["crs"] == "EPSG:4326"
    tiles = pyogrio.read_dataframe(out, layer="tiles")
    assert set(tiles.place) == {0, 1} and set(tiles.place_name) == {"strip_0", "zanzibar"}
    assert tiles.tile_id.is_unique
    lon = tiles.geometry.bounds.minx.groupby(tiles.place).mean()
    assert lon[0] < 33.0 < 38.0 < lon[1]                               # Kampala, then far to the east
    assert set(tiles.cluster) <= set(range(4)) and len(set(tiles.cluster)) > 1
    assert not out.with_name("both_clusters.tif").exists()            # one grid per place: predict writes them
    assert manifest["warnings"] and "predict" in manifest["warnings"][0]
    from engine.clustering.modelfile import load_model

    model = load_model(str(out.with_name("both_model.pt")))
    assert model.tiling["tile_size"] == "64px" and len(model.meta["places"]) == 2
    assert (model.pool, model.cnn_px, model.form) == (manifest["features"]["pool"], manifest["features"]["cnn_px"],
                                                      None)          # the recipe predict makes features with


def test_predict_on_each_place_gives_the_labels_of_the_fit(cities, both, tmp_path):
    (a1, a2), far = cities
    out, _ = both
    fit = pyogrio.read_dataframe(out, layer="tiles", read_geometry=False)
    model = str(out.with_name("both_model.pt"))
    for place, raster in ((0, [str(a1), str(a2)]), (1, str(far))):
        got_path = tmp_path / f"place{place}.gpkg"
        run_predict(PredictParams(model=model, raster=raster, out=str(got_path), quicklook=False))
        got = pyogrio.read_dataframe(got_path, layer="tiles", read_geometry=False).sort_values(["row", "col"])
        same = fit[fit.place == place].sort_values(["row", "col"])
        assert len(got) == len(same) > 0
        assert got.cluster.tolist() == same.cluster.tolist()
        assert np.allclose(got.clust_dist, same.clust_dist, atol=1e-4)


@pytest.fixture(scope="module")
def buildings(both):
    """One 10 m x 10 m building in the middle of the first tile of each place (EPSG:4326)."""
    import geopandas as gpd

    out, _ = both
    tiles = pyogrio.read_dataframe(out, layer="tiles")
    blds = []
    for place in (0, 1):
        t = tiles[tiles.place == place].iloc[[0]]
        utm = t.estimate_utm_crs()
        c = t.to_crs(utm).geometry.iloc[0].centroid
        blds.append(gpd.GeoSeries([c.buffer(5, cap_style="square")], crs=utm).to_crs("EPSG:4326").iloc[0])
    path = out.with_name("buildings.gpkg")
    gpd.GeoDataFrame(geometry=blds, crs="EPSG:4326").to_file(path)
    return path


def _measured_in_each_place(run, statistics: dict) -> None:
    got = pyogrio.read_dataframe(run, layer="tiles", read_geometry=False)
    firsts = got.groupby("place").head(1)
    assert firsts.bldg_count.tolist() == [1, 1]
    assert np.allclose(firsts.bldg_area, 100.0, rtol=0.02)           # square metres in each place's UTM zone
    assert statistics["metric_crs_per_place"] == {"strip_0": "EPSG:32636", "zanzibar": "EPSG:32737"}
    assert "clusters" in pyogrio.list_layers(run)[:, 0]


def test_stats_measure_each_place_in_its_own_metric_crs(both, buildings, tmp_path):
    import shutil

    from engine.tools.stats import StatsParams
    from engine.tools.stats import run as run_stats

    out, _ = both
    run = tmp_path / "run.gpkg"
    shutil.copyfile(out, run)
    shutil.copyfile(out.with_name("both_manifest.json"), tmp_path / "run_manifest.json")
    manifest = run_stats(StatsParams(run=str(run), buildings=str(buildings)))
    _measured_in_each_place(run, manifest["statistics"])


def test_the_command_line_with_buildings(cities, buildings, tmp_path):
    (a1, a2), far = cities
    out = tmp_path / "cli.gpkg"
    run_cli("cluster", a1, a2, far, "--out", out, "--k", 4, "--backbone", "efficientnet_lite0", "--no-quicklook",
            "--buildings", buildings, "--progress", "none", check=0)
    manifest = json.loads(out.with_name("cli_manifest.json").read_text())
    assert [p["name"] for p in manifest["places"]] == ["strip_0", "zanzibar"]
    assert len(set(manifest["features"]["cache_keys"])) == 2          # a feature cache per place
    assert 0.0 <= manifest["evaluation"]["eta2_bldg_cov"] <= 1.0
    _measured_in_each_place(out, manifest["statistics"])


def test_one_place_runs_as_before_and_a_bad_mix_is_refused(cities, tmp_path):
    (a1, a2), far = cities
    from engine.raster.study import place_groups

    assert place_groups([str(a1), str(a2)]) == [[str(a1), str(a2)]]
    assert place_groups([str(a1), str(far), str(a2)]) == [[str(a1), str(a2)], [str(far)]]
    with rasterio.open(far) as src:
        one = write_raster(tmp_path / "grey.tif", src.read([1]), crs=src.crs, transform=src.transform, nodata=0)
    with pytest.raises(BadInput) as err:
        run_cluster(ClusterParams(raster=[str(a1), str(one)], out=str(tmp_path / "x.gpkg"), **FAST))
    assert err.value.param == "raster" and "band" in str(err.value)
    with pytest.raises(BadInput) as err:
        run_cluster(ClusterParams(raster=[str(a1), str(a2), str(far)], out=str(tmp_path / "x.gpkg"),
                                  method="deepcluster", **FAST))
    assert err.value.param == "method" and "places" in str(err.value)
    import geopandas as gpd
    from shapely.geometry import box

    gpd.GeoDataFrame(geometry=[box(0, 0, 10, 10)], crs="EPSG:32636").to_file(tmp_path / "footprints.gpkg")
    with pytest.raises(BadInput) as err:
        run_cluster(ClusterParams(raster=[str(a1), str(far)], out=str(tmp_path / "x.gpkg"),
                                  form=str(tmp_path / "footprints.gpkg"), **FAST))
    assert err.value.param == "form" and "several places" in str(err.value)
    assert not (tmp_path / "cache").exists()                     # refused before the study VRT is written
    with rasterio.open(far) as src:                              # the far place at twice the pixel size
        coarse = write_raster(tmp_path / "coarse.tif", src.read(out_shape=(3, src.height // 2, src.width // 2)),
                              crs=src.crs, transform=src.transform * Affine.scale(2), nodata=0)
    with pytest.raises(BadInput) as err:
        run_cluster(ClusterParams(raster=[str(a1), str(coarse)], out=str(tmp_path / "x.gpkg"), **FAST))
    assert err.value.param == "raster" and "gdalwarp -tr" in str(err.value)
    assert not any(tmp_path.glob("x*"))


def test_an_area_around_some_places_leaves_the_others_out_with_a_warning(cities, tmp_path):
    import geopandas as gpd
    from shapely.geometry import box

    (a1, a2), far = cities
    with rasterio.open(a1) as src:
        crs, bounds = src.crs, src.bounds
    area = tmp_path / "kampala_only.gpkg"
    gpd.GeoDataFrame(geometry=[box(*bounds)], crs=crs).to_file(area)      # the first strip: Kampala only
    out = tmp_path / "k.gpkg"
    manifest = run_cluster(ClusterParams(raster=[str(a1), str(a2), str(far)], out=str(out), area=str(area), **FAST))
    assert any("--area" in w and "zanzibar" in w and "left out" in w for w in manifest["warnings"]), manifest
    assert [p["name"] for p in manifest["places"]] == ["strip_0"]
    tiles = pyogrio.read_dataframe(out, layer="tiles")
    assert set(tiles.place_name) == {"strip_0"} and len(tiles) == manifest["tiling"]["tiles_valid"]
    # tile centres inside the first strip only: fewer tiles than the two strips hold
    assert len(tiles) < manifest["tiling"]["tiles_total"]

    nowhere = tmp_path / "nowhere.gpkg"
    gpd.GeoDataFrame(geometry=[box(0, 0, 10, 10)], crs="EPSG:32636").to_file(nowhere)
    with pytest.raises(BadInput) as err:
        run_cluster(ClusterParams(raster=[str(a1), str(far)], out=str(tmp_path / "n.gpkg"), area=str(nowhere),
                                  **FAST))
    assert err.value.param == "area" and "any place" in str(err.value) and "zanzibar" in str(err.value)
    assert not any(tmp_path.glob("n.*")) and not any(tmp_path.glob("n_*"))      # nothing written


def test_the_report_shows_the_places_side_by_side_with_their_tiles(both, tmp_path):
    from engine.tools.report import ReportParams
    from engine.tools.report import run as run_report

    out, _ = both
    manifest = run_report(ReportParams(run=str(out), out=str(tmp_path / "both.html"), examples=2))
    assert any("2 places (strip_0, zanzibar)" in w for w in manifest["warnings"])
    assert not any("not there any more" in w for w in manifest["warnings"])         # each place's raster read
    html = (tmp_path / "both.html").read_text()
    assert html.count("<h4>closest to the centre</h4>") == 4                        # a gallery per cluster
