"""Tools on a study of several rasters: the same tiles and labels as the uncut raster, a model fitted on two
places then ``predict`` on each, ``probe`` counting the tiles of the whole study, and a ``--dask local:2`` run.

The scenes are strips cut from the Kampala sample (engine.raster.study's tests check their mosaic pixel for
pixel); here the tools run on them: k-means on efficientnet_lite0 features, seed 0, 64 px tiles.
"""
from __future__ import annotations

import json

import pyogrio
import pytest

from engine.errors import BadInput
from engine.tools.cluster import ClusterParams
from engine.tools.cluster import run as run_cluster
from engine.tools.predict import PredictParams
from engine.tools.predict import run as run_predict
from tests.engine.distributed.helpers import assert_same_tiles, tile_columns
from tests.engine.helpers import KAMPALA, cut_strips, hand_vrt, run_cli

FAST = {"backbone": "efficientnet_lite0", "k": 4, "quicklook": False}


def _cluster(raster, out, **kw):
    return run_cluster(ClusterParams(raster=raster, out=str(out), **{**FAST, **kw}))


@pytest.fixture(scope="module")
def uncut(tmp_path_factory):
    """The run on the uncut raster that every study run is compared with."""
    out = tmp_path_factory.mktemp("uncut") / "uncut.gpkg"
    _cluster(str(KAMPALA), out, use_cache=False)
    return out


@pytest.fixture(scope="module")
def strips(tmp_path_factory):
    return cut_strips(KAMPALA, tmp_path_factory.mktemp("scenes") / "strips")


def test_a_folder_on_the_command_line_and_a_vrt_give_the_tiles_and_labels_of_the_uncut_raster(
        uncut, strips, tmp_path):
    run_cli("cluster", *strips, "--out", tmp_path / "paths.gpkg", "--backbone", "efficientnet_lite0", "--k", 4,
            "--no-quicklook", "--progress", "none", check=0)
    assert_same_tiles(tile_columns(uncut), tile_columns(tmp_path / "paths.gpkg"))
    manifest = json.loads((tmp_path / "paths_manifest.json").read_text())
    vrt = manifest["inputs"]["raster"]
    assert vrt.endswith("study.vrt") and manifest["parameters"]["raster"] == vrt
    assert manifest["inputs"]["scenes"] == [str(p) for p in strips]          # the study's scenes, in order
    vrt_run = _cluster(hand_vrt(tmp_path / "mosaic.vrt", KAMPALA, strips), tmp_path / "vrt.gpkg")
    assert_same_tiles(tile_columns(uncut), tile_columns(tmp_path / "vrt.gpkg"))
    folder_run = _cluster(str(strips[0].parent), tmp_path / "folder.gpkg")
    assert_same_tiles(tile_columns(uncut), tile_columns(tmp_path / "folder.gpkg"))
    assert folder_run["inputs"]["sha256"] == manifest["inputs"]["sha256"] != vrt_run["inputs"]["sha256"]
    assert folder_run["features"]["cache_hit"]          # the same study: its features come from the cache


def test_a_model_fitted_on_two_places_predicts_each_as_the_fit_did(strips, tmp_path):
    a, b = cut_strips(KAMPALA, tmp_path / "places", cuts=((0, 256), (512, 768)))      # a 256 px gap between
    _cluster([str(a), str(b)], tmp_path / "both.gpkg")
    fit = pyogrio.read_dataframe(tmp_path / "both.gpkg", layer="tiles", read_geometry=False)
    assert set(fit.col) <= set(range(4)) | set(range(8, 12))          # no tile of the gap
    model = str(tmp_path / "both_model.pt")
    from engine.clustering.modelfile import load_model

    assert load_model(model).meta["scenes"] == [str(a), str(b)]          # what the model was fitted on
    for place, first_col in ((a, 0), (b, 8)):
        out = tmp_path / f"{place.stem}.gpkg"
        run_predict(PredictParams(model=model, raster=str(place), out=str(out), quicklook=False))
        got = pyogrio.read_dataframe(out, layer="tiles", read_geometry=False)
        same = fit[(fit.col >= first_col) & (fit.col < first_col + 4)]
        assert len(got) == len(same) > 0
        assert got.sort_values(["row", "col"]).cluster.tolist() == same.sort_values(["row", "col"]).cluster.tolist()


def test_change_takes_a_folder_for_a_date(uncut, strips, tmp_path):
    from engine.tools.change import ChangeParams
    from engine.tools.change import run as run_change

    model = str(uncut.with_name("uncut_model.pt"))
    manifest = run_change(ChangeParams(model=model, raster_before=str(strips[0].parent), raster_after=str(KAMPALA),
                                       out=str(tmp_path / "change.gpkg")))
    assert manifest["change"]["tiles"] > 0 and manifest["change"]["changed"] == 0     # the same image twice
    assert manifest["inputs"]["raster_before"]["raster"].endswith("study.vrt")


def test_probe_counts_the_tiles_of_the_whole_study_and_refuses_a_bad_one(strips, tmp_path):
    proc = run_cli("probe", *strips, "--tile-size", "64px", check=0)
    answer = json.loads(proc.stdout)
    assert (answer["rows"], answer["cols"], answer["tiles"]) == (8, 12, 96)       # 512 x 768 px
    (tmp_path / "empty").mkdir()
    proc = run_cli("probe", strips[0], tmp_path / "empty", check=2)
    assert proc.stderr.startswith("error: raster ") and "no rasters" in proc.stderr
    with pytest.raises(BadInput) as err:
        _cluster([str(strips[0]), str(tmp_path / "empty")], tmp_path / "x.gpkg")
    assert err.value.param == "raster" and not (tmp_path / "x.gpkg").exists()


def test_scenes_in_two_crss_give_outputs_in_the_utm_zone_of_the_study(strips, tmp_path):
    import numpy as np
    import rasterio
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    from tests.engine.helpers import write_raster

    with rasterio.open(strips[2]) as src:            # the last strip in geographic coordinates
        t, w, h = calculate_default_transform(src.crs, "EPSG:4326", src.width, src.height, *src.bounds)
        data = np.zeros((3, h, w), np.uint8)
        reproject(src.read(), data, src_transform=src.transform, src_crs=src.crs, dst_transform=t,
                  dst_crs="EPSG:4326", resampling=Resampling.bilinear)
    geo = write_raster(tmp_path / "geo.tif", data, crs="EPSG:4326", transform=t)
    manifest = _cluster([str(strips[0]), str(strips[1]), str(geo)], tmp_path / "mixed.gpkg", tile_size="20m")
    assert manifest["inputs"]["crs"] == "EPSG:32636" and not manifest["tiling"]["warped"]
    assert manifest["inputs"]["scenes"] == [str(strips[0]), str(strips[1]), str(geo)]
    assert pyogrio.read_info(tmp_path / "mixed.gpkg", layer="tiles")["crs"] == "EPSG:32636"
    with rasterio.open(tmp_path / "mixed_clusters.tif") as tif:
        assert tif.crs.to_epsg() == 32636
    from engine.raster.tiling import TiledRaster

    with TiledRaster(str(KAMPALA), "20m") as one:       # the uncut raster, warped to the same zone on the fly
        expected = len(one.grid)
    assert abs(manifest["tiling"]["tiles_total"] - expected) <= 3
    assert manifest["tiling"]["tiles_valid"] >= 0.9 * manifest["tiling"]["tiles_total"]


def test_a_study_on_a_local_dask_cluster_gives_the_labels_of_one_process(uncut, strips, tmp_path):
    manifest = _cluster(str(strips[0].parent), tmp_path / "dask.gpkg", dask="local:2", batch_size=8)
    assert manifest["dask"]["workers"] == 2
    assert_same_tiles(tile_columns(uncut), tile_columns(tmp_path / "dask.gpkg"))
