"""DeepCluster and the sensitivity sweep in the plugin (issue 4), in real QGIS with the real engine subprocess.

Requests (argv, problems, outputs), the dock's method and sweep modes, a real
sweep on the sample loaded as layers and restyled by the K slider with its
plots shown, and cancelling a running DeepCluster run.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from qgis.core import Qgis, QgsProject, QgsSettings

from .helpers import (
    SAMPLE,
    clean_settings,
    engine_here,
    make_dock,
    project_layer_names,
    sample_layers,
    set_params,
    wait_for,
)

__all__ = ["clean_settings", "engine_here", "make_dock", "sample_layers"]       # fixtures used here
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def request_mod(urbanform):
    from urbanform.plugin import requests as request

    return request


# -- requests (no engine run) ------------------------------------------------------------------------
def test_cluster_request_carries_the_method_and_epochs(request_mod, tmp_path):
    ok = dict(raster=str(SAMPLE), out=str(tmp_path / "d.gpkg"))
    kmeans = request_mod.ClusterRequest(**ok)
    assert "--method" not in kmeans.argv() and "--epochs" not in kmeans.argv()    # the engine's fast default
    assert kmeans.outputs()["model"] == tmp_path / "d_model.pt"
    deep = request_mod.ClusterRequest(**ok, method="deepcluster", epochs=3)
    argv = deep.argv()
    assert argv[argv.index("--method") + 1] == "deepcluster" and argv[argv.index("--epochs") + 1] == "3"
    assert "--lr" not in argv                                                     # the engine chooses
    argv = request_mod.ClusterRequest(**ok, method="deepcluster", lr=0.005).argv()
    assert argv[argv.index("--lr"):][:2] == ["--lr", "0.005"]
    assert deep.problems() == []
    assert any("between 1 and" in p.message for p in request_mod.ClusterRequest(**ok, method="deepcluster",
                                                                        epochs=0).problems())
    assert [(p.param, p.code) for p in request_mod.ClusterRequest(**ok, method="dbscan").problems()] == [
        ("method", "bad_choice")]


def test_sweep_request_parses_k_and_tile_sizes(request_mod, tmp_path):
    req = request_mod.SweepRequest(raster=str(SAMPLE), out=str(tmp_path / "s.gpkg"), k_text="2..4,6",
                                   tile_sizes="64, 128px", backbone="resnet18", weights="none")
    assert req.problems() == []
    assert req.ks() == [2, 3, 4, 6] and req.tile_labels() == ["64px", "128px"]
    argv = req.argv()
    assert argv[:4] == ["sweep", str(SAMPLE), "--out", str(tmp_path / "s.gpkg")]
    assert argv[argv.index("--k") + 1] == "2..4,6" and argv[argv.index("--tile-size") + 1] == "64px,128px"
    assert "--method" not in argv and "--epochs" not in argv           # k-means: the declared default
    deep = request_mod.SweepRequest(raster=str(SAMPLE), out=str(tmp_path / "s.gpkg"), method="deepcluster", epochs=2)
    assert deep.argv()[deep.argv().index("--epochs") + 1] == "2"
    names = {p.name for p in req.outputs().values()}
    assert names == {"s.gpkg", "s_metrics.csv", "s_metrics.png", "s_manifest.json", "s_lineage_64px.png",
                     "s_lineage_128px.png", "s_pca_64px.png", "s_pca_128px.png"}
    assert [p.name for p in req.plots()][0] == "s_metrics.png" and len(req.plots()) == 5
    metres = request_mod.SweepRequest(raster=str(SAMPLE), out=str(tmp_path / "m.gpkg"), tile_sizes="20.5,40",
                                      tile_unit="m")
    assert metres.tile_labels() == ["20.5m", "40m"] and metres.problems() == []
    bad = {"1..4": "between 2 and", "5..3": "runs backwards", "a,b": "not a K value", "": "Give the K values",
           "2..300": "between 2 and"}
    for k_text, expected in bad.items():
        problems = request_mod.SweepRequest(raster=str(SAMPLE), out=str(tmp_path / "s.gpkg"), k_text=k_text).problems()
        assert any(expected in p.message for p in problems), (k_text, problems)
    sizes = {"8,64": "at least 16 px", "32,x": "not a length", " , ": "at least one tile size",
             "20.5": "whole number", "-4": "not a length"}
    for text, expected in sizes.items():
        problems = request_mod.SweepRequest(raster=str(SAMPLE), out=str(tmp_path / "s.gpkg"),
                                            tile_sizes=text).problems()
        assert any(expected in p.message for p in problems), (text, problems)
    (tmp_path / "s_metrics.csv").write_text("x")            # any output of the run counts as existing
    assert any("s_metrics.csv already exists" in p.message for p in req.problems())


def test_predict_request(request_mod, tmp_path):
    model = tmp_path / "run_model.pt"
    req = request_mod.PredictRequest(model=str(model), raster=str(SAMPLE), out=str(tmp_path / "p.gpkg"), resample=True)
    assert any("does not exist" in p.message for p in req.problems())
    model.write_bytes(b"x")
    assert req.problems() == []
    assert req.argv() == ["predict", str(model), str(SAMPLE), "--out", str(tmp_path / "p.gpkg"), "--resample",
                          "--progress", "json"]
    assert sorted(req.outputs()) == ["gpkg", "manifest", "quicklook", "tif"]       # predict writes no model
    npz = tmp_path / "old_model.npz"
    npz.write_bytes(b"x")
    assert [(p.param, p.code) for p in request_mod.PredictRequest(str(npz), str(SAMPLE),
                                                                  str(tmp_path / "q.gpkg")).problems()] == [
        ("model", "bad_format")]


def test_progress_of_sweep_and_deepcluster_runs_only_moves_forward(urbanform):
    from urbanform.engine.contract.progress import progress_for

    sweep = progress_for(["sweep", "r.tif", "--tile-size", "64px,128px"])
    events = [("open", 0, 0, ""), ("features", 0, 96, "64px: resnet18"), ("features", 96, 96, ""),
              ("tiles_64px", 3, 3, "K=4 done"), ("features", 0, 24, "128px: resnet18"), ("features", 24, 24, ""),
              ("tiles_128px", 1, 3, ""), ("plots", 2, 2, ""), ("write", 1, 1, "")]
    values = [sweep({"stage": s, "done": d, "total": t, "message": m}) for s, d, t, m in events]
    assert values[0] is None and values[1:] == sorted(values[1:]) and values[-1] == 100
    assert values[3] == 45 and 45 < values[5] < values[6] < 90
    deep = progress_for(["cluster", "r.tif", "--method", "deepcluster", "--epochs", "2"])
    first = deep({"stage": "epoch", "done": 0, "total": 2, "message": "epoch 1/2: training on 768 crops (6/12)",
                  "step": 6, "steps": 12})
    assert 12 < first < deep({"stage": "epoch", "done": 1, "total": 2, "message": "epoch 1/2 loss 0.9"}) < 92


# -- the dock ------------------------------------------------------------------------------------------
def test_deepcluster_enables_epochs_and_the_argv_carries_them(make_dock, sample_layers, tmp_path):
    dock = make_dock()
    set_params(dock, tmp_path / "d.gpkg")
    assert dock.methodCombo.currentData() == "kmeans" and not dock.epochsSpin.isEnabled()
    assert "--method" not in dock.request().argv()
    dock.methodCombo.setCurrentIndex(dock.methodCombo.findData("deepcluster"))
    assert dock.epochsSpin.isEnabled()
    dock.epochsSpin.setValue(3)
    argv = dock.request().argv()
    assert argv[argv.index("--method") + 1] == "deepcluster" and argv[argv.index("--epochs") + 1] == "3"
    assert dock.runButton.isEnabled(), dock.problemsLabel.text()
    assert wait_for(lambda: "DeepCluster then trains 3 epochs" in dock.estimateLabel.text(), 120), \
        dock.estimateLabel.text()
    dock.methodCombo.setCurrentIndex(dock.methodCombo.findData("kmeans"))
    assert not dock.epochsSpin.isEnabled() and "--epochs" not in dock.request().argv()
    # remembered like the other fields, with the sweep's fields
    dock.methodCombo.setCurrentIndex(dock.methodCombo.findData("deepcluster"))
    dock.modeCombo.setCurrentIndex(dock.modeCombo.findData("sweep"))
    dock.kFromSpin.setValue(3)
    dock.kToSpin.setValue(7)
    dock.tileSizesEdit.setText("48,96")
    dock.close()
    second = make_dock()
    req = second.request()
    assert second.is_sweep() and second.epochsSpin.isEnabled()
    assert (req.method, req.epochs, req.k_text, req.tile_sizes) == ("deepcluster", 3, "3..7", "48,96")
    assert QgsSettings().value("urbanform/dock/mode") == "sweep"


def test_sweep_mode_validates_k_range_and_tile_sizes_inline(make_dock, sample_layers, tmp_path):
    dock = make_dock()
    set_params(dock, tmp_path / "s.gpkg")
    dock.modeCombo.setCurrentIndex(dock.modeCombo.findData("sweep"))
    assert dock.kSpin.isHidden() and not dock.kRangeWidget.isHidden() and not dock.tileSizesEdit.isHidden()
    assert dock.tileSizeSpin.isHidden() and not dock.overlapSpin.isEnabled() and not dock.areaCombo.isEnabled()
    dock.kFromSpin.setValue(2)
    dock.kToSpin.setValue(4)
    dock.tileSizesEdit.setText("64,128")
    assert dock.runButton.isEnabled(), dock.problemsLabel.text()
    assert wait_for(lambda: dock.estimateLabel.text().startswith("Sweep: 3 K values × 2 tile sizes (64px, 128px)"),
                    10), dock.estimateLabel.text()
    argv = dock.request().argv()
    assert argv[0] == "sweep" and argv[argv.index("--k") + 1] == "2..4"
    dock.kFromSpin.setValue(6)
    assert not dock.runButton.isEnabled() and "runs backwards" in dock.problemsLabel.text()
    dock.kFromSpin.setValue(2)
    for text, expected in (("8,64", "at least 16 px"), ("64,abc", "not a length"), ("", "at least one tile size")):
        dock.tileSizesEdit.setText(text)
        assert not dock.runButton.isEnabled() and expected in dock.problemsLabel.text(), (text, dock.problemsLabel.text())
    dock.tileSizesEdit.setText("64,128")
    assert dock.runButton.isEnabled()
    # the default output follows the mode
    dock.outputFile.setFilePath("")
    dock._raster_changed()
    assert dock.outputFile.filePath().endswith("_sweep.gpkg")
    dock.modeCombo.setCurrentIndex(dock.modeCombo.findData("single"))
    assert dock.outputFile.filePath().endswith("_clusters.gpkg") and not dock.kSpin.isHidden()


def test_sweep_run_loads_layers_restyled_by_the_k_slider_and_shows_the_plots(make_dock, sample_layers, tmp_path,
                                                                             qgis_iface):
    dock = make_dock()
    out = tmp_path / "sw.gpkg"
    set_params(dock, out)
    dock.modeCombo.setCurrentIndex(dock.modeCombo.findData("sweep"))
    dock.kFromSpin.setValue(2)
    dock.kToSpin.setValue(4)
    dock.tileSizesEdit.setText("64,128")
    dock.kSpin.setValue(3)                       # the K shown first
    assert wait_for(lambda: dock.engine_python() is not None, 60)
    ended, progress = [], []
    dock.runFinished.connect(ended.append)
    dock.progressBar.valueChanged.connect(progress.append)
    assert dock.run(), dock.statusLabel.text()
    assert dock.cancelButton.isEnabled()
    assert wait_for(lambda: bool(ended), 300), dock.statusLabel.text()
    assert ended == [True], dock.statusLabel.text()
    assert progress == sorted(progress) and max(progress) == 100 and len(set(progress)) > 5
    group = QgsProject.instance().layerTreeRoot().findGroup("sw")
    assert [c.name() for c in group.children()] == ["sw tiles_64px", "sw tiles_128px"]
    layers = [node.layer() for node in group.children()]
    try:
        assert [layer.featureCount() for layer in layers] == [96, 24]
        for layer in layers:
            assert {"k2", "k3", "k4"} <= set(layer.fields().names())
            assert layer.renderer().type() == "categorizedSymbol" and layer.renderer().classAttribute() == "k3"
            assert len(layer.renderer().categories()) == 3
        assert dock.sweep["ks"] == [2, 3, 4] and dock.sweep_k() == 3 and not dock.sweepGroup.isHidden()
        assert (dock.kSlider.minimum(), dock.kSlider.maximum()) == (0, 2)
        dock.kSlider.setValue(2)                     # K = 4: every layer of the run follows
        assert dock.kValueLabel.text() == "4"
        for layer in layers:
            assert layer.renderer().classAttribute() == "k4" and len(layer.renderer().categories()) == 4
        colors = [{c.value(): c.symbol().color().name() for c in layer.renderer().categories()} for layer in layers]
        assert colors[0] == colors[1] and len(set(colors[0].values())) == 4     # the same palette on every map
        dock.kSlider.setValue(0)
        assert all(layer.renderer().classAttribute() == "k2" for layer in layers)
    finally:
        del layers, group
    # the plots: a non-modal dialog with a tab per PNG
    dialog = dock.plots_dialog
    assert dialog is not None and dialog.isVisible() and not dialog.isModal()
    assert [dialog.tabs.tabText(i) for i in range(dialog.tabs.count())] == [
        "metrics", "lineage 64px", "pca 64px", "lineage 128px", "pca 128px"]
    dialog.hide()
    dock.plotsButton.click()
    assert dock.plots_dialog is dialog and dialog.isVisible()
    assert any("sweep of 3 K values × 2 tile sizes" in m for m in qgis_iface.messageBar().get_messages(Qgis.Success))
    assert sorted(p.name for p in tmp_path.glob("sw*")) == sorted(
        ["sw.gpkg", "sw_metrics.csv", "sw_metrics.png", "sw_manifest.json", "sw_lineage_64px.png",
         "sw_lineage_128px.png", "sw_pca_64px.png", "sw_pca_128px.png"])
    assert [m for m in ("torch", "rasterio", "geopandas", "sklearn", "engine") if m in sys.modules] == []


def test_cancel_a_running_deepcluster_run_leaves_no_output(make_dock, sample_layers, tmp_path, qgis_iface):
    (tmp_path / "out").mkdir()
    dock = make_dock()
    set_params(dock, tmp_path / "out" / "dc.gpkg", k=3)
    dock.methodCombo.setCurrentIndex(dock.methodCombo.findData("deepcluster"))
    dock.epochsSpin.setValue(5)
    assert wait_for(lambda: dock.engine_python() is not None, 60)
    ended = []
    dock.runFinished.connect(ended.append)
    before = project_layer_names()
    assert dock.run(), dock.statusLabel.text()
    # wait until the CNN trains (the epoch stage), then cancel
    assert wait_for(lambda: dock.statusLabel.text().startswith("epoch") and "training" in dock.statusLabel.text(),
                    240), dock.statusLabel.text()
    assert dock.progressBar.value() >= 12
    dock.cancelButton.click()
    assert wait_for(lambda: bool(ended), 120)
    assert ended == [False] and "Cancelled" in dock.statusLabel.text()
    left = sorted(p.name for p in (tmp_path / "out").iterdir())
    # the engine may keep its training checkpoint for --resume; nothing else, and no output
    assert [name for name in left if name != "dc_checkpoint.pt"] == [], left
    assert project_layer_names() == before
    print(f"\nafter cancelling DeepCluster the output folder holds: {left}")


def test_cancelled_sweep_keeps_finished_tile_sizes_and_run_finishes_them(make_dock, sample_layers, tmp_path):
    from dataclasses import replace

    (tmp_path / "out").mkdir()
    dock = make_dock()
    set_params(dock, tmp_path / "out" / "cs.gpkg", backbone="resnet50")
    dock.modeCombo.setCurrentIndex(dock.modeCombo.findData("sweep"))
    dock.kFromSpin.setValue(2)
    dock.kToSpin.setValue(3)
    dock.tileSizesEdit.setText("64,128")                 # the engine does the small tiles first
    # the 64 px features come from the feature cache (a first sweep of 64 px only), the 128 px ones are slow
    warm = subprocess.run([sys.executable, "-m", "engine", "sweep", str(sample_layers.raster_path), "--out",
                           str(tmp_path / "warm.gpkg"), "--k", "2..3", "--tile-size", "64px", "--backbone", "resnet50",
                           "--weights", "none", "--progress", "none"], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert warm.returncode == 0, warm.stderr
    original = dock.request
    dock.request = lambda: replace(original(), extra=["--batch-size", "2"])
    assert wait_for(lambda: dock.engine_python() is not None, 60)
    ended = []
    dock.runFinished.connect(ended.append)
    before = project_layer_names()
    assert dock.run(), dock.statusLabel.text()
    # cancel while the second tile size computes its features
    assert wait_for(lambda: dock.progressBar.value() >= 46 and dock.statusLabel.text().startswith("features"),
                    240), (dock.progressBar.value(), dock.statusLabel.text())
    dock.cancelButton.click()
    assert wait_for(lambda: bool(ended), 120)
    assert ended == [False] and project_layer_names() == before
    status = dock.statusLabel.text()
    assert "finished tile sizes are kept" in status and "tiles_64px; missing: tiles_128px" in status, status
    state = dock.request().interrupted()
    assert state == {"finished": ["tiles_64px"], "missing": ["tiles_128px"]}
    assert "Run will ask whether to finish it" in dock.problemsLabel.text()
    # Run asks; "keep" leaves it, "finish" resumes with --resume and loads both tile sizes
    asked = []
    dock.ask_resume = lambda parent, path, st: asked.append(st) or None
    assert dock.run() is False and "kept" in dock.statusLabel.text()
    dock.ask_resume = lambda parent, path, st: asked.append(st) or True
    dock.request = original
    assert dock.run(), dock.statusLabel.text()
    assert "--resume" in dock.task.args and "--overwrite" not in dock.task.args
    assert wait_for(lambda: len(ended) == 2, 300), dock.statusLabel.text()
    assert ended[1] is True and len(asked) == 2, dock.statusLabel.text()
    group = QgsProject.instance().layerTreeRoot().findGroup("cs")
    assert [c.name() for c in group.children()] == ["cs tiles_64px", "cs tiles_128px"]
    assert [c.layer().featureCount() for c in group.children()] == [96, 24]
    del group
    assert dock.request().interrupted() is None


def test_deepcluster_run_through_the_dock_shows_epochs_and_adds_the_layers(make_dock, sample_layers, tmp_path):
    dock = make_dock()
    out = tmp_path / "dcrun.gpkg"
    set_params(dock, out, k=3, tile=128)                # 24 tiles: one quick epoch
    dock.methodCombo.setCurrentIndex(dock.methodCombo.findData("deepcluster"))
    dock.epochsSpin.setValue(1)
    assert wait_for(lambda: dock.engine_python() is not None, 60)
    ended, progress, statuses = [], [], []
    dock.runFinished.connect(ended.append)
    dock.progressBar.valueChanged.connect(progress.append)
    assert dock.run(), dock.statusLabel.text()
    dock.task.statusChanged.connect(statuses.append)
    assert wait_for(lambda: bool(ended), 300), dock.statusLabel.text()
    assert ended == [True], dock.statusLabel.text()
    assert any(s.startswith("epoch") and "training" in s for s in statuses), statuses[-5:]
    assert any(s.startswith("epoch 1/1") and "loss" in s for s in statuses), statuses[-5:]
    assert progress == sorted(progress) and max(progress) == 100
    group = QgsProject.instance().layerTreeRoot().findGroup("dcrun")
    assert [c.name() for c in group.children()] == ["dcrun tiles", "dcrun clusters (raster)"]
    tiles = group.children()[0].layer()
    try:
        assert tiles.featureCount() == 24 and tiles.renderer().classAttribute() == "cluster"
    finally:
        del tiles, group
    assert (tmp_path / "dcrun_model.pt").is_file() and not (tmp_path / "dcrun_checkpoint.pt").exists()
