"""The panel without an engine, in real QGIS: it looks once, says so, offers Set up engine, and the set-up
(the real installer, as a QgsTask) gives it a working engine; an engine built from an older lock is
offered an update."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from qgis.core import QgsProject, QgsRasterLayer, QgsSettings

from .helpers import wait_for

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "resources" / "sample" / "kampala_ug_oam_rgb_z19_epsg3857.tif"


@pytest.fixture
def no_engine(urbanform, monkeypatch, tmp_path):
    """A machine where the plugin finds no engine: no variable, no setting, no checkout .venv, an empty profile
    engine folder and no python3 with torch on the PATH (the plugin folder is taken to be a fresh unpacked zip)."""
    from urbanform.plugin import settings
    from urbanform.plugin.runner import engine_env

    saved = _urbanform_settings()
    QgsSettings().remove("urbanform")
    monkeypatch.delenv("URBANFORM_ENGINE_PYTHON", raising=False)
    monkeypatch.setenv("URBANFORM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(engine_env, "CHECKOUT_VENV", tmp_path / "unpacked-zip" / ".venv")
    path_dir = tmp_path / "bin"
    path_dir.mkdir()
    monkeypatch.setenv("PATH", f"{path_dir}{os.pathsep}/usr/bin{os.pathsep}/bin")
    settings.set("engine_home", str(tmp_path / "engine-home"))
    calls = {"detect": 0}
    real_detect = engine_env.detect

    def counting_detect():
        calls["detect"] += 1
        return real_detect()

    monkeypatch.setattr(engine_env, "detect", counting_detect)
    yield {"home": tmp_path / "engine-home", "calls": calls, "engine_env": engine_env}
    QgsSettings().remove("urbanform")
    for key, value in saved.items():
        QgsSettings().setValue(f"urbanform/{key}", value)


def _urbanform_settings() -> dict:
    """The /urbanform/ settings (a short-lived QgsSettings each time: a kept one may write stale values back)."""
    qs = QgsSettings()
    qs.beginGroup("urbanform")
    saved = {key: qs.value(key) for key in qs.allKeys()}
    qs.endGroup()
    return saved


@pytest.fixture
def dock(urbanform, qgis_iface, qgis_new_project, tmp_path):
    from urbanform.plugin.ui.dock import UrbanFormDock

    raster_path = tmp_path / "input" / SAMPLE.name
    raster_path.parent.mkdir()
    shutil.copyfile(SAMPLE, raster_path)
    layer = QgsRasterLayer(str(raster_path), "kampala")
    QgsProject.instance().addMapLayer(layer)
    del layer
    d = UrbanFormDock(qgis_iface)
    d.confirm_overwrite = lambda parent, path: pytest.fail(f"unexpected question about {path}")
    yield d
    d.shutdown()
    wait_for(lambda: not d.setupBar.is_running(), 120)
    d.deleteLater()
    QgsProject.instance().removeAllMapLayers()


def test_no_engine_is_looked_for_once_and_run_explains_the_set_up(no_engine, dock):
    assert wait_for(lambda: dock._detected and not dock._detecting, 60)
    wait_for(lambda: False, 3.0)                      # several debounce periods: the old panel searched again
    assert no_engine["calls"]["detect"] == 1, "the engine search repeats"
    bar = dock.setupBar
    assert bar.isVisibleTo(dock) and bar.setupButton.text() == "Set up engine"
    assert "No engine yet" in bar.messageLabel.text()
    assert not dock.runButton.isEnabled()
    assert "Set up engine" in dock.problemsLabel.text() and "Set up engine" in dock.runButton.toolTip()
    assert "make setup" not in dock.problemsLabel.text() + dock.engineLabel.text()
    assert dock.run() is False                        # explains, never fails
    # the Buildings mode says the same
    dock.modeCombo.setCurrentIndex(dock.modeCombo.findData("buildings"))
    assert any("Set up engine" in p.message for p in dock.buildings.problems())
    # Check searches again, once
    dock.recheck()
    assert wait_for(lambda: dock._detected and not dock._detecting, 60)
    wait_for(lambda: False, 1.5)
    assert no_engine["calls"]["detect"] == 2


def test_set_up_engine_from_the_panel_gives_a_working_engine_and_offers_updates(no_engine, dock, tmp_path):
    from urbanform.plugin.runner import engine_setup

    assert wait_for(lambda: dock._detected, 60)
    bar = dock.setupBar
    steps = []
    task = bar.start()
    assert task is not None and bar.is_running() and not dock.runButton.isEnabled()
    assert "being set up" in dock.problemsLabel.text()
    task.step.connect(steps.append)
    assert wait_for(lambda: not bar.is_running(), 900), "the set-up did not finish"
    assert not bar.isVisibleTo(dock), bar.messageLabel.text()
    record = engine_setup.current(no_engine["home"])
    assert record and dock.engine_python() == record["python"]
    assert steps and steps[-1].startswith(f"{len(engine_setup.STEPS)}/")
    assert wait_for(lambda: (dock.engine_info or {}).get("ok"), 120), dock.engineLabel.text()
    assert "current" in dock.engineLabel.text() and "torch 2.14.1" in dock.engineLabel.text(), (
        dock.engineLabel.text(), no_engine["engine_env"].engine_home())
    dock.outputFile.setFilePath(str(tmp_path / "out.gpkg"))
    assert wait_for(lambda: dock.runButton.isEnabled(), 60), dock.problemsLabel.text()
    # a newer plugin ships another lock: the engine still runs, and the panel offers the update
    current = no_engine["home"] / "py3.11" / engine_setup.CURRENT
    data = json.loads(current.read_text())
    current.write_text(json.dumps(dict(data, lock_sha256="0" * 64)))
    dock.recheck()
    assert wait_for(lambda: bar.isVisibleTo(dock), 120)
    assert bar.setupButton.text() == "Update engine" and "older lock" in dock.engineLabel.text()
    assert dock.runButton.isEnabled()


def test_cancel_in_the_panel_keeps_nothing_half_built(no_engine, dock):
    assert wait_for(lambda: dock._detected, 60)
    bar = dock.setupBar
    steps = []
    task = bar.start()
    task.step.connect(steps.append)
    assert wait_for(lambda: any("Create environment" in s for s in steps), 120)
    bar.cancelButton.click()
    assert wait_for(lambda: not bar.is_running(), 120)
    assert "cancelled" in bar.messageLabel.text() and bar.setupButton.isEnabled()
    root = no_engine["home"] / "py3.11"
    assert not list(root.glob("env-*")) and not (root / "current.json").exists()


def test_a_chosen_python_that_is_not_one_is_explained_in_the_panel(no_engine, dock, tmp_path):
    assert wait_for(lambda: dock._detected, 60)
    not_python = tmp_path / "python3"
    not_python.write_text("#!/bin/sh\necho hello\n")
    not_python.chmod(0o755)
    dock.basePython.setFilePath(str(not_python))
    dock.setupBar.start()
    assert wait_for(lambda: not dock.setupBar.is_running(), 60)
    text = dock.setupBar.messageLabel.text()
    assert f"{not_python} is not a Python interpreter" in text and "Choose" in text
    assert dock.setupBar.setupButton.isEnabled() and not dock.runButton.isEnabled()
    assert not (no_engine["home"] / "py3.11").exists()
