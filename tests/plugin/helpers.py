"""Helpers for plugin tests (import them from here, never from another test module or conftest).

Wait for QgsTasks while letting Qt deliver their signals; run QGIS in a fresh profile; the panel's fixtures
(a dock factory, the sample layers, clean /urbanform/ settings), imported by the modules that use them.
"""
from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from qgis.core import QgsApplication, QgsProject, QgsRasterLayer, QgsSettings, QgsTask, QgsVectorLayer
from qgis.PyQt.QtCore import QCoreApplication

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "resources" / "sample" / "kampala_ug_oam_rgb_z19_epsg3857.tif"
BUILDINGS = REPO / "resources" / "sample" / "kampala_ug_osm_buildings.geojson"


def wait_for(predicate, timeout: float = 300.0, step: float = 0.05) -> bool:
    """Process Qt events until ``predicate()`` is true or ``timeout`` seconds pass."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        QCoreApplication.processEvents()
        if predicate():
            return True
        time.sleep(step)
    return False


def run_task(task: QgsTask, timeout: float = 300.0) -> int:
    """Add ``task`` to QGIS's task manager and wait until it ended and finished() ran; returns its status."""
    done = track(task)
    name = task.description()
    QgsApplication.taskManager().addTask(task)
    assert wait_for(lambda: bool(done), timeout), f"task {name} did not end in {timeout} s"
    wait_for(lambda: False, 0.2)      # let finished() and queued signals run
    return done[0]


def track(task: QgsTask) -> list:
    """A list that receives the task's final status (the task manager deletes the task afterwards)."""
    done: list = []
    task.taskCompleted.connect(lambda: done.append(QgsTask.Complete))
    task.taskTerminated.connect(lambda: done.append(QgsTask.Terminated))
    return done


def fresh_qgis_env(home, **extra) -> dict:
    """Environment for a separate QGIS process with a fresh profile under ``home``.

    pytest-qgis points QGIS_CUSTOM_CONFIG_PATH/QGIS_OPTIONS_PATH at the repo's
    .qgis-settings; a child QGIS must not inherit them, or HOME would not matter.
    """
    import os

    env = dict(os.environ, HOME=str(home), **{k: str(v) for k, v in extra.items()})
    for leaked in ("PYTHONHOME", "QGIS_CUSTOM_CONFIG_PATH", "QGIS_OPTIONS_PATH"):
        env.pop(leaked, None)
    return env


def run_in_own_group(cmd: list[str], env: dict, timeout: float, cwd=None):
    """Run ``cmd`` in its own process group; on timeout kill the whole group (xvfb-run, QGIS and all).

    Returns (returncode, stdout, stderr, timed_out).
    """
    import os
    import signal
    import subprocess

    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        return proc.returncode, out, err, False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return proc.returncode, out, err, True


def install_zip_in_clean_profile(tmp_path, repo) -> tuple:
    """``make package`` into ``tmp_path/dist`` and unpack the zip as QGIS's "Install from ZIP" would, into
    the default profile of a new HOME; returns (home, plugins folder)."""
    import subprocess
    import zipfile

    dist = tmp_path / "dist"
    subprocess.run(["make", "-s", "package", f"DIST={dist}"], cwd=repo, check=True, capture_output=True, timeout=120)
    home = tmp_path / "home"
    plugins = home / ".local/share/QGIS/QGIS3/profiles/default/python/plugins"
    plugins.mkdir(parents=True)
    with zipfile.ZipFile(next(dist.glob("urbanform-*.zip"))) as zf:
        zf.extractall(plugins)
    return home, plugins


# ----------------------------------------------------------------------------- the panel's fixtures
@pytest.fixture(autouse=True)
def clean_settings():
    """Each test starts without /urbanform/ settings; whatever was there before comes back afterwards."""
    qs = QgsSettings()
    qs.beginGroup("urbanform")
    saved = {key: qs.value(key) for key in qs.allKeys()}
    qs.endGroup()
    qs.remove("urbanform")
    yield
    qs.remove("urbanform")
    for key, value in saved.items():
        qs.setValue(f"urbanform/{key}", value)


@pytest.fixture
def engine_here(monkeypatch, tmp_path):
    """The engine runs in this test's Python, with its feature cache in the test's folder."""
    monkeypatch.setenv("URBANFORM_ENGINE_PYTHON", sys.executable)
    monkeypatch.setenv("URBANFORM_CACHE", str(tmp_path / "cache"))


@dataclass
class Sample:
    raster_path: Path
    raster_id: str
    buildings_id: str


@pytest.fixture
def sample_layers(qgis_new_project, tmp_path):
    """A copy of the sample raster (QGIS writes statistics next to it) and the buildings in the project."""
    raster_path = tmp_path / "input" / SAMPLE.name
    raster_path.parent.mkdir()
    shutil.copyfile(SAMPLE, raster_path)
    project = QgsProject.instance()
    raster = QgsRasterLayer(str(raster_path), "kampala")
    buildings = QgsVectorLayer(str(BUILDINGS), "buildings", "ogr")
    assert raster.isValid() and buildings.isValid()
    project.addMapLayers([raster, buildings])
    sample = Sample(raster_path, raster.id(), buildings.id())
    del raster, buildings                              # the project owns them; no references past the test
    yield sample
    project.removeAllMapLayers()


@pytest.fixture
def make_dock(urbanform, engine_here, qgis_iface):
    """A factory of docks on the pytest-qgis iface; every dock is shut down at the end."""
    from urbanform.plugin.ui.dock import UrbanFormDock

    docks = []

    def make():
        dock = UrbanFormDock(qgis_iface)
        dock.confirm_overwrite = lambda parent, path: pytest.fail(f"unexpected question about {path}")
        docks.append(dock)
        return dock

    yield make
    for dock in docks:
        dock.shutdown()
        dock.deleteLater()
    wait_for(lambda: False, 0.3)
    qgis_iface.messageBar().clear_messages()


def set_params(dock, out: Path, **changes) -> None:
    """Fill the widgets like a user would: K 4, ResNet-18 with random weights, 64 px tiles."""
    params = {**dict(k=4, backbone="resnet18", weights="none", tile=64, overlap=0, unit="px"), **changes}
    dock.tileUnitCombo.setCurrentIndex(dock.tileUnitCombo.findData(params["unit"]))
    dock.kSpin.setValue(params["k"])
    dock.backboneCombo.setCurrentIndex(dock.backboneCombo.findData(params["backbone"]))
    dock.weightsCombo.setCurrentIndex(dock.weightsCombo.findData(params["weights"]))
    dock.tileSizeSpin.setValue(params["tile"])
    dock.overlapSpin.setValue(params["overlap"])
    dock.outputFile.setFilePath(str(out))


def project_layer_names() -> list[str]:
    return sorted(layer.name() for layer in QgsProject.instance().mapLayers().values())


def mosaic(raster: Path, out: Path, n: int) -> Path:
    """``raster`` repeated n x n times at the same resolution (a bigger input, slow enough to cancel)."""
    from osgeo import gdal

    src = gdal.Open(str(raster))
    data = src.ReadAsArray()
    import numpy as np

    tiled = np.tile(data, (1, n, n))
    dst = gdal.GetDriverByName("GTiff").Create(str(out), src.RasterXSize * n, src.RasterYSize * n, src.RasterCount,
                                               src.GetRasterBand(1).DataType, ["TILED=YES"])
    dst.SetGeoTransform(src.GetGeoTransform())
    dst.SetProjection(src.GetProjection())
    dst.WriteArray(tiled)
    dst.FlushCache()
    del dst, tiled
    return out
