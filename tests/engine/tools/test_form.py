"""Form-aware clustering (issue 16 part 1): multi-depth features, tiles resized before the CNN, --form."""
from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import shapely

from engine.contract import defaults
from engine.errors import BadInput
from engine.tools.cluster import ClusterParams, run_cluster
from engine.tools.predict import PredictParams, run_predict


@pytest.mark.parametrize("backbone, dims", [("efficientnet_lite0", (40, 112, 1280)), ("resnet18", (128, 256, 512))])
def test_multi_depth_features_have_one_l2_normalised_block_per_depth(backbone, dims):
    from engine.features.extract import FeatureExtractor

    ex = FeatureExtractor(backbone, "none", "cpu", "fp32", pool="multi", cnn_px=48)
    assert ex.dim == sum(dims)
    tiles = np.random.default_rng(0).integers(0, 256, size=(3, 3, 24, 24), dtype=np.uint8)   # resized to 48
    f = ex(tiles)
    assert f.shape == (3, sum(dims))
    edges = np.cumsum((0, *dims))
    for a, b in zip(edges[:-1], edges[1:]):
        np.testing.assert_allclose(np.linalg.norm(f[:, a:b], axis=1), 1.0, rtol=1e-4)
    last = FeatureExtractor(backbone, "none", "cpu", "fp32", pool="last", cnn_px=48)
    assert last.dim == dims[-1]
    np.testing.assert_allclose(f[:, edges[-2]:], last(tiles) / np.linalg.norm(last(tiles), axis=1, keepdims=True),
                               rtol=1e-4, atol=1e-5)


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
    assert f["dim"] == 1280 + 40 + 112
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
