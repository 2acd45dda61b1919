"""The panel in the real QGIS desktop application under Xvfb: open it, run on the sample, get the layers.

tests/plugin/desktop_smoke.py does the work inside QGIS and writes a JSON report
and a screenshot (.test-results/artifacts/desktop_dock_run.png, kept for CI).
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from .helpers import fresh_qgis_env, run_in_own_group

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
                         UF_SMOKE_PNG=png, UF_SMOKE_REPORT=report, UF_SMOKE_TIMEOUT=TIMEOUT_S - 40)
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
