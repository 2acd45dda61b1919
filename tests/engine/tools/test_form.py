"""Form-aware clustering (issue 16 part 1): multi-depth features, tiles resized before the CNN, --form."""
from __future__ import annotations

import os

import geopandas as gpd
import numpy as np
import pytest
import shapely

from engine.contract import defaults
from engine.errors import BadInput
from engine.tools.cluster import ClusterParams, run_cluster
from engine.tools.predict import PredictParams, run_predict


@pytest.mark.parametrize("backbone, dims, weights", [("efficientnet_lite0", (40, 112, 1280), (0.5, 1.0, 1.0)),
                                                      ("resnet18", (128, 256, 512), (1.0, 1.0, 1.0))])
def test_multi_depth_features_have_one_l2_normalised_block_per_depth_times_its_weight(backbone, dims, weights):
    from engine.features.extract import FeatureExtractor

    ex = FeatureExtractor(backbone, "none", "cpu", "fp32", pool="multi", cnn_px=48)
    assert ex.dim == sum(dims) and ex.depth_weights == weights         # the backbone's own weights
    tiles = np.random.default_rng(0).integers(0, 256, size=(3, 3, 24, 24), dtype=np.uint8)   # resized to 48
    f = ex(tiles)
    assert f.shape == (3, sum(dims))
    edges = np.cumsum((0, *dims))
    for w, a, b in zip(weights, edges[:-1], edges[1:]):
        np.testing.assert_allclose(np.linalg.norm(f[:, a:b], axis=1), w, rtol=1e-4)
    last = FeatureExtractor(backbone, "none", "cpu", "fp32", pool="last", cnn_px=48)
    assert last.dim == dims[-1] and last.depth_weights is None
    np.testing.assert_allclose(f[:, edges[-2]:], last(tiles) / np.linalg.norm(last(tiles), axis=1, keepdims=True),
                               rtol=1e-4, atol=1e-5)
    given = (2.0, 1.0, 0.25)                                           # weights given: each block scaled alone
    g = FeatureExtractor(backbone, "none", "cpu", "fp32", pool="multi", cnn_px=48, depth_weights=given)(tiles)
    for w, own, a, b in zip(given, weights, edges[:-1], edges[1:]):
        np.testing.assert_allclose(g[:, a:b], f[:, a:b] * (w / own), rtol=1e-4, atol=1e-6)
    with pytest.raises(BadInput, match=f"depth weights \\[1, 1\\] do not fit backbone {backbone}: it needs 3"):
        FeatureExtractor(backbone, "none", "cpu", "fp32", pool="multi", depth_weights=[1, 1])
    with pytest.raises(BadInput, match="3 positive numbers"):
        FeatureExtractor(backbone, "none", "cpu", "fp32", pool="multi", depth_weights=[1, 0, 1])


def test_tiles_too_small_for_the_backbone_are_refused_naming_the_fix():
    from engine.features.backbones import backbone_spec
    from engine.features.extract import FeatureExtractor, check_cnn_input

    tiles = np.zeros((2, 3, 24, 24), dtype=np.uint8)
    with pytest.raises(BadInput, match="tiles are 24 px and efficientnet_lite0 needs at least 32 px") as e:
        FeatureExtractor("efficientnet_lite0", "none", "cpu", "fp32", cnn_px="native")(tiles)
    assert e.value.param == "cnn_px" and "--cnn-px 128" in str(e.value) and "resnet18" in str(e.value)
    with pytest.raises(BadInput, match="--cnn-px 24: efficientnet_lite0 needs tiles of at least 32 px"):
        check_cnn_input(backbone_spec("efficientnet_lite0"), 24, 64)
    assert FeatureExtractor("efficientnet_lite0", "none", "cpu", "fp32", cnn_px=32)(tiles).shape == (2, 1280)
    assert FeatureExtractor("resnet18", "none", "cpu", "fp32", cnn_px="native")(tiles).shape == (2, 512)


@pytest.mark.parametrize("tool", ["cluster", "sweep"])
def test_cluster_and_sweep_refuse_native_tiles_too_small_before_any_work(tool, tmp_path):
    from engine.progress import Progress
    from tests.engine.helpers import SAMPLE

    class Stages(Progress):
        def __init__(self):
            super().__init__("none")
            self.seen = []

        def __call__(self, stage, *args, **fields):
            self.seen.append(stage)

    raster = str(SAMPLE / "kampala_ug_oam_rgb_z19_epsg3857.tif")
    rec = Stages()
    with pytest.raises(BadInput, match="--cnn-px native: the tiles are 24 px"):
        if tool == "cluster":
            run_cluster(ClusterParams(raster=raster, out=str(tmp_path / "c.gpkg"), k=3, tile_size="24px",
                                      cnn_px="native", weights="none", quicklook=False, use_cache=False), rec)
        else:
            from engine.tools.sweep import SweepParams, run_sweep

            run_sweep(SweepParams(raster, str(tmp_path / "s.gpkg"), k="2,3", tile_size="48px,24px", cnn_px="native",
                                  weights="none", use_cache=False), rec)
    assert "open" in rec.seen and "features" not in rec.seen and not any(tmp_path.iterdir())


def test_form_features_of_known_buildings():
    from engine.stats.form import FORM_COLUMNS, form_features

    tiles = gpd.GeoSeries([shapely.box(0, 0, 20, 20), shapely.box(20, 0, 40, 20)])
    b = gpd.GeoSeries([shapely.box(2, 2, 6, 6), shapely.box(10, 2, 14, 6)])      # two 4 m squares 4 m apart
    f = form_features(tiles, b)
    assert list(f.columns) == list(FORM_COLUMNS)
    one, empty = f.iloc[0], f.iloc[1]
    assert one.form_cov == pytest.approx(32 / 400)
    assert one.form_count == pytest.approx(np.log1p(2))
    assert one.form_size == pytest.approx(np.log1p(16))
    assert one.form_compact == pytest.approx(np.pi / 4)
    assert one.form_space == pytest.approx(np.log1p(4))
    assert (one.form_cos4, one.form_sin4) == pytest.approx((1.0, 0.0), abs=1e-9)    # axis-aligned
    assert empty.form_cov == empty.form_count == empty.form_cos4 == 0
    assert empty.form_space == pytest.approx(np.log1p(20))                           # no neighbour: the tile side
    assert np.isfinite(f.to_numpy()).all()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The Kampala sample clustered with the new default, and with --form (the features are computed once)."""
    from tests.engine.helpers import SAMPLE

    raster = SAMPLE / "kampala_ug_oam_rgb_z19_epsg3857.tif"
    fp = SAMPLE / "kampala_ug_osm_buildings.geojson"
    d = tmp_path_factory.mktemp("form")
    common = dict(raster=str(raster), k=4, quicklook=False, cache_dir=str(d / "cache"))
    plain = run_cluster(ClusterParams(out=str(d / "plain.gpkg"), **common))
    form = run_cluster(ClusterParams(out=str(d / "form.gpkg"), form=str(fp), form_weight=2.0, **common))
    return {"raster": raster, "fp": fp, "dir": d, "plain": plain, "form": form}


def test_default_recipe_is_recorded_and_form_reuses_the_cached_features(runs):
    f = runs["plain"]["features"]
    assert (f["pool"], f["cnn_px"], f["form"]) == (defaults.DEFAULT_POOL, defaults.DEFAULT_CNN_PX, None)
    assert f["dim"] == 1280 + 40 + 112 and list(f["depth_weights"]) == [0.5, 1.0, 1.0]
    g = runs["form"]["features"]
    assert g["cache_key"] == f["cache_key"] and g["cache_hit"]
    assert g["form"]["n_form_"] == 7 and g["form"]["weight"] == 2.0


@pytest.mark.parametrize("name", ["plain", "form"])
def test_predict_reproduces_the_cluster_run(runs, name):
    d = runs["dir"]
    out = d / f"pred_{name}.gpkg"
    run_predict(PredictParams(model=str(d / f"{name}_model.pt"), raster=str(runs["raster"]), out=str(out),
                              quicklook=False, form=str(runs["fp"]) if name == "form" else None))
    a = gpd.read_file(d / f"{name}.gpkg", layer="tiles").cluster.to_numpy()
    b = gpd.read_file(out, layer="tiles").cluster.to_numpy()
    np.testing.assert_array_equal(a, b)


def test_model_files_without_depth_weights_are_predicted_with_equal_weights(runs, tmp_path):
    """Model files written before the depths had weights were fitted on equally weighted depths: predict
    makes the features that way for them, and refuses a file whose weights do not fit its backbone."""
    import json

    import torch

    from engine.clustering.modelfile import load_model

    d = runs["dir"]
    model = load_model(d / "plain_model.pt")
    assert model.depth_weights == (0.5, 1.0, 1.0)
    X = np.load(d / "cache" / f"{runs['plain']['features']['cache_key']}.npy")
    np.testing.assert_array_equal(model.kmeans.assign(X)[0],
                                  gpd.read_file(d / "plain.gpkg", layer="tiles").cluster.to_numpy())
    equal = X.copy()
    equal[:, :40] *= 2.0                                          # block 4 at weight 1, as old files had it
    labels, dist, _ = model.kmeans.assign(equal)
    assert not np.allclose(dist, model.kmeans.assign(X)[1], rtol=1e-3)     # the weights matter
    obj = torch.load(d / "plain_model.pt", weights_only=True)
    meta = json.loads(obj["meta"])
    del meta["features"]["depth_weights"]
    torch.save({**obj, "meta": json.dumps(meta)}, tmp_path / "old.pt")
    assert load_model(tmp_path / "old.pt").depth_weights == (1.0, 1.0, 1.0)
    out = run_predict(PredictParams(model=str(tmp_path / "old.pt"), raster=str(runs["raster"]),
                                    out=str(tmp_path / "old.gpkg"), quicklook=False))
    assert out["model"]["depth_weights"] == (1.0, 1.0, 1.0)
    tiles = gpd.read_file(tmp_path / "old.gpkg", layer="tiles")
    np.testing.assert_array_equal(tiles.cluster.to_numpy(), labels)
    np.testing.assert_allclose(tiles.clust_dist.to_numpy(), dist, rtol=1e-4)
    meta["features"]["depth_weights"] = [1.0, 1.0]
    torch.save({**obj, "meta": json.dumps(meta)}, tmp_path / "bad.pt")
    with pytest.raises(BadInput, match=r"bad.pt' is damaged \(its depth weights \[1.0, 1.0\] do not fit"):
        load_model(tmp_path / "bad.pt")


def test_predict_asks_for_form_when_the_model_used_it_and_refuses_it_otherwise(runs):
    d = runs["dir"]
    with pytest.raises(BadInput, match="--form") as exc:
        run_predict(PredictParams(model=str(d / "form_model.pt"), raster=str(runs["raster"]),
                                  out=str(d / "x.gpkg")))
    assert exc.value.param == "form"
    with pytest.raises(BadInput, match="--form") as exc:
        run_predict(PredictParams(model=str(d / "plain_model.pt"), raster=str(runs["raster"]),
                                  out=str(d / "y.gpkg"), form=str(runs["fp"])))
    assert exc.value.param == "form"
    assert not (d / "x.gpkg").exists() and not (d / "y.gpkg").exists()


@pytest.mark.parametrize("case", ["missing", "csv", "elsewhere", "deepcluster"])
def test_bad_form_input_is_refused_before_any_work(runs, tmp_path, case):
    raster = runs["raster"]
    kw = {}
    if case == "missing":
        form = tmp_path / "nope.gpkg"
    elif case == "csv":
        form = tmp_path / "b.csv"
        form.write_text("a,b\n1,2\n")
    elif case == "elsewhere":                    # footprints far away from the raster
        form = tmp_path / "far.gpkg"
        gpd.GeoDataFrame(geometry=[shapely.box(0, 0, 10, 10)], crs="EPSG:32630").to_file(form)
    else:
        form = runs["fp"]
        kw = {"method": "deepcluster"}
    out = tmp_path / "run.gpkg"
    with pytest.raises(BadInput, match="(?i)form") as exc:     # the flag, or its label ("Footprints for form ...")
        run_cluster(ClusterParams(raster=str(raster), out=str(out), k=4, quicklook=False, form=str(form), **kw))
    assert exc.value.param == "form"
    assert not out.exists()


# -- --form given a building model (the MODEL.pt of train-seg): the raster's buildings mapped, cached, joined --

def _building_model(path, raster, quantile: float = 0.8, **meta):
    """A U-Net file that maps some buildings on ``raster``: random resnet18 weights (seed 0), the head's bias set
    so that the brightest ``1 - quantile`` of its logits on a window of the raster pass the 0.5 threshold (a
    real model, not a good one; what train-seg's first epochs give maps nothing at all)."""
    import rasterio
    import torch
    from rasterio.windows import Window

    from engine.raster.tiling import ground_pixel_size
    from engine.segmentation.modelfile import save_seg_model
    from engine.segmentation.unet import UNet

    torch.manual_seed(0)
    net = UNet("resnet18", weights="none").eval()
    with rasterio.open(raster) as ds:
        x = torch.from_numpy(ds.read((1, 2, 3), window=Window(0, 0, 256, 256))[None].copy())
    with torch.inference_mode():
        logits = net(x)
        net.head.bias -= torch.quantile(logits.flatten(), quantile)
    save_seg_model(path, net, {"bands": [1, 2, 3], "n_bands": 3, "stretch": None, "chip": 128,
                               "ground_pixel_m": ground_pixel_size(str(raster)), **meta})
    return path


@pytest.fixture(scope="module")
def mapped(runs):
    """--form MODEL.pt: a first run maps the buildings into the cache, a second (another K) reuses them."""
    d = runs["dir"] / "mapped"
    d.mkdir()
    model = _building_model(d / "buildings.pt", runs["raster"])
    common = dict(raster=str(runs["raster"]), quicklook=False, cache_dir=str(d / "features"), form=str(model))
    first = run_cluster(ClusterParams(out=str(d / "first.gpkg"), k=4, **common))
    return {"dir": d, "model": model, "common": common, "first": first}


def test_form_takes_a_building_model_and_caches_its_buildings(mapped, monkeypatch):
    from engine.clustering.modelfile import load_model
    from engine.io import sha256_file
    from engine.tools import segment

    d, first = mapped["dir"], mapped["first"]
    src = first["features"]["form_source"]
    assert src["kind"] == "building_model" and not src["cache_hit"] and src["n_buildings"] > 0
    assert src["sha256"] == sha256_file(mapped["model"]) and src["path"] == str(mapped["model"].resolve())
    buildings = d / "features" / "buildings" / f"{src['cache_key']}.gpkg"
    assert src["buildings"] == str(buildings)
    assert len(gpd.read_file(buildings, layer="buildings")) == src["n_buildings"]
    assert first["features"]["form"]["n_form_"] == 7 and first["features"]["form_file"] == str(mapped["model"])
    assert load_model(d / "first_model.pt").meta["features"]["form_source"]["kind"] == "building_model"
    leftovers = [p.name for p in buildings.parent.iterdir() if p.name.startswith(".")]   # locks only, no partials
    assert all(name.endswith(".lock") for name in leftovers)

    def no_segmentation(*a, **k):
        raise AssertionError("the cached buildings were mapped again")

    monkeypatch.setattr(segment, "run", no_segmentation)
    second = run_cluster(ClusterParams(out=str(d / "second.gpkg"), k=3, **mapped["common"]))
    src2 = second["features"]["form_source"]
    assert src2["cache_hit"] and src2["buildings"] == src["buildings"] and src2["n_buildings"] == src["n_buildings"]
    assert second["features"]["cache_hit"]                  # the CNN features too


def test_mapped_buildings_are_reused_then_removed_by_the_cache_budget_and_mapped_again(mapped, tmp_path,
                                                                                    monkeypatch):
    """The layer --form MODEL.pt maps counts against URBANFORM_CACHE_MAX_GB (engine.io.cache). On a copy of the
    run's cache: a hit marks the layer used; once it has gone unused past the grace period, a run that adds
    features under a budget too small for the old entries removes it with them and says so; the next --form
    run maps the buildings again."""
    import shutil

    from engine.io import cache
    from engine.progress import Progress

    store = tmp_path / "features"
    shutil.copytree(mapped["dir"] / "features", store)
    (_, _, layer), = cache.building_groups(store)
    messages = []

    class Said(Progress):
        def __init__(self):
            super().__init__("none")

        def __call__(self, stage, done=0, total=0, message="", **fields):
            messages.append(message)

    def age_everything():                                           # last used long before the grace period
        for _, _, files in cache.entries(store):
            for f in files:
                os.utime(f, (1e9, 1e9))

    def go(name, **kw):
        common = {**mapped["common"], "cache_dir": str(store), **kw}
        return run_cluster(ClusterParams(out=str(tmp_path / name), k=3, **common), Said())

    age_everything()
    first = go("a.gpkg")                                            # the mapped run's tiling: both are hits
    assert first["features"]["cache_hit"] and first["features"]["form_source"]["cache_hit"]
    assert all(os.stat(f).st_mtime > 1.5e9 for f in layer)          # the hit marked the layer's files used
    age_everything()
    old = [p for _, _, p in cache.feature_files(store)]
    monkeypatch.setenv(cache.ENV, "1e-6")                           # about 1 kB: room for nothing old
    second = go("b.gpkg", tile_size="48px", form=None)              # another tiling: new features
    assert not second["features"]["cache_hit"]
    assert not any(f.exists() for f in [*layer, *old]) and len(cache.feature_files(store)) == 1
    assert any("1 mapped buildings layer(s)" in m and cache.ENV in m for m in messages)
    monkeypatch.setenv(cache.ENV, "0")
    third = go("c.gpkg")
    assert not third["features"]["form_source"]["cache_hit"] and all(f.exists() for f in layer)


def test_form_with_footprints_records_them(runs):
    src = runs["form"]["features"]["form_source"]
    assert src == {"kind": "footprints", "path": str(runs["fp"].resolve())}


def test_predict_with_the_building_model_reproduces_the_run(mapped, monkeypatch):
    d = mapped["dir"]
    monkeypatch.setenv("URBANFORM_CACHE", str(d))         # predict's cache: d/features, the run's
    out = d / "pred.gpkg"
    m = run_predict(PredictParams(model=str(d / "first_model.pt"), raster=mapped["common"]["raster"], out=str(out),
                                  quicklook=False, form=str(mapped["model"])))
    assert m["form_source"]["cache_hit"] and m["model"]["form_source"]["kind"] == "building_model"
    a = gpd.read_file(d / "first.gpkg", layer="tiles").cluster.to_numpy()
    np.testing.assert_array_equal(a, gpd.read_file(out, layer="tiles").cluster.to_numpy())


@pytest.mark.parametrize("case", ["cluster model", "state dict", "random bytes", "truncated", "one band",
                                  "another resolution"])
def test_a_pt_that_is_no_building_model_for_this_raster_is_refused_before_any_work(runs, tmp_path, case):
    import torch

    raster = runs["raster"]
    bad = tmp_path / "bad.pt"
    if case == "cluster model":
        bad = runs["dir"] / "plain_model.pt"
    elif case == "state dict":
        torch.save({"w": torch.zeros(2)}, bad)
    elif case == "random bytes":
        bad.write_bytes(np.random.default_rng(0).integers(0, 256, 2048, dtype=np.uint8).tobytes())
    elif case == "truncated":
        whole = _building_model(tmp_path / "whole.pt", raster).read_bytes()
        bad.write_bytes(whole[: len(whole) // 2])
    elif case == "one band":                       # a model of RGB imagery for a one-band raster
        import rasterio

        _building_model(bad, raster)
        with rasterio.open(raster) as src:
            with rasterio.open(tmp_path / "grey.tif", "w", **{**src.profile, "count": 1}) as dst:
                dst.write(src.read(1)[None])
        raster = tmp_path / "grey.tif"
    else:
        from engine.raster.tiling import ground_pixel_size

        _building_model(bad, raster, ground_pixel_m=3 * ground_pixel_size(str(raster)))
    out = tmp_path / "run.gpkg"
    for run in (lambda: run_cluster(ClusterParams(raster=str(raster), out=str(out), k=4, quicklook=False,
                                                  cache_dir=str(tmp_path / "cache"), form=str(bad))),
                lambda: run_predict(PredictParams(model=str(runs["dir"] / "form_model.pt"), raster=str(raster),
                                                  out=str(out), quicklook=False, form=str(bad)))):
        with pytest.raises(BadInput, match="^--form ") as exc:
            run()
        assert exc.value.param == "form"
        assert "train-seg" in str(exc.value) or "footprints" in str(exc.value)
        assert not out.exists() and not (tmp_path / "cache").exists()


def test_a_building_model_that_maps_nothing_is_said_so(runs, tiny_seg_model, tmp_path):
    """The session's tiny model with its output layer's bias pushed far down maps no building on the sample: a
    clear error, no run."""
    import torch

    from engine.segmentation.modelfile import load_seg_model, save_seg_model

    net, meta = load_seg_model(tiny_seg_model)
    head = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        head.bias -= 100.0
    blind = tmp_path / "blind.pt"
    save_seg_model(blind, net, meta)
    out = tmp_path / "run.gpkg"
    with pytest.raises(BadInput, match="mapped no building") as exc:
        run_cluster(ClusterParams(raster=str(runs["raster"]), out=str(out), k=4, quicklook=False,
                                  cache_dir=str(tmp_path / "cache"), form=str(blind)))
    assert exc.value.param == "form" and not out.exists()


def test_model_files_are_told_from_vector_files(runs, tmp_path):
    import shutil

    from engine.segmentation.modelfile import is_model_file

    renamed = tmp_path / "model.bin"                 # a model uploaded under another name: known by its bytes
    shutil.copy2(runs["dir"] / "plain_model.pt", renamed)
    assert is_model_file(renamed) and is_model_file(tmp_path / "missing.pt")
    assert not is_model_file(runs["fp"]) and not is_model_file(runs["raster"])
    assert not is_model_file(tmp_path / "missing.gpkg")
