"""Urban-form statistics in the plugin (issue 5), in real QGIS with the real engine subprocess.

Requests (argv, problems, outputs); the dock's building, road and population
pickers (geometry filters, the arguments they add, a memory layer written to a
temporary GeoPackage and removed after the run, remembered between docks); the
Processing algorithms ``urbanform:statistics`` and ``urbanform:export``; and
an end-to-end run on the Kampala sample with its OSM buildings that adds the
``clusters`` table and opens the profile plot, then statistics again through
Processing and a Shapefile export.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import pytest
from qgis.core import (
    QgsApplication,
    QgsFeature,
    QgsFeatureRequest,
    QgsGeometry,
    QgsPointXY,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProject,
    QgsRectangle,
    QgsVectorLayer,
)

from .helpers import BUILDINGS, SAMPLE, clean_settings, engine_here, make_dock, sample_layers, set_params, wait_for

__all__ = ["clean_settings", "engine_here", "make_dock", "sample_layers"]       # fixtures used here
REPO = Path(__file__).resolve().parents[2]


@lru_cache(maxsize=None)
def engine_help(*tool: str) -> str | None:
    """``python -m engine TOOL --help`` as the engine answers it (None when it has no such tool or option yet)."""
    proc = subprocess.run([sys.executable, "-m", "engine", *tool, "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    return proc.stdout if proc.returncode == 0 else None


def need_engine_statistics() -> None:
    """Skip (with the reason) only when the engine side of issue 5 is not there: checked by a real --help call."""
    if engine_help("stats") is None:
        pytest.skip("the engine has no `stats` tool yet (python -m engine stats --help fails)")
    if engine_help("export") is None:
        pytest.skip("the engine has no `export` tool yet (python -m engine export --help fails)")
    if "--roads" not in (engine_help("cluster") or ""):
        pytest.skip("the engine's `cluster` has no --roads option yet (python -m engine cluster --help)")


@pytest.fixture
def request_mod(urbanform):
    from urbanform.plugin import requests as request

    return request


def memory_roads(name: str = "roads") -> QgsVectorLayer:
    """Two roads across the sample (EPSG:3857), one primary: a memory layer, which the engine cannot read."""
    layer = QgsVectorLayer("LineString?crs=EPSG:3857&field=highway:string", name, "memory")
    ext = QgsProject.instance().mapLayersByName("kampala")[0].extent() if QgsProject.instance().mapLayersByName(
        "kampala") else None
    x0, y0, x1, y1 = (ext.xMinimum(), ext.yMinimum(), ext.xMaximum(), ext.yMaximum()) if ext else (0, 0, 100, 100)
    features = []
    for highway, points in (("primary", [(x0, y0), (x1, y1)]), ("residential", [(x0, (y0 + y1) / 2),
                                                                               (x1, (y0 + y1) / 2)])):
        feature = QgsFeature(layer.fields())
        feature.setGeometry(QgsGeometry.fromPolylineXY([QgsPointXY(x, y) for x, y in points]))
        feature.setAttribute("highway", highway)
        features.append(feature)
    assert layer.dataProvider().addFeatures(features)[0]
    layer.updateExtents()
    return layer


@pytest.fixture
def roads_layer(sample_layers):
    layer = memory_roads()
    QgsProject.instance().addMapLayer(layer)
    layer_id = layer.id()
    del layer
    yield layer_id


@pytest.fixture
def population_layer(sample_layers):
    """People per cell (5 in each of 8 x 8 cells) over the sample, in EPSG:4326 and in GDAL's memory file system:
    a raster layer that is not a local file."""
    from osgeo import gdal, osr
    from qgis.core import QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsRasterLayer

    project = QgsProject.instance()
    raster = project.mapLayer(sample_layers.raster_id)
    wgs84 = QgsCoordinateReferenceSystem("EPSG:4326")
    ext = QgsCoordinateTransform(raster.crs(), wgs84, project).transformBoundingBox(raster.extent())
    path = "/vsimem/urbanform_test_population.tif"
    data = gdal.GetDriverByName("GTiff").Create(path, 8, 8, 1, gdal.GDT_Float32)
    data.SetGeoTransform((ext.xMinimum(), ext.width() / 8, 0, ext.yMaximum(), 0, -ext.height() / 8))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(4326)
    data.SetProjection(srs.ExportToWkt())
    data.GetRasterBand(1).Fill(5)
    data = None
    layer = QgsRasterLayer(path, "population")
    assert layer.isValid()
    project.addMapLayer(layer)
    layer_id = layer.id()
    del layer, raster
    yield layer_id
    project.removeMapLayer(layer_id)
    gdal.Unlink(path)


def combo_layers(combo) -> list:
    return [combo.layer(i).name() if combo.layer(i) is not None else None for i in range(combo.count())]


# -- requests (no engine run) ------------------------------------------------------------------------
def test_cluster_request_passes_the_statistics_layers(request_mod, tmp_path):
    roads, pop = tmp_path / "roads.gpkg", tmp_path / "pop.tif"
    roads.write_bytes(b"x")
    pop.write_bytes(b"x")
    plain = request_mod.ClusterRequest(raster=str(SAMPLE), out=str(tmp_path / "r.gpkg"))
    assert not plain.with_stats and plain.plots() == [] and "stats_csv" not in plain.outputs()
    assert not {"--buildings", "--roads", "--population"} & set(plain.argv())
    req = request_mod.ClusterRequest(raster=str(SAMPLE), out=str(tmp_path / "r.gpkg"), buildings=str(BUILDINGS),
                                     roads=str(roads), population=str(pop))
    assert req.problems() == []
    argv = req.argv()
    assert argv[argv.index("--buildings") + 1] == str(BUILDINGS) and argv[argv.index("--roads") + 1] == str(roads)
    assert argv[argv.index("--population") + 1] == str(pop)
    assert {p.name for p in req.outputs().values()} >= {"r_stats.csv", "r_profile.png", "r_boxes.png"}
    assert [p.name for p in req.plots()] == ["r_profile.png", "r_boxes.png"]
    missing = request_mod.ClusterRequest(raster=str(SAMPLE), out=str(tmp_path / "r.gpkg"),
                                         roads=str(tmp_path / "nope.gpkg"))
    assert any("road layer" in p.message and "not a local file" in p.message for p in missing.problems())


def test_stats_request_argv_and_problems(request_mod, tmp_path):
    run = tmp_path / "run.gpkg"
    req = request_mod.StatsRequest(run=str(run), buildings=str(BUILDINGS))
    assert any("does not exist" in p.message for p in req.problems())
    run.write_bytes(b"x")
    assert req.problems() == []
    assert req.argv() == ["stats", str(run), "--buildings", str(BUILDINGS), "--progress", "json"]
    assert {k: p.name for k, p in req.outputs().items()} == {
        "gpkg": "run.gpkg", "manifest": "run_manifest.json", "stats_csv": "run_stats.csv",
        "profile": "run_profile.png", "boxes": "run_boxes.png"}
    full = request_mod.StatsRequest(run=str(run), roads=str(BUILDINGS), population=str(SAMPLE), nir_band=4,
                                    road_field="fclass", overwrite=True)
    assert full.argv() == ["stats", str(run), "--roads", str(BUILDINGS), "--road-field", "fclass", "--population",
                           str(SAMPLE), "--nir-band", "4", "--overwrite", "--progress", "json"]   # declared order
    assert any("at least one" in p.message for p in request_mod.StatsRequest(run=str(run)).problems())

    def found(req):
        return [(p.param, p.code) for p in req.problems()]

    assert found(request_mod.StatsRequest(run=str(SAMPLE), buildings=str(BUILDINGS))) == [("run", "bad_format")]
    assert found(request_mod.StatsRequest(run=str(run), nir_band=0, red_band=-1, buildings=str(BUILDINGS))) == [
        ("nir_band", "out_of_range"), ("red_band", "out_of_range")]
    (tmp_path / "run_stats.csv").write_text("stat,eta2\n")
    assert any("has statistics already" in p.message for p in req.problems())
    assert request_mod.StatsRequest(run=str(run), buildings=str(BUILDINGS), overwrite=True).problems() == []


def test_export_request_argv_and_problems(request_mod, tmp_path):
    run = tmp_path / "run.gpkg"
    run.write_bytes(b"x")
    req = request_mod.ExportRequest(run=str(run), out_dir=str(tmp_path / "shp"))
    assert req.problems() == []
    assert req.argv() == ["export", str(run), "--out", str(tmp_path / "shp")]          # shp: the declared default
    assert request_mod.ExportRequest(str(run), str(tmp_path), "csv", overwrite=True).argv() == [
        "export", str(run), "--format", "csv", "--out", str(tmp_path), "--overwrite"]
    kml = request_mod.ExportRequest(str(run), str(tmp_path), "kml").problems()
    assert [(p.param, p.code) for p in kml] == [("format", "bad_choice")]
    assert any("is a file" in p.message for p in request_mod.ExportRequest(str(run), str(run)).problems())
    assert any("does not exist" in p.message for p in request_mod.ExportRequest(str(run), str(tmp_path / "a" / "b")).problems())


# -- the dock ------------------------------------------------------------------------------------------
def test_pickers_filter_geometry_types_and_pass_the_layers(make_dock, sample_layers, roads_layer, tmp_path):
    dock = make_dock()
    set_params(dock, tmp_path / "s.gpkg")
    assert combo_layers(dock.buildingsCombo) == [None, "buildings"]          # polygons only
    assert combo_layers(dock.roadsCombo) == [None, "roads"]                  # lines only
    assert combo_layers(dock.populationCombo) == [None, "kampala"]           # rasters only
    assert all(c.allowEmptyLayer() and c.currentLayer() is None
               for c in (dock.buildingsCombo, dock.roadsCombo, dock.populationCombo))
    assert not {"--buildings", "--roads", "--population"} & set(dock.request().argv())
    project = QgsProject.instance()
    dock.buildingsCombo.setLayer(project.mapLayer(sample_layers.buildings_id))
    dock.roadsCombo.setLayer(project.mapLayer(roads_layer))
    argv = dock.request().argv()
    assert argv[argv.index("--buildings") + 1] == str(BUILDINGS)              # a local file goes as it is
    temp = Path(argv[argv.index("--roads") + 1])                              # a memory layer: a temporary file
    assert temp.suffix == ".gpkg" and not temp.exists() and "--population" not in argv
    assert all("not a local file" not in p.message for p in dock.problems())      # Run writes it first
    dock.modeCombo.setCurrentIndex(dock.modeCombo.findData("sweep"))
    argv = dock.request().argv()                                              # a sweep takes them too
    assert dock.statsGroup.isEnabled() and argv[0] == "sweep" and argv[argv.index("--buildings") + 1] == str(BUILDINGS)


def test_memory_layer_is_written_to_a_temporary_file_and_removed(make_dock, sample_layers, roads_layer,
                                                                  population_layer):
    from qgis.core import QgsRasterLayer
    from urbanform.plugin.ui import stats_inputs

    dock = make_dock()
    dock.roadsCombo.setLayer(QgsProject.instance().mapLayer(roads_layer))
    dock.populationCombo.setLayer(QgsProject.instance().mapLayer(population_layer))
    paths = stats_inputs.paths(dock)
    assert paths["buildings"] is None and paths["population"].endswith(".tif")
    temp = stats_inputs.TempLayers()
    assert temp.write(stats_inputs.layers(dock), paths) is None
    written = QgsVectorLayer(paths["roads"], "written", "ogr")
    assert written.isValid() and written.featureCount() == 2
    assert sorted(f["highway"] for f in written.getFeatures()) == ["primary", "residential"]
    assert written.crs().authid() == "EPSG:3857"
    population = QgsRasterLayer(paths["population"], "written")
    assert population.isValid() and population.crs().authid() == "EPSG:4326"
    assert (population.width(), population.height()) == (8, 8)
    assert population.dataProvider().sample(population.extent().center(), 1)[0] == 5
    del written, population
    temp.remove()
    assert not Path(paths["roads"]).exists() and not Path(paths["population"]).exists() and temp.files == []


def test_statistics_layers_are_remembered_between_docks(make_dock, sample_layers, roads_layer):
    dock = make_dock()
    dock.buildingsCombo.setLayer(QgsProject.instance().mapLayer(sample_layers.buildings_id))
    dock.roadsCombo.setLayer(QgsProject.instance().mapLayer(roads_layer))
    dock.save_settings()
    again = make_dock()
    assert again.buildingsCombo.currentLayer().id() == sample_layers.buildings_id
    assert again.roadsCombo.currentLayer().id() == roads_layer
    assert again.populationCombo.currentLayer() is None


# -- Processing -------------------------------------------------------------------------------------------
@pytest.fixture
def provider(urbanform, qgis_processing):
    from urbanform.plugin.provider import UrbanFormProvider

    registry = QgsApplication.processingRegistry()
    assert registry.addProvider(UrbanFormProvider())
    yield registry
    registry.removeProvider("urbanform")


def test_processing_lists_statistics_and_export(provider):
    statistics = provider.algorithmById("urbanform:statistics")
    export = provider.algorithmById("urbanform:export")
    assert statistics is not None and export is not None
    assert [p.name() for p in statistics.parameterDefinitions()] == ["RUN", "BUILDINGS", "ROADS", "POPULATION",
                                                                     "NIR_BAND", "ROAD_FIELD", "OVERWRITE", "DASK"]
    assert all(statistics.parameterDefinition(n).flags() & statistics.parameterDefinition(n).FlagOptional
               for n in ("BUILDINGS", "ROADS", "POPULATION"))
    assert [p.name() for p in export.parameterDefinitions()] == ["RUN", "FORMAT", "OUTPUT"]
    assert export.parameterDefinition("FORMAT").options()[0].startswith("ESRI Shapefile")


def test_statistics_refuses_a_run_without_layers_before_the_engine_starts(provider, tmp_path):
    import processing

    run = tmp_path / "run.gpkg"
    run.write_bytes(b"x")
    with pytest.raises(QgsProcessingException, match="at least one"):
        processing.run("urbanform:statistics", {"RUN": str(run)}, feedback=QgsProcessingFeedback())


# -- end to end (the engine's stats, export and cluster --roads) -------------------------------------------
def test_run_with_statistics_adds_the_clusters_table_and_processing_reruns_them(
        make_dock, sample_layers, roads_layer, population_layer, tmp_path, provider):
    need_engine_statistics()
    import processing

    dock = make_dock()
    out = tmp_path / "statrun.gpkg"
    set_params(dock, out)
    project = QgsProject.instance()
    dock.buildingsCombo.setLayer(project.mapLayer(sample_layers.buildings_id))
    dock.roadsCombo.setLayer(project.mapLayer(roads_layer))
    dock.populationCombo.setLayer(project.mapLayer(population_layer))
    temp, temp_pop = Path(dock.request().roads), Path(dock.request().population)
    assert temp_pop.suffix == ".tif"
    assert wait_for(lambda: dock.engine_python() is not None and dock.runButton.isEnabled(), 60), \
        dock.problemsLabel.text()
    ended = []
    dock.runFinished.connect(ended.append)
    assert dock.run() is True
    assert temp.is_file() and temp_pop.is_file()                             # written for the run ...
    assert wait_for(lambda: bool(ended), 300), dock.statusLabel.text()
    assert ended == [True], dock.statusLabel.text()
    assert not temp.exists() and not temp_pop.exists()                       # ... and removed after it
    group = project.layerTreeRoot().findGroup("statrun")
    # the clusters layer: right below the tiles, unchecked (it would hide them), in the tiles' colours
    assert [c.name() for c in group.children()] == ["statrun tiles", "statrun clusters", "statrun clusters (raster)"]
    assert [c.isVisible() for c in group.children()] == [True, False, False]
    tiles, table = group.children()[0].layer(), group.children()[1].layer()
    assert table.renderer().type() == "categorizedSymbol" and table.renderer().classAttribute() == "cluster"
    legend = [c.label() for c in tiles.renderer().categories()]
    assert [c.label() for c in table.renderer().categories()] == legend
    assert [c.symbol().color().name() for c in table.renderer().categories()] == \
        [c.symbol().color().name() for c in tiles.renderer().categories()]
    # the legend names each cluster by its profile: "3: dense, 12 bldg/tile, 85 m²"
    assert all(label.startswith(f"{c.value()}: ") and " bldg/tile, " in label and label.endswith(" m²")
               for c, label in zip(tiles.renderer().categories(), legend)), legend
    assert {label.split(": ")[1].split(",")[0] for label in legend} <= {"open", "sparse", "medium", "dense",
                                                                      "very dense"}, legend
    assert {"bldg_count", "road_len", "major_dist", "pop_dens"} <= set(tiles.fields().names())
    assert max(f["bldg_count"] for f in tiles.getFeatures()) > 0 and min(f["pop_dens"] for f in tiles.getFeatures()) > 0
    clusters = sorted(int(v) for v in tiles.uniqueValues(tiles.fields().indexOf("cluster")))
    assert table.featureCount() == len(clusters)
    del tiles, table, group
    dialog = dock.plots_dialog
    assert dialog is not None and dialog.isVisible() and "statistics statrun" in dialog.windowTitle()
    assert [dialog.tabs.tabText(i) for i in range(dialog.tabs.count())] == ["profile", "boxes"]
    del dialog

    # statistics again through Processing (buildings only): the layers of the run it shows are re-read and restyled
    result = processing.runAndLoadResults("urbanform:statistics", {
        "RUN": str(out), "BUILDINGS": sample_layers.buildings_id, "OVERWRITE": True},
        feedback=QgsProcessingFeedback())
    assert Path(result["STATS_CSV"]).is_file() and Path(result["PROFILE"]).is_file()
    tiles = project.layerTreeRoot().findGroup("statrun").children()[0].layer()
    assert "bldg_count" in tiles.fields().names() and len(list(tiles.getFeatures())) == 96
    assert tiles.renderer().classAttribute() == "cluster"
    del tiles
    # ... and where the project does not show the run, Processing loads the tiles styled and the clusters table
    project.removeMapLayers([layer.id() for layer in project.mapLayers().values() if "statrun" in layer.name()])
    processing.runAndLoadResults("urbanform:statistics", {
        "RUN": str(out), "ROADS": roads_layer, "OVERWRITE": True}, feedback=QgsProcessingFeedback())
    loaded = {layer.name(): layer for layer in project.mapLayers().values() if "statrun" in layer.name()}
    assert sorted(loaded) == ["statrun clusters", "statrun tiles"]
    assert loaded["statrun tiles"].renderer().type() == "categorizedSymbol"
    assert loaded["statrun clusters"].renderer().type() == "categorizedSymbol"
    nodes = {name: project.layerTreeRoot().findLayer(layer.id()) for name, layer in loaded.items()}
    siblings = nodes["statrun tiles"].parent().children()
    assert siblings[siblings.index(nodes["statrun tiles"]) + 1] is nodes["statrun clusters"]
    assert nodes["statrun tiles"].isVisible() and not nodes["statrun clusters"].isVisible()
    del nodes, siblings
    assert "road_len" in loaded["statrun tiles"].fields().names()
    assert loaded["statrun clusters"].featureCount() == len(clusters)
    del loaded
    # a memory copy of the sample footprints (OSM, with an invalid polygon) is copied for the engine as it is,
    # not stopped by Processing's validity check: the engine repairs it and says so
    buildings = project.mapLayer(sample_layers.buildings_id)
    copy = buildings.materialize(QgsFeatureRequest())
    assert not all(f.geometry().isGeosValid() for f in copy.getFeatures())
    project.addMapLayer(copy)
    result = processing.run("urbanform:statistics", {"RUN": str(out), "BUILDINGS": copy.id(), "OVERWRITE": True},
                            feedback=QgsProcessingFeedback())
    assert Path(result["STATS_CSV"]).is_file()
    project.removeMapLayer(copy.id())
    del copy, buildings


def test_export_of_a_run_the_plugin_loaded_writes_shapefiles_with_prj_and_cpg(urbanform, engine_here, provider,
                                                                                 qgis_new_project, tmp_path):
    """A cluster run with statistics, loaded by the plugin (which saves its style into the GeoPackage, as the
    dock does), exported through ``urbanform:export``: one Shapefile per layer, each with .prj and UTF-8 .cpg."""
    need_engine_statistics()
    from urbanform.plugin.layers.clusters import add_cluster_outputs, add_clusters_table
    from urbanform.plugin.requests import ClusterRequest

    req = ClusterRequest(raster=str(SAMPLE), out=str(tmp_path / "exp.gpkg"), k=3, backbone="resnet18",
                         weights="none", buildings=str(BUILDINGS))
    argv = req.argv()
    argv[argv.index("--progress") + 1] = "none"
    proc = subprocess.run([sys.executable, "-m", "engine", *argv], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    check_shapefiles(export_shp(req.out, tmp_path / "engine_run"))       # as the engine wrote it
    group, tiles, raster = add_cluster_outputs(req.outputs(), req.name)   # loaded: its style is saved in the gpkg
    assert add_clusters_table(req.out, req.name, group) is not None
    del group, tiles, raster
    shps = export_shp(req.out, tmp_path / "loaded_run")        # QGIS's layer_styles table is not exported
    assert not any("layer_styles" in p.name for p in shps)
    check_shapefiles(shps)
    QgsProject.instance().removeAllMapLayers()


def export_shp(run: str, folder: Path) -> list[Path]:
    import processing

    result = processing.run("urbanform:export", {"RUN": run, "FORMAT": 0, "OUTPUT": str(folder)},
                            feedback=QgsProcessingFeedback())
    assert result["OUTPUT"] == str(folder)
    return sorted(folder.glob("*.shp"))


def check_shapefiles(shps: list[Path]) -> None:
    """A Shapefile for tiles and clusters, each with .prj and a UTF-8 .cpg; the tiles keep their statistics."""
    assert {"tiles", "clusters"} <= {p.stem.rsplit("_", 1)[-1] for p in shps}, shps
    for shp in shps:
        assert shp.with_suffix(".prj").is_file(), shp
        assert shp.with_suffix(".cpg").read_text().strip().upper().replace("-", "") == "UTF8", shp
    exported = QgsVectorLayer(str([p for p in shps if p.stem.endswith("tiles")][0]), "exported", "ogr")
    assert exported.isValid() and exported.featureCount() == 96 and "bldg_count" in exported.fields().names()
    del exported


def test_toolbox_runs_twice_in_a_session_and_loads_styled_tiles_each_time(urbanform, engine_here, provider,
                                                                          qgis_new_project, tmp_path):
    """The layer details own (and delete) their post-processor: a second run must get a new styler, not the
    deleted one (this failed with "wrapped C/C++ object of type TilesStyler has been deleted")."""
    import processing

    raster = tmp_path / SAMPLE.name                  # a copy: QGIS writes statistics next to a raster it opens
    shutil.copyfile(SAMPLE, raster)
    for i in range(2):
        processing.runAndLoadResults("urbanform:cluster", {"INPUT": str(raster), "K": 3, "BACKBONE": 0, "WEIGHTS": 1,
                                                           "OUTPUT": str(tmp_path / f"t{i}.gpkg")},
                                     feedback=QgsProcessingFeedback())
    renderers = [layer.renderer().type() for layer in QgsProject.instance().mapLayers().values()]
    assert renderers == ["categorizedSymbol"] * 2
    QgsProject.instance().removeAllMapLayers()


def test_cluster_palette_has_no_red_or_orange_and_the_legend_reads_the_profile(urbanform, qgis_new_project):
    """The palette (engine/style.py, read by the plugin as a file) avoids the hues of red roofs; a tiles layer
    with building statistics gets legend labels with coverage words, buildings per tile and mean size."""
    from qgis.PyQt.QtGui import QColor

    from urbanform.plugin.layers.clusters import cluster_labels, engine_palette, palette_colors, style_tiles

    palette = engine_palette()
    assert len(palette) >= 12
    for color in map(QColor, palette):
        hue, sat = color.hslHueF() * 360, color.hslSaturationF()
        assert not (sat > 0.25 and (hue < 50 or hue > 330)), color.name()
    layer = QgsVectorLayer("Polygon?crs=EPSG:3857&field=cluster:integer&field=bldg_cov:double"
                           "&field=bldg_count:integer&field=bldg_mean:double", "t", "memory")
    rows = [(0, 0.02, 1, 40.0), (0, 0.04, 3, 60.0), (1, 0.44, 12, 85.4), (1, 0.4, 12, 84.6), (2, None, None, None)]
    features = []
    for i, (cluster, cov, count, mean) in enumerate(rows):
        f = QgsFeature(layer.fields())
        f.setAttributes([cluster, cov, count, mean])
        f.setGeometry(QgsGeometry.fromRect(QgsRectangle(i, 0, i + 1, 1)))
        features.append(f)
    assert layer.dataProvider().addFeatures(features)[0]
    assert cluster_labels(layer) == {0: "0: open, 2 bldg/tile, 50 m²", 1: "1: dense, 12 bldg/tile, 85 m²",
                                     2: "cluster 2"}
    legend = style_tiles(layer, palette_colors(range(3)))
    assert [c.label() for c in layer.renderer().categories()] == list(legend.values())
    categories = layer.renderer().categories()
    symbol = categories[0].symbol()
    outline = QColor(symbol.symbolLayer(0).strokeColor())
    assert outline.lightnessF() < QColor(palette[0]).lightnessF() / 2          # a dark outline
    plain = QgsVectorLayer("Polygon?crs=EPSG:3857&field=cluster:integer", "p", "memory")
    assert cluster_labels(plain) == {}
