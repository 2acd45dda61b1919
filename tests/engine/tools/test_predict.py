"""The one-file model (OUT_model.pt) and the ``predict`` tool, through the real CLI."""
from __future__ import annotations

import json
import pickle

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import torch
from rasterio.enums import Resampling

from engine.clustering.modelfile import load_model
from engine.errors import BadInput
from tests.engine.helpers import no_files_left, run_cli
from tests.truth import building_coverage


@pytest.fixture(scope="module")
def kampala_run(kampala_z19, tmp_path_factory):
    """A k-means run on the Kampala sample with its footprints: (out gpkg, manifest)."""
    out = tmp_path_factory.mktemp("run") / "kampala.gpkg"
    buildings = kampala_z19.parent / "kampala_ug_osm_buildings.geojson"
    run_cli("cluster", kampala_z19, "--out", out, "--k", 4, "--backbone", "efficientnet_lite0",
            "--buildings", buildings, "--no-quicklook", "--cache-dir", out.parent / "cache", check=0)
    return out, json.loads(out.with_name("kampala_manifest.json").read_text())


def test_model_file_holds_network_pca_centroids_and_tiling(kampala_run):
    out, manifest = kampala_run
    path = out.with_name("kampala_model.pt")
    raw = torch.load(path, weights_only=True)              # plain containers only: nothing executes
    assert raw["format"] == "urbanform-cluster-model" and raw["version"] == 1
    model = load_model(path)
    assert model.k == 4 and model.backbone == "efficientnet_lite0" and model.method == "kmeans"
    assert model.kmeans.cluster_centers_.shape == (4, model.kmeans.n_components_)
    assert model.tiling["tile_px"] == 64 and model.tiling["n_bands"] == 3 and model.tiling["bands"] == [1, 2, 3]
    assert 0.2 < model.tiling["ground_pixel_m"] < 0.4            # z19 Web Mercator near the equator: ~0.3 m
    assert any(k.endswith("_conv_stem.weight") for k in model.network)
    assert manifest["outputs"]["model"] == str(path)


def test_buildings_give_coverage_and_eta_squared(kampala_run):
    out, manifest = kampala_run
    tiles = gpd.read_file(out, layer="tiles")
    independent = building_coverage(tiles, manifest["evaluation"]["buildings"])
    # the engine measures in the local UTM zone, the overlay in Web Mercator: areas scale alike within a tile
    assert np.allclose(tiles.bldg_cov, independent, atol=0.01)
    ev = manifest["evaluation"]
    assert 0 < ev["eta2_bldg_cov"] <= 1 and 0 < ev["mean_bldg_cov"] < 1


def test_predict_on_the_same_raster_gives_the_same_clusters(kampala_run, kampala_z19, tmp_path):
    out, _ = kampala_run
    pred = tmp_path / "pred.gpkg"
    run_cli("predict", out.with_name("kampala_model.pt"), kampala_z19, "--out", pred, check=0)
    a = gpd.read_file(out, layer="tiles").sort_values("tile_id")
    b = gpd.read_file(pred, layer="tiles").sort_values("tile_id")
    assert a.tile_id.tolist() == b.tile_id.tolist()
    assert (a.cluster.to_numpy() == b.cluster.to_numpy()).mean() >= 0.98      # bf16 may flip a borderline tile
    assert {p.name for p in tmp_path.iterdir()} == {"pred.gpkg", "pred_clusters.tif", "pred_quicklook.png",
                                                    "pred_manifest.json"}
    manifest = json.loads((tmp_path / "pred_manifest.json").read_text())
    assert manifest["tool"] == "predict" and manifest["model"]["k"] == 4


def _resampled_copy(src_path, dst_path, factor: float) -> None:
    """The raster at ``factor`` times its pixel size (0.5 = twice as fine), same place."""
    with rasterio.open(src_path) as src:
        h, w = int(src.height / factor), int(src.width / factor)
        data = src.read(out_shape=(src.count, h, w), resampling=Resampling.bilinear)
        profile = src.profile | {"height": h, "width": w,
                                 "transform": src.transform * src.transform.scale(src.width / w, src.height / h)}
    with rasterio.open(dst_path, "w", **profile) as dst:
        dst.write(data)


def test_other_resolution_is_refused_or_resampled(kampala_run, kampala_z19, tmp_path):
    out, _ = kampala_run
    fine = tmp_path / "fine.tif"
    _resampled_copy(kampala_z19, fine, 0.5)
    model = out.with_name("kampala_model.pt")
    proc = run_cli("predict", model, fine, "--out", tmp_path / "p.gpkg")
    assert proc.returncode == 2 and "--resample" in proc.stderr and "m pixels" in proc.stderr
    assert not (tmp_path / "p.gpkg").exists()
    run_cli("predict", model, fine, "--out", tmp_path / "p.gpkg", "--resample", check=0)
    pred = gpd.read_file(tmp_path / "p.gpkg", layer="tiles")
    base = gpd.read_file(out, layer="tiles")
    assert abs(len(pred) - len(base)) <= 0.15 * len(base)      # tiles of the model's ground size, warped grid
    # the same place resampled lands mostly in the same clusters (tile centres matched on the ground)
    b = base.set_index("tile_id")
    joined = gpd.sjoin(gpd.GeoDataFrame(pred[["cluster"]], geometry=pred.centroid, crs=pred.crs),
                       b[["cluster", "geometry"]], predicate="within")
    assert len(joined) > 0.5 * len(pred)
    assert (joined.cluster_left == joined.cluster_right).mean() > 0.6


def test_other_band_count_is_refused(kampala_run, make_raster, rgb_noise, tmp_path):
    out, _ = kampala_run
    grey = make_raster("grey.tif", rgb_noise(128, 128)[:1])
    proc = run_cli("predict", out.with_name("kampala_model.pt"), grey, "--out", tmp_path / "g.gpkg")
    assert proc.returncode == 2 and "1 band(s)" in proc.stderr and "3-band" in proc.stderr


class _Evil:
    def __reduce__(self):
        return (print, ("executed",))


@pytest.mark.parametrize("kind", ["text", "state dict", "pickle with code"])
def test_files_that_are_not_our_models_are_refused(kind, kampala_z19, tmp_path):
    path = tmp_path / "model.pt"
    if kind == "text":
        path.write_text("hello")
    elif kind == "state dict":
        torch.save({"w": torch.zeros(2)}, path)
    else:
        path.write_bytes(pickle.dumps(_Evil(), protocol=2))
    with pytest.raises(BadInput, match="not an Urban Form Mapper"):
        load_model(path)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = run_cli("predict", path, kampala_z19, "--out", out_dir / "p.gpkg")
    assert proc.returncode == 2 and "executed" not in proc.stdout and no_files_left(out_dir)


def test_resume_is_for_deepcluster_only(kampala_z19, tmp_path):
    proc = run_cli("cluster", kampala_z19, "--out", tmp_path / "c.gpkg", "--weights", "none", "--resume")
    assert proc.returncode == 2 and "--method deepcluster" in proc.stderr


@pytest.mark.parametrize("args, expected", [
    (["--epochs", "0"], "error: --epochs: 0 is out of range"), (["--lr", "-1"], "error: --lr: -1.0 is out of range"),
    (["--freeze", "x"], "error: --freeze: 'x' is not a whole number"),
    (["--momentum", "1.5"], "error: --momentum: 1.5 is out of range"),
    (["--train-batch-size", "1"], "error: --train-batch-size: 1 is out of range"),
])
def test_deepcluster_options_are_checked_before_work(args, expected, kampala_z19, tmp_path):
    proc = run_cli("cluster", kampala_z19, "--out", tmp_path / "c.gpkg", "--method", "deepcluster", *args)
    assert proc.returncode == 2 and expected in proc.stderr and "Traceback" not in proc.stderr
    assert list(tmp_path.glob("c*")) == []
