"""The Processing provider in real QGIS: processing.run, loading and styling, cancel, errors, Shapefile
export, and qgis_process running the algorithm from the packaged plugin zip."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from qgis.core import (QgsApplication, QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsFeature,
                       QgsGeometry, QgsPointXY, QgsProcessingAlgRunnerTask, QgsProcessingContext,
                       QgsProcessingException, QgsProcessingFeedback, QgsProcessingOutputLayerDefinition,
                       QgsProcessingUtils, QgsProject, QgsRasterLayer, QgsRectangle, QgsTask, QgsVectorLayer)

from .helpers import fresh_qgis_env, run_in_own_group, run_task

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "resources" / "sample" / "kampala_ug_oam_rgb_z19_epsg3857.tif"
TILE_FIELDS = ["tile_id", "row", "col", "cluster", "clust_dist", "pc1", "pc2", "valid_frac"]


@pytest.fixture(scope="module")
def engine_setup(tmp_path_factory):
    """The engine runs in this test venv, with a feature cache of its own."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("URBANFORM_ENGINE_PYTHON", sys.executable)
        mp.setenv("URBANFORM_CACHE", str(tmp_path_factory.mktemp("feature_cache")))
        yield


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    """A copy of the sample raster: QGIS writes a .aux.xml with statistics next to a raster it opens."""
    copy = tmp_path_factory.mktemp("input") / SAMPLE.name
    shutil.copyfile(SAMPLE, copy)
    return copy


@pytest.fixture(scope="module")
def alg(urbanform, qgis_processing, engine_setup, sample):
    """The provider registered in QGIS's Processing registry; yields the modules under test."""
    from urbanform.plugin.processing import base, cluster, export
    from urbanform.plugin.provider import UrbanFormProvider
    from urbanform.plugin.requests import BACKBONES

    registry = QgsApplication.processingRegistry()
    provider = UrbanFormProvider()
    assert registry.addProvider(provider), "another provider with id urbanform is registered"
    params = {"INPUT": str(sample), "K": 4, "BACKBONE": BACKBONES.index("resnet18"),
              "WEIGHTS": cluster.WEIGHT_CHOICES.index("none")}
    yield SimpleNamespace(base=base, cluster=cluster, export=export, params=params, backbones=BACKBONES)
    registry.removeProvider("urbanform")


def run(algorithm, params: dict, feedback=None) -> dict:
    import processing

    return processing.run(algorithm, params, feedback=feedback or QgsProcessingFeedback())


def tiles_of(gpkg) -> QgsVectorLayer:
    layer = QgsVectorLayer(f"{gpkg}|layername=tiles", "tiles", "ogr")
    assert layer.isValid(), gpkg
    return layer


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def cluster_run(alg, tmp_path_factory) -> dict:
    """One cluster run of the sample (K=4, random resnet18), shared by the tests that read its outputs."""
    out = tmp_path_factory.mktemp("run") / "kampala.gpkg"
    return run("urbanform:cluster", {**alg.params, "OUTPUT": str(out)})


# -- the algorithms -----------------------------------------------------------------------------
def test_provider_lists_the_algorithms_with_their_help(alg):
    provider = QgsApplication.processingRegistry().providerById("urbanform")
    assert sorted(a.id() for a in provider.algorithms()) == [
        "urbanform:change", "urbanform:classify", "urbanform:cluster", "urbanform:deepcluster",
        "urbanform:evaluatesegmentation",
        "urbanform:export", "urbanform:exportshapefile", "urbanform:predict", "urbanform:report", "urbanform:segment",
        "urbanform:setupengine", "urbanform:similar", "urbanform:statistics", "urbanform:sweep",
        "urbanform:trainsegmentation"]
    for algorithm in provider.algorithms():
        assert algorithm.group() == "Urban form" and algorithm.groupId() == "urbanform"
        help_text = algorithm.shortHelpString()
        described = list(algorithm.parameterDefinitions()) + list(algorithm.outputDefinitions())
        for item in described:
            assert item.description().split(" (")[0] in help_text, (algorithm.id(), item.name())
    heavy = [m for m in ("torch", "rasterio", "geopandas", "sklearn", "engine") if m in sys.modules]
    assert heavy == [], f"loading the algorithms imported {heavy}"
    cluster = QgsApplication.processingRegistry().algorithmById("urbanform:cluster")
    assert cluster.displayName() == "Cluster raster tiles"
    assert cluster.parameterDefinition("OUTPUT").defaultFileExtension() == "gpkg"
    assert cluster.createInstance() is not cluster


def test_cluster_writes_tiles_raster_and_manifest(cluster_run):
    out = Path(cluster_run["OUTPUT"])
    assert out.is_file() and out.suffix == ".gpkg"
    assert Path(cluster_run["CLUSTER_RASTER"]).is_file() and Path(cluster_run["MANIFEST"]).is_file()
    tiles = tiles_of(out)
    try:
        assert tiles.featureCount() == 96
        assert [f.name() for f in tiles.fields() if f.name() != "fid"] == TILE_FIELDS
        assert {f["cluster"] for f in tiles.getFeatures()} == {0, 1, 2, 3}
    finally:
        del tiles


def test_temporary_output_runs_in_a_worker_thread_and_loads_the_styled_tiles(alg, qgis_new_project):
    """As the algorithm dialog runs it: a QgsProcessingAlgRunnerTask, then the results are loaded on the main thread."""
    from processing.gui.Postprocessing import handleAlgorithmResults

    project = QgsProject.instance()
    context = QgsProcessingContext()
    context.setProject(project)
    feedback = QgsProcessingFeedback()
    algorithm = QgsApplication.processingRegistry().createAlgorithmById("urbanform:cluster")
    params = {**alg.params, "OUTPUT": QgsProcessingOutputLayerDefinition("TEMPORARY_OUTPUT", project)}
    task = QgsProcessingAlgRunnerTask(algorithm, params, context, feedback)
    executed = {}
    task.executed.connect(lambda ok, results: executed.update(ok=ok, results=results))
    assert run_task(task, 120) == QgsTask.Complete and executed["ok"]
    result = executed["results"]
    assert result["OUTPUT"].endswith(".gpkg") and Path(result["OUTPUT"]).is_file()
    assert handleAlgorithmResults(algorithm, context, feedback, True, params)
    layers = list(project.mapLayers().values())
    try:
        assert len(layers) == 1
        tiles = layers[0]
        assert "layername=tiles" in tiles.source() and tiles.featureCount() == 96
        renderer = tiles.renderer()
        assert renderer.type() == "categorizedSymbol" and renderer.classAttribute() == "cluster"
        raster = QgsRasterLayer(result["CLUSTER_RASTER"], "clusters")
        palette = {int(c.value): c.color.name() for c in raster.renderer().classes() if c.value < 4}
        assert {c.value(): c.symbol().color().name() for c in renderer.categories()} == palette
        assert len(palette) == 4 and len(set(palette.values())) == 4
    finally:
        del layers, tiles, renderer, raster
        project.removeAllMapLayers()


def test_extent_in_another_crs_limits_the_tiles(alg, tmp_path):
    raster = QgsRasterLayer(alg.params["INPUT"], "sample")
    full = raster.extent()
    left_half = QgsRectangle(full.xMinimum(), full.yMinimum(), full.center().x(), full.yMaximum())
    to_wgs84 = QgsCoordinateTransform(raster.crs(), QgsCoordinateReferenceSystem("EPSG:4326"), QgsProject.instance())
    r = to_wgs84.transformBoundingBox(left_half)
    del raster
    extent = f"{r.xMinimum()!r},{r.xMaximum()!r},{r.yMinimum()!r},{r.yMaximum()!r} [EPSG:4326]"
    result = run("urbanform:cluster", {**alg.params, "K": 3, "EXTENT": extent, "OUTPUT": str(tmp_path / "e.gpkg")})
    tiles = tiles_of(result["OUTPUT"])
    try:
        assert 0 < tiles.featureCount() < 96
        grown = left_half.buffered(1e-3)
        assert all(grown.contains(f.geometry().centroid().asPoint()) for f in tiles.getFeatures())
    finally:
        del tiles


def test_area_polygons_limit_the_tiles_and_their_copy_is_removed(alg, tmp_path):
    raster = QgsRasterLayer(alg.params["INPUT"], "sample")
    full = raster.extent()
    del raster
    area = QgsVectorLayer("Polygon?crs=EPSG:3857", "area", "memory")
    feature = QgsFeature()
    corner = QgsPointXY(full.xMaximum(), full.yMinimum())
    triangle = [corner, QgsPointXY(full.xMinimum(), full.yMinimum()), QgsPointXY(full.xMaximum(), full.yMaximum())]
    feature.setGeometry(QgsGeometry.fromPolygonXY([triangle + [corner]]))
    area.dataProvider().addFeatures([feature])
    before = set(Path(QgsProcessingUtils.tempFolder()).glob("urbanform_run_*"))
    result = run("urbanform:cluster", {**alg.params, "K": 3, "AREA": area, "OUTPUT": str(tmp_path / "a.gpkg")})
    tiles = tiles_of(result["OUTPUT"])
    try:
        assert 0 < tiles.featureCount() < 96
        polygon = feature.geometry()
        assert all(polygon.contains(f.geometry().centroid()) for f in tiles.getFeatures())
    finally:
        del tiles, area
    assert set(Path(QgsProcessingUtils.tempFolder()).glob("urbanform_run_*")) == before


def test_existing_output_is_replaced(alg, tmp_path):
    out = tmp_path / "again.gpkg"
    out.write_text("an old file in the way")
    result = run("urbanform:cluster", {**alg.params, "K": 3, "OUTPUT": str(out)})
    tiles = tiles_of(result["OUTPUT"])
    try:
        assert tiles.featureCount() == 96 and {f["cluster"] for f in tiles.getFeatures()} == {0, 1, 2}
    finally:
        del tiles


def test_model_chains_cluster_and_shapefile_export(alg, tmp_path):
    """A model (as built in the model builder): cluster to a temporary GeoPackage, then export its tiles."""
    from qgis.core import (QgsProcessingModelAlgorithm, QgsProcessingModelChildAlgorithm,
                           QgsProcessingModelChildParameterSource as Source, QgsProcessingModelOutput,
                           QgsProcessingModelParameter, QgsProcessingParameterRasterLayer)

    model = QgsProcessingModelAlgorithm("tiles to shapefile", "tests")
    model.addModelParameter(QgsProcessingParameterRasterLayer("raster", "Raster"),
                            QgsProcessingModelParameter("raster"))
    cluster = QgsProcessingModelChildAlgorithm("urbanform:cluster")
    cluster.setChildId("cluster")
    cluster.addParameterSources("INPUT", [Source.fromModelParameter("raster")])
    for name, value in alg.params.items():
        if name != "INPUT":
            cluster.addParameterSources(name, [Source.fromStaticValue(value)])
    model.addChildAlgorithm(cluster)
    export = QgsProcessingModelChildAlgorithm("urbanform:exportshapefile")
    export.setChildId("export")
    export.addParameterSources("INPUT", [Source.fromChildOutput("cluster", "OUTPUT")])
    output = QgsProcessingModelOutput("shp", "Shapefile")
    output.setChildId("export")
    output.setChildOutputName("OUTPUT")
    export.setModelOutputs({"shp": output})
    model.addChildAlgorithm(export)
    model.updateDestinationParameters()
    shp = tmp_path / "model.shp"
    result = run(model, {"raster": alg.params["INPUT"], "export:shp": str(shp)})
    assert Path(result["export:shp"]) == shp
    back = QgsVectorLayer(str(shp), "back", "ogr")
    try:
        assert back.featureCount() == 96 and "cluster" in back.fields().names()
    finally:
        del back


# -- DeepCluster, sweep and predict (issue 4) ---------------------------------------------------
def test_predict_assigns_the_tiles_to_a_saved_cluster_model(alg, cluster_run, tmp_path):
    """A model saved by a cluster run, applied to the same raster, gives back that run's clusters."""
    model = Path(cluster_run["OUTPUT"]).with_name("kampala_model.pt")
    assert model.is_file()
    result = run("urbanform:predict", {"MODEL": str(model), "INPUT": alg.params["INPUT"],
                                       "OUTPUT": str(tmp_path / "p.gpkg")})
    assert Path(result["CLUSTER_RASTER"]).is_file() and Path(result["MANIFEST"]).is_file()
    assert not (tmp_path / "p_model.pt").exists()
    predicted, original = tiles_of(result["OUTPUT"]), tiles_of(cluster_run["OUTPUT"])
    try:
        assert predicted.featureCount() == 96
        mine = {f["tile_id"]: f["cluster"] for f in predicted.getFeatures()}
        theirs = {f["tile_id"]: f["cluster"] for f in original.getFeatures()}
        same = sum(mine[t] == theirs[t] for t in theirs)
        assert same >= 0.95 * len(theirs), f"{same} of {len(theirs)} tiles kept their cluster"
    finally:
        del predicted, original
    with pytest.raises(QgsProcessingException, match="does not exist"):
        run("urbanform:predict", {"MODEL": str(tmp_path / "none_model.pt"), "INPUT": alg.params["INPUT"],
                                  "OUTPUT": str(tmp_path / "q.gpkg")})


def test_further_rasters_make_one_study_with_the_uncut_rasters_clusters(alg, cluster_run, sample, tmp_path):
    """The sample cut into three strips (GDAL in QGIS), given as INPUT and 'Further rasters (one study)': the
    mosaic is the uncut raster, so cluster gives the cluster run's tiles and clusters; predict takes them too."""
    from osgeo import gdal

    strips = []
    for i, (c0, c1) in enumerate(((0, 300), (300, 520), (520, 768))):
        strips.append(str(tmp_path / f"strip_{i}.tif"))
        gdal.Translate(strips[-1], str(sample), srcWin=[c0, 0, c1 - c0, 512])
    assert alg.cluster.ClusterAlgorithm().shortHelpString().count("Further rasters (one study)") == 1
    result = run("urbanform:cluster", {**alg.params, "INPUT": strips[0], "MORE_RASTERS": strips[1:],
                                       "OUTPUT": str(tmp_path / "study.gpkg")})
    study, original = tiles_of(result["OUTPUT"]), tiles_of(cluster_run["OUTPUT"])
    try:
        assert study.featureCount() == original.featureCount() == 96
        assert {f["tile_id"]: f["cluster"] for f in study.getFeatures()} == \
            {f["tile_id"]: f["cluster"] for f in original.getFeatures()}
    finally:
        del study, original
    model = Path(cluster_run["OUTPUT"]).with_name("kampala_model.pt")
    result = run("urbanform:predict", {"MODEL": str(model), "INPUT": strips[0], "MORE_RASTERS": strips[1:],
                                       "OUTPUT": str(tmp_path / "p.gpkg")})
    assert tiles_of(result["OUTPUT"]).featureCount() == 96


# -- the analyses (issue 15) ------------------------------------------------------------------------
def test_report_writes_a_self_contained_html_of_a_cluster_run(alg, cluster_run, tmp_path):
    out = tmp_path / "report.html"
    result = run("urbanform:report", {"RUN": cluster_run["OUTPUT"], "OUTPUT": str(out), "EXAMPLES": 2})
    assert result["OUTPUT"] == result["HTML"] == str(out)
    text = out.read_text(encoding="utf-8")
    assert text.count("<figcaption>tile ") == 4 * 2 * 2 and "http" not in text
    with pytest.raises(QgsProcessingException, match="Run GeoPackage: .* does not exist"):
        run("urbanform:report", {"RUN": str(tmp_path / "none.gpkg"), "OUTPUT": str(tmp_path / "n.html")})
    assert not (tmp_path / "n.html").exists()


def test_change_assigns_both_dates_and_styles_the_change_layer(alg, cluster_run, tmp_path):
    from urbanform.plugin.processing.styling import QmlStyler

    from qgis.core import QgsRasterLayer

    model = Path(cluster_run["OUTPUT"]).with_name("kampala_model.pt")
    e = QgsRasterLayer(alg.params["INPUT"], "r").extent()        # the west half: the tool's --extent, declared
    west = f"{e.xMinimum()},{e.center().x()},{e.yMinimum()},{e.yMaximum()} [EPSG:3857]"
    result = run("urbanform:change", {"MODEL": str(model), "RASTER_BEFORE": alg.params["INPUT"],
                                      "RASTER_AFTER": alg.params["INPUT"], "EXTENT": west, "DEVICE": 1,
                                      "PRECISION": 1, "BATCH_SIZE": 16, "OUTPUT": str(tmp_path / "c.gpkg")})
    assert all(Path(result[k]).is_file() for k in ("TRANSITIONS", "HEATMAP", "ALLUVIAL", "MANIFEST"))
    manifest = json.loads(Path(result["MANIFEST"]).read_text())
    assert manifest["parameters"]["device"] == "cpu" and manifest["parameters"]["batch_size"] == 16
    tiles = tiles_of(result["OUTPUT"])
    try:
        assert tiles.featureCount() == 48 and {f["changed"] for f in tiles.getFeatures()} == {0}
        QmlStyler(tmp_path / "c_change.qml").postProcessLayer(tiles, None, None)
        assert tiles.renderer().type() == "graduatedSymbol" and tiles.renderer().classAttribute() == "chg_score"
    finally:
        del tiles


def test_similar_takes_query_places_from_a_layer_in_another_crs(alg, cluster_run, tmp_path):
    tiles = tiles_of(cluster_run["OUTPUT"])
    try:
        feature = next(f for f in tiles.getFeatures() if f["tile_id"] == 40)
        centre = feature.geometry().centroid().asPoint()
        to_wgs84 = QgsCoordinateTransform(tiles.crs(), QgsCoordinateReferenceSystem("EPSG:4326"), QgsProject.instance())
    finally:
        del tiles
    places = QgsVectorLayer("Point?crs=EPSG:4326", "places", "memory")
    point = QgsFeature()
    point.setGeometry(QgsGeometry.fromPointXY(to_wgs84.transform(centre)))
    places.dataProvider().addFeatures([point])
    result = run("urbanform:similar", {"INPUT": alg.params["INPUT"], "QUERY": places, "TOP": 5,
                                       "OUTPUT": str(tmp_path / "s.gpkg")})
    assert Path(result["SIMILARITY"]).is_file() and Path(result["TOP"]).read_text().count("\n") == 6
    similar = tiles_of(result["OUTPUT"])
    try:
        assert [f["tile_id"] for f in similar.getFeatures() if f["query"] == 1] == [40]
    finally:
        del similar
    with pytest.raises(QgsProcessingException, match="Query places"):
        run("urbanform:similar", {"INPUT": alg.params["INPUT"], "OUTPUT": str(tmp_path / "n.gpkg")})


def test_classify_learns_from_a_labelled_layer_and_applies_the_saved_classifier(alg, cluster_run, tmp_path):
    tiles = tiles_of(cluster_run["OUTPUT"])
    try:
        centres = {f["tile_id"]: (f["cluster"], f.geometry().centroid().asPoint()) for f in tiles.getFeatures()}
        crs = tiles.crs().authid()
    finally:
        del tiles
    labels = QgsVectorLayer(f"Point?crs={crs}&field=kind:string", "labels", "memory")
    features = []
    for cluster in (0, 1):                  # four labelled tiles of two clusters: classes the features can tell
        for _, (c, point) in sorted(centres.items())[:60]:
            if c == cluster and sum(f["kind"] == f"c{cluster}" for f in features) < 4:
                feature = QgsFeature(labels.fields())
                feature.setGeometry(QgsGeometry.fromPointXY(point))
                feature["kind"] = f"c{cluster}"
                features.append(feature)
    labels.dataProvider().addFeatures(features)
    result = run("urbanform:classify", {"INPUT": alg.params["INPUT"], "LABELS": labels, "FIELD": "kind", "FOLDS": 2,
                                        "OUTPUT": str(tmp_path / "c.gpkg")})
    assert all(Path(result[k]).is_file() for k in ("CLASS_RASTER", "SCORES", "CONFUSION", "CLASSIFIER", "MANIFEST"))
    classified = tiles_of(result["OUTPUT"])
    try:
        assert classified.featureCount() == 96 and {f["class"] for f in classified.getFeatures()} <= {"c0", "c1"}
    finally:
        del classified
    applied = run("urbanform:classify", {"INPUT": alg.params["INPUT"], "MODEL": result["CLASSIFIER"],
                                         "OUTPUT": str(tmp_path / "a.gpkg")})
    assert Path(applied["CLASS_RASTER"]).is_file() and "SCORES" not in applied
    with pytest.raises(QgsProcessingException, match="Labelled places"):
        run("urbanform:classify", {"INPUT": alg.params["INPUT"], "OUTPUT": str(tmp_path / "n.gpkg")})


def test_sweep_writes_a_layer_per_tile_size_and_the_metrics(alg, tmp_path, qgis_new_project):
    from processing.gui.Postprocessing import handleAlgorithmResults

    project = QgsProject.instance()
    context = QgsProcessingContext()
    context.setProject(project)
    feedback = QgsProcessingFeedback()
    algorithm = QgsApplication.processingRegistry().createAlgorithmById("urbanform:sweep")
    params = {"INPUT": alg.params["INPUT"], "K": "2..3", "TILE_SIZES": "64,128", "BACKBONE": alg.params["BACKBONE"],
              "WEIGHTS": alg.params["WEIGHTS"], "OUTPUT": str(tmp_path / "sweep.gpkg")}
    task = QgsProcessingAlgRunnerTask(algorithm, params, context, feedback)
    executed = {}
    task.executed.connect(lambda ok, results: executed.update(ok=ok, results=results))
    assert run_task(task, 300) == QgsTask.Complete and executed["ok"]
    result = executed["results"]
    assert result["OUTPUT"] == str(tmp_path / "sweep.gpkg") and Path(result["METRICS"]).name == "sweep_metrics.csv"
    assert Path(result["METRICS"]).is_file() and Path(result["MANIFEST"]).is_file()
    assert handleAlgorithmResults(algorithm, context, feedback, True, params)
    layers = sorted(project.mapLayers().values(), key=lambda layer: layer.featureCount(), reverse=True)
    try:
        assert [layer.name() for layer in layers] == ["sweep tiles_64px", "sweep tiles_128px"]
        assert [layer.featureCount() for layer in layers] == [96, 24]
        assert all(layer.renderer().classAttribute() == "k3" for layer in layers)   # styled on the largest K
    finally:
        del layers
        project.removeAllMapLayers()
    with pytest.raises(QgsProcessingException, match="runs backwards"):
        run("urbanform:sweep", {**params, "K": "5..2", "OUTPUT": str(tmp_path / "bad.gpkg")})


def test_deepcluster_runs_the_engine_with_its_training_options(alg, tmp_path):
    """The engine accepts the DeepCluster command line (its own K check answers before any training)."""
    feedback = QgsProcessingFeedback()
    with pytest.raises(QgsProcessingException, match="larger than the number of valid tiles"):
        run("urbanform:deepcluster", {**alg.params, "K": 200, "EPOCHS": 2, "LR": 0.001,
                                      "OUTPUT": str(tmp_path / "dc.gpkg")}, feedback)
    assert files_in(tmp_path) == []
    algorithm = QgsApplication.processingRegistry().algorithmById("urbanform:deepcluster")
    assert algorithm.parameterDefinition("EPOCHS").minimum() == 1


# -- errors and cancel ------------------------------------------------------------------------
def test_engine_error_is_raised_and_nothing_is_written(alg, tmp_path):
    feedback = QgsProcessingFeedback()
    with pytest.raises(QgsProcessingException, match="larger than the number of valid tiles"):
        run("urbanform:cluster", {**alg.params, "K": 200, "OUTPUT": str(tmp_path / "bad.gpkg")}, feedback)
    assert files_in(tmp_path) == []


def test_bad_parameters_are_refused_before_the_engine_starts(alg, tmp_path, monkeypatch):
    monkeypatch.setenv("URBANFORM_ENGINE_PYTHON", "/nonexistent/python3")   # the engine would fail otherwise
    cases = {"smaller than the tile size": {"OVERLAP": 64}, "at least 16 px": {"TILE_SIZE": 8},
             "must end in .gpkg": {"OUTPUT": str(tmp_path / "tiles.shp")},
             "does not exist": {"OUTPUT": str(tmp_path / "missing" / "t.gpkg")},
             "Weights file.*nope.pth does not exist": {"WEIGHTS_FILE": str(tmp_path / "nope.pth")}}
    for expected, change in cases.items():
        params = {**alg.params, "OUTPUT": str(tmp_path / "t.gpkg"), **change}
        with pytest.raises(QgsProcessingException, match=expected):
            run("urbanform:cluster", params)
    assert files_in(tmp_path) == []


def test_raster_that_is_not_a_local_file_is_refused(alg, tmp_path):
    from osgeo import gdal

    gdal.Translate("/vsimem/urbanform_test.tif", str(SAMPLE))
    raster = QgsRasterLayer("/vsimem/urbanform_test.tif", "in memory")
    assert raster.isValid()
    try:
        with pytest.raises(QgsProcessingException, match="Save it to a GeoTIFF first"):
            run("urbanform:cluster", {**alg.params, "INPUT": raster, "OUTPUT": str(tmp_path / "m.gpkg")})
    finally:
        del raster
        gdal.Unlink("/vsimem/urbanform_test.tif")
    assert files_in(tmp_path) == []


def test_missing_engine_python_gives_the_fix(alg, tmp_path, monkeypatch):
    monkeypatch.setenv("URBANFORM_ENGINE_PYTHON", "/nonexistent/python3")
    with pytest.raises(QgsProcessingException, match="does not exist.*Set up engine"):
        run("urbanform:cluster", {**alg.params, "OUTPUT": str(tmp_path / "n.gpkg")})
    assert files_in(tmp_path) == []


def test_engine_check_runs_once_per_python(alg, cluster_run, monkeypatch):
    def fail(python):
        raise AssertionError("checked again")

    monkeypatch.setattr(alg.base.engine_env, "check", fail)
    assert alg.base.engine_python() == sys.executable


def test_cancel_stops_the_engine_and_leaves_no_file(alg, tmp_path):
    feedback = QgsProcessingFeedback()
    seen = []

    def on_progress(percent):
        seen.append(percent)
        if percent > 6.5:                 # past the start of the features stage
            feedback.cancel()

    feedback.progressChanged.connect(on_progress)
    params = {**alg.params, "K": 3, "BACKBONE": alg.backbones.index("resnet50"), "TILE_SIZE": 32, "BATCH_SIZE": 2,
              "OUTPUT": str(tmp_path / "c.gpkg")}      # slow enough to be cancelled mid-way
    result = run("urbanform:cluster", params, feedback)
    assert result == {}
    assert feedback.isCanceled() and max(seen) < 90
    assert files_in(tmp_path) == []


# -- Shapefile export ---------------------------------------------------------------------------
def test_export_tiles_to_shapefile(alg, cluster_run, tmp_path):
    shp = tmp_path / "tiles.shp"
    tiles = tiles_of(cluster_run["OUTPUT"])
    try:
        result = run("urbanform:exportshapefile", {"INPUT": tiles, "OUTPUT": str(shp)})
        assert result["OUTPUT"] == str(shp)
        assert files_in(tmp_path) == [f"tiles.{ext}" for ext in ("cpg", "dbf", "prj", "shp", "shx")]
        assert (tmp_path / "tiles.cpg").read_text().strip().upper() in ("UTF-8", "UTF8")
        back = QgsVectorLayer(str(shp), "back", "ogr")
        assert back.isValid() and back.featureCount() == tiles.featureCount() == 96
        assert [f.name() for f in back.fields()] == [f.name() for f in tiles.fields()]
        assert back.crs().authid() == tiles.crs().authid() == "EPSG:3857"
        assert sorted(f["tile_id"] for f in back.getFeatures()) == sorted(f["tile_id"] for f in tiles.getFeatures())
    finally:
        del tiles
        back = None


def test_export_refuses_long_field_names(alg, tmp_path):
    layer = QgsVectorLayer("Point?crs=EPSG:4326&field=ok:integer&field=population_density:double", "long", "memory")
    try:
        with pytest.raises(QgsProcessingException, match="population_density"):
            run("urbanform:exportshapefile", {"INPUT": layer, "OUTPUT": str(tmp_path / "long.shp")})
    finally:
        del layer
    assert files_in(tmp_path) == []


# -- qgis_process with the packaged plugin ---------------------------------------------------------
def test_qgis_process_runs_cluster_from_the_packaged_zip(alg, tmp_path):
    subprocess.run(["make", "-s", "package"], cwd=REPO, check=True, capture_output=True, timeout=120)
    zips = sorted((REPO / "dist").glob("urbanform-*.zip"))
    assert zips, "make package wrote no zip"
    with zipfile.ZipFile(zips[-1]) as zf:
        zf.extractall(tmp_path / "plugins")
    assert (tmp_path / "plugins" / "urbanform" / "plugin" / "processing" / "cluster.py").is_file()
    (tmp_path / "home").mkdir()
    env = fresh_qgis_env(tmp_path / "home", QGIS_PLUGINPATH=tmp_path / "plugins", QT_QPA_PLATFORM="offscreen",
                         URBANFORM_ENGINE_PYTHON=sys.executable, PYTHONPATH=sysconfig.get_paths()["purelib"])
    out = tmp_path / "qp.gpkg"
    enable = qgis_process(["plugins", "enable", "urbanform"], env, tmp_path)
    assert enable.returncode == 0, enable.stdout + enable.stderr
    profile = tmp_path / "home" / ".local" / "share" / "QGIS" / "QGIS3" / "profiles" / "default"
    assert "urbanform=true" in (profile / "QGIS" / "QGIS3.ini").read_text()     # the fresh profile was used
    p = alg.params
    proc = qgis_process(["run", "urbanform:cluster", "--", f"INPUT={p['INPUT']}", "K=3", f"WEIGHTS={p['WEIGHTS']}",
                         f"BACKBONE={p['BACKBONE']}", f"OUTPUT={out}"], env, tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert out.is_file() and out.with_name("qp_clusters.tif").is_file()
    tiles = tiles_of(out)
    try:
        assert tiles.featureCount() == 96
    finally:
        del tiles


def qgis_process(args: list[str], env: dict, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run qgis_process.bin (the `qgis_process` wrapper script is broken here) in its own process group."""
    code, stdout, stderr, timed_out = run_in_own_group(["qgis_process.bin", *args], env, timeout, cwd=cwd)
    if timed_out:
        pytest.fail(f"qgis_process {' '.join(args[:2])} did not finish in {timeout} s:\n{stdout[-2000:]}")
    return subprocess.CompletedProcess(["qgis_process.bin", *args], code, stdout, stderr)
