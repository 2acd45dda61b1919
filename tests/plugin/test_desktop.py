"""The panel in the real QGIS desktop application under Xvfb: open it, run on the sample, get the layers.

tests/plugin/desktop_smoke.py does the work inside QGIS and writes a JSON report
and a screenshot (.test-results/artifacts/desktop_dock_run.png, kept for CI).
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from .helpers import fresh_qgis_env, install_zip_in_clean_profile, run_in_own_group

REPO = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("desktop_smoke.py")
SAMPLE = REPO / "resources" / "sample" / "kampala_ug_oam_rgb_z19_epsg3857.tif"
ARTIFACTS = REPO / ".test-results" / "artifacts"
TIMEOUT_S = 240


def test_dock_runs_on_the_sample_in_the_qgis_desktop_app(plugin_parent, tmp_path):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    png = ARTIFACTS / "desktop_dock_run.png"
    png.unlink(missing_ok=True)
    raster = tmp_path / "input" / SAMPLE.name            # a copy: QGIS writes statistics next to a raster
    raster.parent.mkdir()
    shutil.copyfile(SAMPLE, raster)
    report = tmp_path / "report.json"
    env = fresh_qgis_env(tmp_path / "home", QGIS_PLUGINPATH=plugin_parent, QT_QPA_PLATFORM="xcb",
                         URBANFORM_ENGINE_PYTHON=sys.executable, URBANFORM_CACHE=tmp_path / "cache",
                         UF_SMOKE_RASTER=raster, UF_SMOKE_OUT=tmp_path / "out" / "desktop_run.gpkg",
                         UF_SMOKE_PNG=png, UF_SMOKE_REPORT=report, UF_SMOKE_TIMEOUT=TIMEOUT_S - 40,
                         UF_TEST_DIR=SCRIPT.parent)
    (tmp_path / "out").mkdir()
    code, out, err, _ = run_in_own_group(["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24", "qgis.bin",
                                       "--noversioncheck", "--nologo", "--noplugins", "--code", str(SCRIPT)],
                                      env, TIMEOUT_S)
    output = out + err
    assert report.exists(), f"QGIS wrote no report within {TIMEOUT_S} s; its output:\n{output[-3000:]}"
    got = json.loads(report.read_text())
    assert got["errors"] == [], got
    assert got["loaded"] and got["started"] and got["dock_visible"] and got["raster_valid"], got
    assert got["estimate"].startswith("96 tiles of 64 px · about "), got
    assert got["run_ok"] is True and got["group"] is True, got
    assert got["group_layers"] == ["desktop_run tiles", "desktop_run clusters (raster)"], got
    assert got["renderers"]["desktop_run tiles"] == "categorizedSymbol", got
    assert got["renderers"]["desktop_run clusters (raster)"] == "paletted", got
    assert got["heavy"] == [], got
    assert got["ok"] is True and code == 0, got
    assert png.exists() and png.stat().st_size > 20_000, f"screenshot missing or blank: {png}"


def test_set_up_engine_and_run_from_the_zip(tmp_path):
    """From the zip in a clean profile with no engine: the panel offers Set up engine (Run grey), builds the
    engine, then clusters the sample with its defaults. Screenshots: .test-results/artifacts/*_setup.png and
    *_ready.png."""
    home, plugins = install_zip_in_clean_profile(tmp_path, REPO)
    raster = tmp_path / "input" / SAMPLE.name
    raster.parent.mkdir()
    shutil.copyfile(SAMPLE, raster)
    (tmp_path / "out").mkdir()
    report = tmp_path / "report.json"
    env = fresh_qgis_env(home, QT_QPA_PLATFORM="xcb", PATH="/usr/bin:/bin", UF_TEST_DIR=SCRIPT.parent,
                         UF_RASTER=raster, UF_OUT=tmp_path / "out" / "first_run.gpkg", UF_PNG_DIR=ARTIFACTS,
                         UF_REPORT=report, UF_TIMEOUT=500,
                         UV_CACHE_DIR=os.environ.get("UV_CACHE_DIR", str(Path.home() / ".cache" / "uv")))
    for leaked in ("URBANFORM_ENGINE_PYTHON", "QGIS_PLUGINPATH", "PYTHONPATH", "VIRTUAL_ENV"):
        env.pop(leaked, None)
    code, out, err, _ = run_in_own_group(["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24", "qgis.bin",
                                          "--noversioncheck", "--nologo", "--noplugins", "--code",
                                          str(SCRIPT.with_name("desktop_setup.py"))], env, 560)
    assert report.exists(), f"QGIS wrote no report; its output:\n{(out + err)[-3000:]}"
    got = json.loads(report.read_text())
    assert got["errors"] == [], got
    assert got["loaded"] and got["started"] and got["raster_valid"], got
    assert got["plugin_dir"].startswith(str(plugins)), got               # the unpacked zip, not this checkout
    assert got["bar_visible"] and got["setup_button"] == "Set up engine" and "No engine yet" in got["bar_text"], got
    assert got["run_enabled_without_engine"] is False and "Set up engine" in got["problems_without_engine"], got
    assert got["setup_started"] and got["bar_after_setup"] == "", got
    assert "set up by the plugin, current" in got["engine"] and got["backbone"] == "efficientnet_lite0", got
    assert got["run_ok"] is True and got["group_layers"], got
    assert got["heavy"] == [] and got["ok"] is True and code == 0, got
    for name in ("dock_setup", "dock_ready", "desktop_setup", "desktop_ready"):
        assert (ARTIFACTS / f"{name}.png").stat().st_size > 10_000, name
