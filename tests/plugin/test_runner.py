"""The background runner: a QgsTask running the engine as a subprocess, in real QGIS."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
from qgis.core import QgsApplication, QgsProject, QgsTask

from .helpers import run_task, track, wait_for

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "resources" / "sample" / "kampala_ug_oam_rgb_z19_epsg3857.tif"


@pytest.fixture
def urbanform_modules(urbanform):
    from urbanform.plugin import requests as request
    from urbanform.plugin.layers import clusters as layers
    from urbanform.plugin.runner import engine_env, task

    return request, task, layers, engine_env


def start_slow_run(modules, tmp_path, name, **task_kw):
    """Start a deliberately slow engine run (resnet50, 32 px, batches of 2) and wait until it computes features.

    Returns (request, task, calls, done): ``calls`` records on_success/on_failure, ``done`` the final status.
    """
    request, task_mod, _, _ = modules
    req = request.ClusterRequest(raster=str(SAMPLE), out=str(tmp_path / f"{name}.gpkg"), k=3, weights="none",
                                 backbone="resnet50", tile_size=32)
    calls = []
    t = task_mod.EngineTask(f"cluster {name}", sys.executable,
                            req.argv() + ["--batch-size", "2", "--cache-dir", str(tmp_path / "cache")],
                            outputs=list(req.outputs().values()), on_success=lambda t: calls.append("success"),
                            on_failure=lambda t: calls.append("failure"), **task_kw)
    done = track(t)
    QgsApplication.taskManager().addTask(t)
    assert wait_for(lambda: t.status_message.startswith("features") and t.progress() > 6.5 and t.pid, 120), \
        t.status_message
    return req, t, calls, done


def test_task_runs_the_engine_and_adds_styled_layers(urbanform_modules, tmp_path, qgis_new_project):
    request, task_mod, layers, _ = urbanform_modules
    req = request.ClusterRequest(raster=str(SAMPLE), out=str(tmp_path / "run1.gpkg"), k=4, weights="none",
                                 backbone="resnet18")
    assert req.problems() == []
    statuses = []
    added = {}

    def on_success(t):
        added["group"], added["tiles"], added["raster"] = layers.add_cluster_outputs(req.outputs(), req.name)

    t = task_mod.EngineTask("cluster run1", sys.executable, req.argv() + ["--cache-dir", str(tmp_path / "c")],
                            outputs=list(req.outputs().values()), on_success=on_success)
    t.statusChanged.connect(statuses.append)
    assert run_task(t) == QgsTask.Complete, t.result.stderr
    assert any(s.startswith("features") for s in statuses)
    project = QgsProject.instance()
    group = project.layerTreeRoot().findGroup("run1")
    assert group is not None and [c.name() for c in group.children()] == ["run1 tiles", "run1 clusters (raster)"]
    tiles = added["tiles"]
    assert tiles.featureCount() == 96
    assert tiles.renderer().type() == "categorizedSymbol" and tiles.renderer().classAttribute() == "cluster"
    assert len(tiles.renderer().categories()) == 4
    raster = added["raster"]
    assert raster.renderer().type() == "paletted" and len(raster.renderer().classes()) == 4
    # the tiles and the raster use the same colours, semi-transparent over the image
    tile_colors = {c.value(): c.symbol().color().name() for c in tiles.renderer().categories()}
    assert tile_colors == {c.value: c.color.name() for c in raster.renderer().classes()}
    assert all(c.symbol().color().alphaF() < 1 for c in tiles.renderer().categories())
    assert (tmp_path / "run1_tiles.qml").exists() and (tmp_path / "run1_clusters.qml").exists()
    del tiles, raster, added["tiles"], added["raster"]
    project.removeAllMapLayers()


def test_cancel_mid_run_leaves_no_file_and_no_layer(urbanform_modules, tmp_path, qgis_new_project):
    _, t, calls, done = start_slow_run(urbanform_modules, tmp_path, "c")
    t.cancel()
    assert wait_for(lambda: bool(calls) and bool(done), 120)
    assert done == [QgsTask.Terminated] and calls == ["failure"]
    assert t.result.cancelled
    assert [p for p in tmp_path.iterdir() if p.is_file()] == []
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert QgsProject.instance().mapLayers() == {}


def test_wrong_engine_python_gives_a_message_not_an_exception(urbanform_modules, tmp_path, qgis_iface):
    request, task_mod, _, engine_env = urbanform_modules
    info = engine_env.check("/nonexistent/python3")
    assert info["ok"] is False and "does not exist" in info["error"] and "Set up engine" in info["error"]
    req = request.ClusterRequest(raster=str(SAMPLE), out=str(tmp_path / "w.gpkg"), k=3, weights="none")
    t = task_mod.EngineTask("cluster w", "/nonexistent/python3", req.argv(), message_bar=qgis_iface.messageBar())
    assert run_task(t) == QgsTask.Terminated
    assert "cannot be started" in t.result.message
    assert list(tmp_path.iterdir()) == []


def test_engine_error_reaches_the_message(urbanform_modules, tmp_path):
    request, task_mod, _, _ = urbanform_modules
    req = request.ClusterRequest(raster=str(SAMPLE), out=str(tmp_path / "e.gpkg"), k=200, weights="none")
    t = task_mod.EngineTask("cluster e", sys.executable, req.argv())
    assert run_task(t) == QgsTask.Terminated
    assert t.result.returncode == 2 and "larger than the number of valid tiles" in t.result.message


def test_engine_check_reports_torch_and_devices(urbanform_modules):
    *_, engine_env = urbanform_modules
    info = engine_env.check(sys.executable)
    assert info["ok"] and "cpu" in info["devices"] and info["torch"].startswith("2.")


def test_request_problems_catch_what_the_engine_would_reject(urbanform_modules, tmp_path):
    request, *_ = urbanform_modules
    ok = dict(raster=str(SAMPLE), out=str(tmp_path / "o.gpkg"))
    assert request.ClusterRequest(**ok).problems() == []
    cases = {"1 is out of range": dict(k=1), "between 2 and 254": dict(k=255),
             "smaller than the tile size": dict(overlap=64),
             "at least 16 px": dict(tile_size=8), "not a local file": dict(raster="https://example.org/wms"),
             "must end in .gpkg": dict(out=str(tmp_path / "o.shp")), "not writable": dict(out="/proc/o.gpkg"),
             "does not exist": dict(out=str(tmp_path / "missing" / "o.gpkg"))}
    for expected, change in cases.items():
        problems = request.ClusterRequest(**{**ok, **change}).problems()
        assert any(expected in p.message for p in problems), (expected, problems)
    (tmp_path / "o.gpkg").write_text("x")
    assert any("already exists" in p.message for p in request.ClusterRequest(**ok).problems())
    assert request.ClusterRequest(**ok, overwrite=True).problems() == []


def test_engine_process_dying_gives_its_message_and_leaves_no_file(urbanform_modules, tmp_path, qgis_iface):
    import os
    import signal

    _, task_mod, _, _ = urbanform_modules
    req, t, calls, done = start_slow_run(urbanform_modules, tmp_path, "d", message_bar=qgis_iface.messageBar())
    os.kill(t.pid, signal.SIGKILL)            # as if it ran out of memory
    assert wait_for(lambda: bool(done), 60)
    assert done == [QgsTask.Terminated] and calls == ["failure"]
    assert "killed (signal 9)" in t.result.message
    assert not [p for p in tmp_path.iterdir() if p.is_file()]
    # the next run clears the partial feature file the killed process left in the cache
    assert list((tmp_path / "cache").glob(".*.part-*.npy"))
    req.backbone, req.tile_size = "resnet18", 64
    assert run_task(task_mod.EngineTask("cluster d2", sys.executable, req.argv() + [
        "--cache-dir", str(tmp_path / "cache")])) == QgsTask.Complete
    assert not list((tmp_path / "cache").glob(".*.part-*.npy"))
    assert QgsProject.instance().mapLayers() == {}
