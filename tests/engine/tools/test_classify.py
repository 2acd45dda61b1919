"""The ``classify`` tool: tiles classified from a few labels, spatially cross-validated, on known truth."""
from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import torch
from shapely.geometry import Point

from engine.tools.classify import ClassifyParams, run
from tests.engine.helpers import run_cli, work_events
from tests.synthetic import ZONES
from tests.truth import building_coverage, zone_labels

TILE = 64


def centre_points(transform, rows, cols, size: int = TILE) -> list:
    return [Point(*(transform * ((c + 0.5) * size, (r + 0.5) * size))) for r, c in zip(rows, cols, strict=True)]


@pytest.fixture(scope="module")
def city_labels(city, tmp_path_factory):
    """Five labelled points per zone of the synthetic city, at the centres of tiles drawn at random (seeded)."""
    names, points = zone_labels(city, TILE, 5, seed=0)
    path = tmp_path_factory.mktemp("labels") / "labels.gpkg"
    gpd.GeoDataFrame({"zone": names, "code": np.arange(len(names)) % 2},
                     geometry=points, crs=city.crs).to_file(path)
    return path


@pytest.mark.parametrize("classifier", ["logreg", "forest"])
def test_five_labels_per_zone_classify_the_city(city, city_labels, classifier, tmp_path):
    out = tmp_path / "classes.gpkg"
    manifest = run(ClassifyParams(raster=str(city.raster), out=str(out), labels=str(city_labels), field="zone",
                                  classifier=classifier))
    c = manifest["classify"]
    tiles = gpd.read_file(out, layer="tiles")
    truth = np.array(ZONES)[city.zone_of_tiles(TILE)[tiles.row, tiles.col]]
    every = float((tiles["class"].to_numpy() == truth).mean())
    print(f"classify ({classifier}) on the synthetic city, 5 labels per zone: spatially cross-validated accuracy "
          f"{c['accuracy']:.3f} ({c['folds']} folds of {c['block_tiles']} x {c['block_tiles']} tiles); "
          f"all {len(tiles)} tiles against the zones {every:.3f}")
    assert c["labels"] == 20 and c["labels_per_class"] == {z: 5 for z in ZONES}
    assert c["accuracy"] >= 0.85 and every >= 0.85                  # measured: 0.9 / 0.93 (logreg), 0.9 / 1.0
    # outputs: a probability per class that sums to 1, the class of the highest, Shapefile-safe names
    probs = tiles[[f"p_{i}" for i in range(4)]].to_numpy()
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-4)
    assert (probs.argmax(axis=1) == tiles.class_id).all() and np.allclose(probs.max(axis=1), tiles.prob)
    assert all(len(col) <= 10 and col == col.lower() and col.isascii() for col in tiles.columns)
    classes = gpd.read_file(out, layer="classes")
    assert classes["class"].tolist() == manifest["classes"] and classes["labels"].tolist() == [5, 5, 5, 5]
    cv = pd.read_csv(tmp_path / "classes_cv.csv", index_col=0)
    assert cv.loc["all", "recall"] == pytest.approx(c["accuracy"])
    matrix = pd.read_csv(tmp_path / "classes_confusion.csv", index_col=0)
    assert matrix.to_numpy().sum() == 20 and np.trace(matrix.to_numpy()) == round(20 * c["accuracy"])
    # the classifier file holds plain containers; applied to the same raster it gives the same classes
    raw = torch.load(tmp_path / "classes_classifier.pt", weights_only=True)
    assert raw["format"] == "urbanform-tile-classifier" and raw["X"].shape[0] == 20
    again = tmp_path / "again.gpkg"
    applied = run(ClassifyParams(raster=str(city.raster), out=str(again),
                                 model=str(tmp_path / "classes_classifier.pt")))
    assert applied["classes"] == manifest["classes"]
    assert (gpd.read_file(again, layer="tiles")["class"] == tiles["class"]).mean() >= 0.98
    assert not (tmp_path / "again_cv.csv").exists() and not (tmp_path / "again_classifier.pt").exists()


def test_built_and_unbuilt_on_kampala_from_twenty_labels(kampala_z19, kampala_buildings, tmp_path):
    """Real imagery: 10 tiles that the footprints cover most and 10 they do not touch, labelled by points."""
    import rasterio

    with rasterio.open(kampala_z19) as src:
        transform, crs, n_rows, n_cols = src.transform, src.crs, src.height // TILE, src.width // TILE
    rows, cols = np.indices((n_rows, n_cols)).reshape(2, -1)
    squares = [Point(p).buffer(TILE * transform.a / 2, cap_style=3) for p in centre_points(transform, rows, cols)]
    grid = gpd.GeoDataFrame({"tile_id": rows * n_cols + cols}, geometry=squares, crs=crs)
    coverage = building_coverage(grid, kampala_buildings)
    rng = np.random.default_rng(0)
    built = rng.choice(np.flatnonzero(coverage >= 0.35), 10, replace=False)
    bare = rng.choice(np.flatnonzero(coverage <= 0.02), 10, replace=False)
    picked = np.concatenate([built, bare])
    labels = gpd.GeoDataFrame({"kind": ["built"] * 10 + ["unbuilt"] * 10},
                              geometry=centre_points(transform, rows[picked], cols[picked]), crs=crs)
    labels.to_crs("EPSG:4326").to_file(tmp_path / "labels.gpkg")
    out = tmp_path / "built.gpkg"
    run_cli("classify", kampala_z19, "--labels", tmp_path / "labels.gpkg", "--field", "kind", "--out", out, check=0)
    c = json.loads((tmp_path / "built_manifest.json").read_text())["classify"]
    tiles = gpd.read_file(out, layer="tiles").set_index("tile_id").loc[grid.tile_id]
    clear = (coverage >= 0.2) | (coverage <= 0.05)                 # tiles that are plainly one or the other
    agree = ((tiles["class"].to_numpy() == "built") == (coverage >= 0.2))[clear].mean()
    print(f"classify on Kampala, built vs unbuilt from 20 labels: spatially cross-validated accuracy "
          f"{c['accuracy']:.3f}; on the {clear.sum()} tiles with coverage >= 0.2 or <= 0.05: {agree:.3f}")
    assert 0 <= c["accuracy"] <= 1 and c["labels"] == 20
    assert agree > 0.7


@pytest.mark.parametrize("case", ["two labels", "off the raster", "measurement", "no field"])
def test_bad_labels_are_refused_before_any_work(case, city, tmp_path):
    rng = np.random.default_rng(1)
    rows, cols = rng.integers(0, 16, 9), rng.integers(0, 16, 9)
    points = centre_points(city.transform, rows, cols)
    kinds = ["a", "a", "a", "b", "b", "b", "c", "c", "c"]
    if case == "two labels":
        kinds[-1] = "a"
    if case == "off the raster":
        points[0] = Point(points[0].x + 5000, points[0].y)
    frame = gpd.GeoDataFrame({"kind": kinds, "height": np.arange(9) * 1.37}, geometry=points, crs=city.crs)
    if case == "measurement":
        frame = gpd.GeoDataFrame({"kind": kinds * 300, "height": np.arange(2700) * 1.37},
                                 geometry=points * 300, crs=city.crs)
    frame.to_file(tmp_path / "labels.gpkg")
    field = {"measurement": "height", "no field": "klass"}.get(case, "kind")
    proc = run_cli("classify", city.raster, "--labels", tmp_path / "labels.gpkg", "--field", field, "--out",
                   tmp_path / "c.gpkg", "--progress", "json")
    words = {"two labels": ("--labels", "fewer than 3 labels"), "off the raster": ("--labels", "no valid tile"),
             "measurement": ("--field", "numeric with 2700 distinct values"), "no field": ("--field", "klass")}[case]
    assert proc.returncode == 2 and all(w in proc.stderr for w in words), proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.gpkg"]
    assert {e["stage"] for e in work_events(proc.stdout)} <= {"open", "scan"}     # no features were computed


def test_finetune_tunes_the_last_block_in_each_fold_and_the_model_file_keeps_it(city, city_labels, tmp_path):
    """--finetune on the synthetic city (5 labels per zone, 2 folds to keep it short: each fold tunes a CNN): the
    progress stages, the accuracy, the classifier file holding the tuned network, and applying it to the raster
    giving the run's classes. The comparison with and without --finetune over several label draws is
    tests/bench/eval_finetune.py's (README, Analyses)."""
    from engine.clustering.deepcluster import trunk_stages
    from engine.features.extract import FeatureExtractor

    out = tmp_path / "tuned.gpkg"
    proc = run_cli("classify", city.raster, "--labels", city_labels, "--field", "zone", "--finetune", "--folds", 2,
                   "--out", out, "--progress", "json", check=0)
    stages = [e["stage"] for e in work_events(proc.stdout)]
    assert {"validate", "tune", "features", "classify"} <= set(stages)
    assert stages.index("tune") > stages.index("validate") and stages.index("features") > stages.index("tune")
    c = json.loads((tmp_path / "tuned_manifest.json").read_text())["classify"]
    tiles = gpd.read_file(out, layer="tiles")
    truth = np.array(ZONES)[city.zone_of_tiles(TILE)[tiles.row, tiles.col]]
    every = float((tiles["class"].to_numpy() == truth).mean())
    print(f"classify --finetune on the synthetic city, 5 labels per zone: spatially cross-validated accuracy "
          f"{c['accuracy']:.3f} (2 folds); all {len(tiles)} tiles against the zones {every:.3f}; losses "
          f"{c['tuning']['losses']}")
    assert c["finetune"] and c["folds"] == 2 and c["accuracy"] >= 0.8 and every >= 0.85
    raw = torch.load(tmp_path / "tuned_classifier.pt", weights_only=True)
    imagenet = FeatureExtractor("efficientnet_lite0", "imagenet", "cpu").model
    _, blocks = trunk_stages(imagenet)
    last = {id(p) for m in blocks[-1] for p in m.parameters()}
    names = {n for n, p in imagenet.named_parameters() if id(p) in last}
    base = imagenet.state_dict()
    changed = {k for k, v in raw["network"].items() if not torch.equal(v, base[k])}
    assert changed and changed <= names
    applied = run(ClassifyParams(raster=str(city.raster), out=str(tmp_path / "again.gpkg"),
                                 model=str(tmp_path / "tuned_classifier.pt")))
    assert applied["classify"]["finetune"]
    assert (gpd.read_file(tmp_path / "again.gpkg", layer="tiles")["class"] == tiles["class"]).mean() >= 0.98


def test_a_classifier_replaced_under_the_same_name_is_not_served_stale_features(city, city_labels, tmp_path):
    """The feature cache knows a classifier's CNN by the file's content: a fine-tuned classifier saved over an
    untuned one at the same path gets its own features, not the cached ones of the file it replaced."""
    import shutil

    plain = tmp_path / "plain.gpkg"
    run(ClassifyParams(raster=str(city.raster), out=str(plain), labels=str(city_labels), field="zone", folds=2))
    tuned = tmp_path / "tuned.gpkg"
    run(ClassifyParams(raster=str(city.raster), out=str(tuned), labels=str(city_labels), field="zone", folds=2,
                       finetune=True))
    shared, cache = tmp_path / "shared.pt", tmp_path / "cache"

    def apply(name: str, model=shared, cache_dir=cache) -> np.ndarray:
        out = tmp_path / f"{name}.gpkg"
        run(ClassifyParams(raster=str(city.raster), out=str(out), model=str(model), cache_dir=str(cache_dir)))
        return gpd.read_file(out, layer="tiles")["prob"].to_numpy()

    shutil.copy2(tmp_path / "plain_classifier.pt", shared)
    first = apply("first")
    shutil.copy2(tmp_path / "tuned_classifier.pt", shared)
    second = apply("second")
    own = apply("own", tmp_path / "tuned_classifier.pt", tmp_path / "own_cache")
    assert not np.allclose(first, own, atol=1e-3)
    assert np.allclose(second, own, atol=1e-3)
