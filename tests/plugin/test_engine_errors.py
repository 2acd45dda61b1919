"""Bad input that only the engine finds (a truncated GeoTIFF, K larger than the valid tiles) reaches the analyst
in the words of the face that ran it: the runner reads the engine's error event (parameter and code), the dock
marks the widget and names it by its label, Processing names its own parameter. Real engine subprocesses, real
QGIS (pytest-qgis, offscreen), real files cut with real bytes."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
from qgis.core import (
    Qgis,
    QgsApplication,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
)
from qgis.PyQt.QtWidgets import QWidget

from .helpers import BUILDINGS, SAMPLE, clean_settings, engine_here, wait_for  # noqa: F401 - fixtures



def truncated(folder: Path) -> Path:
    """The sample raster cut to half its bytes: its header reads (QGIS opens it), its last blocks are gone."""
    folder.mkdir(parents=True, exist_ok=True)
    cut = folder / "kampala_cut.tif"
    cut.write_bytes(SAMPLE.read_bytes()[: SAMPLE.stat().st_size // 2])
    return cut


def few_valid_tiles(path: Path) -> Path:
    """A 256 x 256 px GeoTIFF (16 tiles of 64 px) whose pixels are nodata but for 3 tiles (GDAL, no rasterio)."""
    import numpy as np
    from osgeo import gdal, osr

    path.parent.mkdir(parents=True, exist_ok=True)
    ds = gdal.GetDriverByName("GTiff").Create(str(path), 256, 256, 3, gdal.GDT_Byte)
    ds.SetGeoTransform((500000.0, 0.5, 0.0, 700000.0, 0.0, -0.5))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32630)
    ds.SetProjection(srs.ExportToWkt())
    rng = np.random.default_rng(1)
    for b in (1, 2, 3):
        data = np.zeros((256, 256), dtype=np.uint8)
        data[:64, :192] = rng.integers(1, 256, size=(64, 192), dtype=np.uint8)
        band = ds.GetRasterBand(b)
        band.SetNoDataValue(0)
        band.WriteArray(data)
    ds.FlushCache()
    del ds
    return path


# -- the runner -------------------------------------------------------------------------------------
def test_the_runner_reads_the_error_event_and_never_passes_it_on_as_progress(urbanform, engine_here, tmp_path):  # noqa: F811
    from urbanform.engine.contract.problems import BAD_FORMAT, Problem
    from urbanform.plugin.runner.engine_process import EXIT_BAD_INPUT, run_engine

    cut = truncated(tmp_path / "input")
    seen = []
    result = run_engine(sys.executable, ["cluster", str(cut), "--out", str(tmp_path / "o.gpkg"), "--weights", "none",
                                         "--progress", "json"], on_event=seen.append)
    assert result.returncode == EXIT_BAD_INPUT and not result.ok and not result.cancelled, result.stderr
    assert (result.tool, result.param, result.code) == ("cluster", "raster", BAD_FORMAT)
    assert result.problem == Problem("raster", BAD_FORMAT, result.error)
    assert "kampala_cut.tif' is damaged or truncated" in result.error
    # progress only: the error event is never passed on (a bad input found while opening prints no progress
    # at all: the engine holds its open event until the next stage)
    assert all("stage" in event and "error" not in event for event in seen), seen
    assert "error" not in (result.last_event or {})
    assert result.message == result.error                                  # the stderr line says the same
    assert list(tmp_path.glob("o*")) == []


# -- Processing -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def provider(urbanform, qgis_processing):
    from urbanform.plugin.provider import UrbanFormProvider

    registry = QgsApplication.processingRegistry()
    assert registry.addProvider(UrbanFormProvider()), "another provider with id urbanform is registered"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("URBANFORM_ENGINE_PYTHON", sys.executable)
        yield registry.algorithmById("urbanform:cluster")
    registry.removeProvider("urbanform")


def cluster(params: dict):
    import processing
    from urbanform.plugin.processing.cluster import WEIGHT_CHOICES

    return processing.run("urbanform:cluster", {"K": 4, "WEIGHTS": WEIGHT_CHOICES.index("none"), **params},
                          feedback=QgsProcessingFeedback())


def test_processing_names_its_raster_parameter_for_a_truncated_geotiff(provider, tmp_path):
    cut = truncated(tmp_path / "input")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(QgsProcessingException) as raised:
        cluster({"INPUT": str(cut), "OUTPUT": str(out / "cut.gpkg")})
    text = str(raised.value)
    description = provider.parameterDefinition("INPUT").description()
    assert text.startswith(f"{description}: '") and "kampala_cut.tif' is damaged or truncated" in text, text
    assert "re-export it or copy it again" in text and "RASTER" not in text and "\n" not in text
    assert list(out.iterdir()) == []


def test_processing_names_its_k_parameter_for_more_clusters_than_valid_tiles(provider, tmp_path):
    raster = few_valid_tiles(tmp_path / "input" / "few.tif")
    with pytest.raises(QgsProcessingException) as raised:
        cluster({"INPUT": str(raster), "OUTPUT": str(tmp_path / "few.gpkg")})
    text = str(raised.value)
    description = provider.parameterDefinition("K").description()
    assert text.startswith(f"{description}: 4 is larger than the number of valid tiles (3)."), text
    assert "--k" not in text
    assert not (tmp_path / "few.gpkg").exists()


# -- the dock ---------------------------------------------------------------------------------------
@pytest.fixture
def dock(urbanform, engine_here, qgis_iface, qgis_new_project, tmp_path):  # noqa: F811
    from urbanform.plugin.ui.dock import UrbanFormDock

    raster = QgsRasterLayer(str(few_valid_tiles(tmp_path / "input" / "few.tif")), "few")
    assert raster.isValid()
    QgsProject.instance().addMapLayer(raster)
    del raster
    d = UrbanFormDock(qgis_iface)
    d.confirm_overwrite = lambda parent, path: pytest.fail(f"unexpected question about {path}")
    yield d
    d.shutdown()
    d.deleteLater()
    wait_for(lambda: False, 0.3)
    qgis_iface.messageBar().clear_messages()
    QgsProject.instance().removeAllMapLayers()


def run_dock(dock) -> bool:
    ended = []
    dock.runFinished.connect(ended.append)
    assert dock.run(), dock.problemsLabel.text()
    assert wait_for(lambda: bool(ended), 300), dock.statusLabel.text()
    dock.runFinished.disconnect()
    return ended[0]


def test_dock_marks_k_when_the_engine_finds_fewer_valid_tiles(dock, tmp_path, qgis_iface):
    from urbanform.plugin.ui import marks

    (tmp_path / "out").mkdir()
    dock.kSpin.setValue(4)
    dock.backboneCombo.setCurrentIndex(dock.backboneCombo.findData("resnet18"))
    dock.weightsCombo.setCurrentIndex(dock.weightsCombo.findData("none"))
    dock.tileSizeSpin.setValue(64)
    dock.outputFile.setFilePath(str(tmp_path / "out" / "few.gpkg"))
    assert wait_for(lambda: "16 tiles" in dock.estimateLabel.text(), 120), dock.estimateLabel.text()
    assert dock.runButton.isEnabled(), dock.problemsLabel.text()
    own_tip = dock.kSpin.toolTip()

    assert run_dock(dock) is False
    expected = "Clusters (K): 4 is larger than the number of valid tiles (3)."
    assert dock.kSpin.property(marks.PROBLEM) == "k:out_of_range"
    assert dock.kSpin.toolTip().startswith(expected) and "--k" not in dock.kSpin.toolTip()
    assert dock.statusLabel.text().startswith(f"Failed: {expected}"), dock.statusLabel.text()
    criticals = qgis_iface.messageBar().get_messages(Qgis.Critical)
    assert any(expected in m and "--k" not in m for m in criticals), criticals
    assert [w for w in dock.findChildren(QWidget) if w.property(marks.PROBLEM)] == [dock.kSpin]
    assert list((tmp_path / "out").iterdir()) == []
    assert dock.runButton.isEnabled()              # the engine's finding never blocks a run: the data may change

    # a K the raster can serve: the mark goes (and comes back for the K that failed)
    dock.kSpin.setValue(3)
    assert dock.kSpin.property(marks.PROBLEM) is None and dock.kSpin.toolTip() == own_tip
    dock.kSpin.setValue(4)
    assert dock.kSpin.property(marks.PROBLEM) == "k:out_of_range"
    dock.kSpin.setValue(3)
    assert run_dock(dock) is True, dock.statusLabel.text()
    assert dock.kSpin.property(marks.PROBLEM) is None
    dock.kSpin.setValue(4)
    assert dock.kSpin.property(marks.PROBLEM) is None      # a later run: the old failure is forgotten


def test_buildings_panel_marks_the_raster_of_a_training_on_a_truncated_geotiff(dock, tmp_path):
    """train-seg opens the raster first: the engine names it, the panel marks the raster layer widget."""
    from urbanform.plugin.ui import marks

    cut = QgsRasterLayer(str(truncated(tmp_path / "cut")), "cut")
    buildings = QgsVectorLayer(str(BUILDINGS), "buildings", "ogr")
    assert cut.isValid() and buildings.isValid()
    QgsProject.instance().addMapLayers([cut, buildings])
    dock.rasterCombo.setLayer(cut)
    del cut, buildings
    dock.modeCombo.setCurrentIndex(dock.modeCombo.findData("buildings"))
    panel = dock.buildings
    panel.set_action("train")
    panel.footprintsCombo.setLayer(QgsProject.instance().mapLayersByName("buildings")[0])
    panel.modelOutFile.setFilePath(str(tmp_path / "out" / "model.pt"))
    (tmp_path / "out").mkdir()
    panel.update_state()
    assert panel.segRunButton.isEnabled(), panel.segProblemsLabel.text()
    ended = []
    panel.runFinished.connect(ended.append)
    assert panel.run()
    assert wait_for(lambda: bool(ended), 300) and ended == [False], panel.segStatusLabel.text()
    assert dock.rasterCombo.property(marks.PROBLEM) == "raster:bad_format"
    status = panel.segStatusLabel.text()
    assert status.startswith("Failed: Raster layer: '") and "is damaged or truncated" in status, status
    assert list((tmp_path / "out").iterdir()) == []
