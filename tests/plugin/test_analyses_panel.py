"""The dock's Analyses panel in real QGIS (pytest-qgis, offscreen) with the real engine: a report of a cluster run
(from the panel and from the dock's Report button), similar places and tile classes run through the panel with
their styled layers, and bad input marked on its widget before any run. Opening the report is routed through
``panel.open_report``, which the tests replace (no browser offscreen)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from qgis.core import (QgsCategorizedSymbolRenderer, QgsFeature, QgsGeometry, QgsGraduatedSymbolRenderer, QgsPointXY,
                       QgsProject, QgsVectorLayer)

from .helpers import REPO, SAMPLE, clean_settings, engine_here, make_dock, sample_layers, set_params, wait_for

__all__ = ["clean_settings", "engine_here", "make_dock", "sample_layers"]       # fixtures used here


@pytest.fixture(scope="module")
def cluster_run(tmp_path_factory) -> Path:
    """A small cluster run of the sample made with the engine's command line (K 3, 64 px tiles)."""
    folder = tmp_path_factory.mktemp("run")
    out = folder / "kampala_run.gpkg"
    env = {**os.environ, "URBANFORM_CACHE": str(folder / "cache")}
    subprocess.run([sys.executable, "-m", "engine", "cluster", str(SAMPLE), "--out", str(out), "--k", "3",
                    "--tile-size", "64px", "--backbone", "efficientnet_lite0"], cwd=REPO, env=env, check=True,
                   capture_output=True, timeout=300)
    return out


def analyses_dock(make_dock, analysis: str):
    dock = make_dock()
    dock.modeCombo.setCurrentIndex(dock.modeCombo.findData("analyses"))
    panel = dock.analyses
    panel.set_analysis(analysis)
    assert panel.isVisibleTo(dock) and not dock.kSpin.isVisibleTo(dock)
    assert wait_for(lambda: dock.engine_python() is not None, 60)
    return dock, panel


def opened_by(panel) -> list:
    opened = []
    panel.open_report = opened.append
    return opened


def test_report_of_a_cluster_run_is_written_in_the_background_and_opened(make_dock, sample_layers, cluster_run):
    dock, panel = analyses_dock(make_dock, "report")
    opened = opened_by(panel)
    panel.runFile.setFilePath(str(cluster_run))
    html = cluster_run.with_name("kampala_run_report.html")
    assert panel.reportOutFile.filePath() == str(html)           # next to the run, as the Report buttons write it
    assert (panel.examplesSpin.minimum(), panel.examplesSpin.maximum()) == (1, 64)     # the contract's range
    assert panel.problems() == [], panel.problems()
    ended = []
    panel.runFinished.connect(ended.append)
    assert dock.run(), panel.statusLabel.text()
    assert panel.is_running() and not panel.runButton.isEnabled() and panel.cancelButton.isEnabled()
    assert wait_for(lambda: bool(ended), 120), panel.statusLabel.text()
    assert ended == [True], panel.statusLabel.text()
    text = html.read_text(encoding="utf-8")
    assert "<html" in text.lower() and "data:image/png;base64," in text        # self-contained
    assert opened == [html] and panel.progressBar.value() == 100


def test_the_dock_offers_a_report_after_a_cluster_run(make_dock, sample_layers, tmp_path):
    dock = make_dock()
    opened = opened_by(dock.analyses)
    assert not dock.reportButton.isVisibleTo(dock)
    set_params(dock, tmp_path / "c.gpkg", k=3)
    ended = []
    dock.runFinished.connect(ended.append)
    assert wait_for(lambda: dock.runButton.isEnabled(), 60), dock.problemsLabel.text()
    assert dock.run()
    assert wait_for(lambda: bool(ended), 120) and ended == [True], dock.statusLabel.text()
    assert dock.reportButton.isVisibleTo(dock) and dock.reportButton.isEnabled()
    dock.reportButton.click()
    assert dock.analyses.is_running()
    assert wait_for(lambda: not dock.analyses.is_running(), 120), dock.statusLabel.text()
    html = tmp_path / "c_report.html"
    assert html.is_file() and opened == [html], dock.statusLabel.text()
    assert "Report written" in dock.statusLabel.text()


def test_similar_places_clicked_on_the_map_run_from_the_panel_and_load_graduated(make_dock, sample_layers, tmp_path,
                                                                                 qgis_iface):
    from qgis.PyQt.QtCore import Qt

    dock, panel = analyses_dock(make_dock, "similar")
    out = tmp_path / "like.gpkg"
    panel.queryTilesEdit.setText("3,10")
    panel.topSpin.setValue(5)
    panel.similarOutFile.setFilePath(str(out))
    req = panel.request()
    assert req.raster == str(sample_layers.raster_path) and req.query_tiles == "3,10" and req.top == 5
    assert panel.problems() == [], panel.problems()
    # the query clicked on the map instead: two tiles of the raster
    panel.queryTilesEdit.clear()
    raster = QgsProject.instance().mapLayer(sample_layers.raster_id)
    canvas = qgis_iface.mapCanvas()
    canvas.setDestinationCrs(raster.crs())
    panel.pickButton.click()
    assert canvas.mapTool() is panel.pick_tool
    extent = raster.extent()
    for fx, fy in ((0.3, 0.4), (0.7, 0.6)):
        point = QgsPointXY(extent.xMinimum() + fx * extent.width(), extent.yMinimum() + fy * extent.height())
        panel.pick_tool.canvasClicked.emit(point, Qt.LeftButton)
    picks = panel.queryLayerCombo.currentLayer()
    assert picks is not None and picks.featureCount() == 2 and picks.id() == panel.picks_layer().id()
    panel.pickButton.click()
    assert canvas.mapTool() is not panel.pick_tool
    assert panel.problems() == [], panel.problems()
    ended = []
    panel.runFinished.connect(ended.append)
    assert dock.run()
    assert wait_for(lambda: bool(ended), 120) and ended == [True], panel.statusLabel.text()
    layers = QgsProject.instance().mapLayersByName("like similarity")
    assert len(layers) == 1 and layers[0].featureCount() == 96
    assert isinstance(layers[0].renderer(), QgsGraduatedSymbolRenderer)
    assert layers[0].renderer().classAttribute() == "similarity"
    assert sum(1 for f in layers[0].getFeatures() if f["query"] == 1) == 2       # the two clicked tiles
    assert out.with_name("like_top.csv").is_file()
    opened = opened_by(panel)                                 # the Report button explains the similar run
    assert panel.reportButton.isVisibleTo(panel) and panel.reportButton.isEnabled()
    panel.reportButton.click()
    assert wait_for(lambda: not panel.is_running(), 120) and opened == [out.with_name("like_report.html")]
    assert "most similar tiles" in opened[0].read_text(encoding="utf-8")
    panel.clear_picks()
    assert picks.featureCount() == 0


def labels_layer(raster_layer) -> QgsVectorLayer:
    """A memory layer (not a file: Run writes it for the engine) of 16 points, 'west' and 'east' tiles."""
    extent, crs = raster_layer.extent(), raster_layer.crs().authid()
    layer = QgsVectorLayer(f"Point?crs={crs}&field=cls:string", "my labels", "memory")
    side = extent.width() / 12                                   # 12 x 8 tiles of 64 px
    features = []
    for row in range(8):
        for col in (0, 1, 10, 11):
            feature = QgsFeature(layer.fields())
            feature["cls"] = "west" if col < 6 else "east"
            point = QgsPointXY(extent.xMinimum() + (col + 0.5) * side, extent.yMaximum() - (row + 0.5) * side)
            feature.setGeometry(QgsGeometry.fromPointXY(point))
            features.append(feature)
    layer.dataProvider().addFeatures(features)
    return layer


def test_classify_from_a_labels_layer_and_bad_input_marked(make_dock, sample_layers, tmp_path):
    from urbanform.plugin.ui import marks

    dock, panel = analyses_dock(make_dock, "classify")
    labels = labels_layer(QgsProject.instance().mapLayer(sample_layers.raster_id))
    QgsProject.instance().addMapLayer(labels)
    classifiers = [panel.classifierCombo.itemData(i) for i in range(panel.classifierCombo.count())]
    assert classifiers == list(panel.request().TOOL.param("classifier").choices)
    panel.labelsCombo.setLayer(labels)
    # labels without their class field: the field box is marked, Run disabled
    panel.fieldCombo.setField("")
    panel.update_state()
    assert not panel.runButton.isEnabled()
    assert panel.fieldCombo.property(marks.PROBLEM) == "field:required", panel.problemsLabel.text()
    panel.fieldCombo.setField("cls")
    assert panel.fieldCombo.property(marks.PROBLEM) is None and panel.runButton.isEnabled(), panel.problems()
    panel.classifyOutFile.setFilePath(str(tmp_path / "classes.gpkg"))
    ended = []
    panel.runFinished.connect(ended.append)
    assert dock.run()
    temp_file = Path(panel._planned()["labels"])
    assert temp_file.is_file()                                   # the memory layer, written for the engine
    assert wait_for(lambda: bool(ended), 120) and ended == [True], panel.statusLabel.text()
    assert not temp_file.exists()
    layer = QgsProject.instance().mapLayersByName("classes classes")[0]
    renderer = layer.renderer()
    assert isinstance(renderer, QgsCategorizedSymbolRenderer) and renderer.classAttribute() == "class_id"
    assert sorted(c.label() for c in renderer.categories()) == ["east", "west"]
    assert (tmp_path / "classes_cv.csv").is_file()
    again = make_dock().analyses                                 # the choices made for a run are remembered
    assert again.analysis() == "classify" and again.classifierCombo.currentData() == panel.request().classifier
    # the fine-tuning option: the contract's label and help, on the command line when ticked, remembered
    finetune = panel.request().TOOL.param("finetune")
    assert panel.finetuneCheck.text() == finetune.title and panel.finetuneCheck.toolTip() == finetune.help
    assert not panel.request().finetune and "--finetune" not in panel.request().argv()
    panel.finetuneCheck.setChecked(True)
    assert panel.request().finetune and "--finetune" in panel.request().argv()
    panel.save_settings()
    assert make_dock().analyses.finetuneCheck.isChecked()
    panel.finetuneCheck.setChecked(False)
    panel.save_settings()

    # other bad input, each marked on its widget before any run
    panel.set_analysis("similar")
    assert panel.queryTilesEdit.property(marks.PROBLEM) == "query:required"
    assert not panel.runButton.isEnabled() and "query" in panel.problemsLabel.text().lower()
    panel.set_analysis("report")
    panel.runFile.setFilePath(str(tmp_path / "no_such_run.gpkg"))
    assert panel.runFile.property(marks.PROBLEM) == "run:not_found", panel.problemsLabel.text()
    panel.set_analysis("change")
    assert panel.changeModelFile.property(marks.PROBLEM) == "model:required"
    assert not dock.run()                                       # refused, the reason shown
    assert "Cluster model" in panel.statusLabel.text()


def test_change_between_two_dates_loads_the_engine_style_and_offers_its_report(make_dock, sample_layers, cluster_run,
                                                                               tmp_path):
    from qgis.core import QgsRasterLayer

    after_path = tmp_path / "kampala_after.tif"
    after_path.write_bytes(sample_layers.raster_path.read_bytes())          # the same place at a "second date"
    after = QgsRasterLayer(str(after_path), "kampala after")
    QgsProject.instance().addMapLayer(after)
    dock, panel = analyses_dock(make_dock, "change")
    opened = opened_by(panel)
    panel.changeModelFile.setFilePath(str(cluster_run.with_name("kampala_run_model.pt")))
    panel.beforeCombo.setLayer(QgsProject.instance().mapLayer(sample_layers.raster_id))
    panel.afterCombo.setLayer(after)
    out = tmp_path / "change.gpkg"
    panel.changeOutFile.setFilePath(str(out))
    assert panel.problems() == [], panel.problems()
    assert not panel.reportButton.isVisibleTo(panel)
    ended = []
    panel.runFinished.connect(ended.append)
    assert dock.run()
    assert wait_for(lambda: bool(ended), 120) and ended == [True], panel.statusLabel.text()
    layer = QgsProject.instance().mapLayersByName("change change")[0]
    assert out.with_name("change_change.qml").is_file()
    assert layer.renderer().type() != "singleSymbol"                         # the engine's style, loaded
    assert sum(f["changed"] for f in layer.getFeatures()) == 0              # the same image twice: no change
    assert panel.reportButton.isVisibleTo(panel)
    panel.reportButton.click()
    assert wait_for(lambda: not panel.is_running(), 120), panel.statusLabel.text()
    assert opened == [tmp_path / "change_report.html"] and opened[0].is_file()


def test_cancel_stops_an_analysis_and_leaves_no_file_and_no_layer(make_dock, sample_layers, tmp_path):
    from qgis.core import QgsRasterLayer

    from .helpers import mosaic

    big = QgsRasterLayer(str(mosaic(sample_layers.raster_path, tmp_path / "big.tif", 4)), "big")
    QgsProject.instance().addMapLayer(big)
    dock, panel = analyses_dock(make_dock, "similar")
    dock.rasterCombo.setLayer(big)
    panel.queryTilesEdit.setText("3")
    out = tmp_path / "big_like.gpkg"
    panel.similarOutFile.setFilePath(str(out))
    ended, statuses = [], []
    panel.runFinished.connect(ended.append)
    assert dock.run()
    assert panel.task is not None
    panel.task.statusChanged.connect(statuses.append)
    assert wait_for(lambda: bool(statuses) or bool(ended), 60)           # the engine is at work
    assert not ended, panel.statusLabel.text()
    panel.cancelButton.click()
    assert wait_for(lambda: bool(ended), 60) and ended == [False]
    assert "Cancelled" in panel.statusLabel.text() and panel.progressBar.value() == 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("big_like")]
    assert not QgsProject.instance().mapLayersByName("big_like similarity")
    assert panel.runButton.isEnabled() and not panel.cancelButton.isEnabled()


def click(tool, canvas, point) -> None:
    """A left click of ``tool`` at map ``point``, as the canvas delivers it (press, then release)."""
    from qgis.gui import QgsMapMouseEvent
    from qgis.PyQt.QtCore import QEvent, QPoint, Qt

    pixel = canvas.getCoordinateTransform().transform(point)
    pos = QPoint(round(pixel.x()), round(pixel.y()))
    for kind, method in ((QEvent.MouseButtonPress, tool.canvasPressEvent),
                         (QEvent.MouseButtonRelease, tool.canvasReleaseEvent)):
        method(QgsMapMouseEvent(canvas, kind, pos, Qt.LeftButton, Qt.LeftButton, Qt.NoModifier))


def test_similarity_follows_the_query_tiles_clicked_after_a_run(make_dock, sample_layers, tmp_path, qgis_iface):
    """Live results: after one similar run, each click on a tile adds it to the query (on a query tile, takes it
    out) and the run's tiles are rescored from OUT_live.npz without an engine run; click-to-update time measured."""
    from urbanform.plugin.layers.similar_live import LiveSimilarity

    dock, panel = analyses_dock(make_dock, "similar")
    raster = QgsProject.instance().mapLayer(sample_layers.raster_id)
    canvas = qgis_iface.mapCanvas()
    canvas.resize(600, 400)
    canvas.setDestinationCrs(raster.crs())
    canvas.setExtent(raster.extent())
    extent = raster.extent()
    n_cols, n_rows = 12, 8                                       # 64 px tiles of the 768 x 512 sample

    def centre(tile: int) -> QgsPointXY:
        row, col = divmod(tile, n_cols)
        return QgsPointXY(extent.xMinimum() + (col + 0.5) * extent.width() / n_cols,
                          extent.yMaximum() - (row + 0.5) * extent.height() / n_rows)

    panel.similarOutFile.setFilePath(str(tmp_path / "live.gpkg"))
    panel.pickButton.click()
    click(panel.pick_tool, canvas, centre(3))
    assert panel.queryLayerCombo.currentLayer().featureCount() == 1 and panel.live_layer() is None
    ended = []
    panel.runFinished.connect(ended.append)
    assert dock.run()
    assert wait_for(lambda: bool(ended), 120) and ended == [True], panel.statusLabel.text()
    layer = QgsProject.instance().mapLayersByName("live similarity")[0]
    assert panel.live_layer() is layer and len(panel.live) == 96
    updates = []
    panel.liveUpdated.connect(updates.append)

    def state() -> tuple[set, dict]:
        feats = list(layer.getFeatures())
        return {f["tile_id"] for f in feats if f["query"] == 1}, {f["tile_id"]: f["similarity"] for f in feats}

    def clicked(tiles, expected_query):
        before = len(updates)
        for t in tiles:
            click(panel.pick_tool, canvas, centre(t))
        assert wait_for(lambda: len(updates) > before, 10), panel.statusLabel.text()
        assert wait_for(lambda: state()[0] == expected_query, 2), (state()[0], expected_query)
        sim, rank, _ = LiveSimilarity.load(tmp_path / "live_live.npz").scores(sorted(expected_query))
        got = state()[1]
        assert all(abs(got[t] - s) < 1e-5 for t, s in zip(panel.live.tile_ids, sim, strict=True))
        return len(updates) - before

    assert clicked([50], {3, 50}) == 1                           # a tile added
    assert clicked([3], {50}) == 1                               # a query tile clicked again: taken out
    assert panel.queryLayerCombo.currentLayer().featureCount() == 1
    assert clicked([20, 21], {20, 21, 50}) == 1                  # two quick clicks: one update (debounced)
    ranks = sorted(f["rank"] for f in layer.getFeatures() if f["query"] == 0)
    assert ranks == list(range(1, 94))
    print(f"live similarity in the dock: click-to-update {max(panel.live_seconds):.3f} s at most "
          f"(mean {sum(panel.live_seconds) / len(panel.live_seconds):.3f} s, {len(panel.live_seconds)} updates, "
          f"{len(panel.live)} tiles, debounce {panel._live_timer.interval()} ms)")
    assert max(panel.live_seconds) < 1.0
    panel.pickButton.click()
