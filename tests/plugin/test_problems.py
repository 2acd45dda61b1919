"""Problems carry the parameter and a code: the panels decide on codes, mark the widget, Processing names it."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from qgis.core import QgsProject, QgsVectorLayer

from .helpers import clean_settings, engine_here, make_dock, sample_layers, set_params  # noqa: F401 - fixtures

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "resources" / "sample" / "kampala_ug_oam_rgb_z19_epsg3857.tif"


def test_each_kind_of_bad_input_has_its_param_and_code(urbanform, tmp_path):
    from urbanform.engine.contract import problems as codes
    from urbanform.plugin import requests as request

    ok = dict(raster=str(SAMPLE), out=str(tmp_path / "o.gpkg"))
    assert request.ClusterRequest(**ok).problems() == []
    cases = [(dict(raster=""), "raster", codes.REQUIRED), (dict(raster="https://x.org/wms"), "raster", codes.NOT_LOCAL),
             (dict(k=1), "k", codes.OUT_OF_RANGE), (dict(method="dbscan"), "method", codes.BAD_CHOICE),
             (dict(tile_size=8), "tile_size", codes.OUT_OF_RANGE), (dict(tile_unit="ft"), "tile_size", codes.BAD_CHOICE),
             (dict(overlap=64), "overlap", codes.OUT_OF_RANGE), (dict(backbone="x"), "backbone", codes.BAD_CHOICE),
             (dict(weights=str(tmp_path / "w.pt")), "weights", codes.NOT_FOUND),
             (dict(device="tpu"), "device", codes.BAD_CHOICE),
             (dict(method="deepcluster", epochs=0), "epochs", codes.OUT_OF_RANGE),
             (dict(buildings=str(tmp_path / "b.gpkg")), "buildings", codes.NOT_LOCAL),
             (dict(out=""), "out", codes.REQUIRED), (dict(out=str(tmp_path / "o.shp")), "out", codes.BAD_FORMAT),
             (dict(out=str(tmp_path / "no" / "o.gpkg")), "out", codes.NOT_FOUND),
             (dict(out="/proc/o.gpkg"), "out", codes.NOT_WRITABLE)]
    for change, param, code in cases:
        found = [(p.param, p.code) for p in request.ClusterRequest(**{**ok, **change}).problems()]
        assert found == [(param, code)], (change, found)
    (tmp_path / "o_quicklook.png").write_text("x")              # any output of the run counts
    problem, = request.ClusterRequest(**ok).problems()
    assert (problem.param, problem.code) == ("out", codes.EXISTS) and str(problem) == problem.message
    sweep = request.SweepRequest(raster=str(SAMPLE), out=str(tmp_path / "s.gpkg"), k_text="5..3", tile_sizes="x")
    assert [(p.param, p.code) for p in sweep.problems()] == [("k", codes.BAD_FORMAT), ("tile_size", codes.BAD_FORMAT)]
    train = request.TrainSegRequest(raster=str(SAMPLE), buildings=None, out=str(tmp_path / "m.gpkg"), chip=100)
    assert [(p.param, p.code) for p in train.problems()] == [("buildings", codes.REQUIRED), ("out", codes.BAD_FORMAT),
                                                             ("chip", codes.OUT_OF_RANGE)]     # in declared order
    seg = request.SegmentRequest(raster=str(SAMPLE), model="", out=str(tmp_path / "b.gpkg"), threshold=2)
    assert [(p.param, p.code) for p in seg.problems()] == [("model", codes.REQUIRED), ("threshold", codes.OUT_OF_RANGE)]
    stats = request.StatsRequest(run=str(tmp_path / "r.gpkg"))
    assert [(p.param, p.code) for p in stats.problems()] == [("run", codes.NOT_FOUND), ("buildings", codes.REQUIRED)]


def _reworded(function):
    """``function`` with every message of its problems reworded (same params and codes)."""
    return lambda *args: [replace(p, message=f"Reworded #{i}.") for i, p in enumerate(function(*args))]


def test_rewording_messages_does_not_change_run(make_dock, sample_layers, tmp_path, monkeypatch):  # noqa: F811
    from urbanform.plugin.requests import cluster, sweep

    for request in (cluster, sweep):                         # the modules whose requests call the contract's checks
        monkeypatch.setattr(request, "contract_problems", _reworded(request.contract_problems))
    dock = make_dock()
    set_params(dock, tmp_path / "ok.gpkg")
    assert dock.runButton.isEnabled(), dock.problemsLabel.text()
    memory = QgsVectorLayer("Polygon?crs=EPSG:3857", "drawn", "memory")     # Run writes it to a file first
    QgsProject.instance().addMapLayer(memory)
    dock.buildingsCombo.setLayer(memory)
    assert dock.runButton.isEnabled(), dock.problemsLabel.text()
    dock.outputFile.setFilePath(str(tmp_path / "missing" / "o.gpkg"))
    assert not dock.runButton.isEnabled() and "Reworded #0." in dock.problemsLabel.text()
    dock.outputFile.setFilePath(str(tmp_path / "ok.gpkg"))
    assert dock.runButton.isEnabled(), dock.problemsLabel.text()
    dock.rasterCombo.setLayer(None)                          # one problem for no raster, reworded or not
    assert not dock.runButton.isEnabled() and dock.problemsLabel.text() == "Reworded #0."


def test_the_widget_of_the_first_problem_is_marked_until_fixed(make_dock, sample_layers, tmp_path):  # noqa: F811
    from urbanform.plugin.ui import marks

    dock = make_dock()
    set_params(dock, tmp_path / "ok.gpkg")
    dock.overlapSpin.setToolTip("Overlap of the tiles")
    assert dock.overlapSpin.property(marks.PROBLEM) is None
    dock.overlapSpin.setValue(64)
    assert dock.overlapSpin.property(marks.PROBLEM) == "overlap:out_of_range"
    assert "border" in dock.overlapSpin.styleSheet() and "smaller than the tile size" in dock.overlapSpin.toolTip()
    dock.outputFile.setFilePath(str(tmp_path / "missing" / "o.gpkg"))       # first now: out, declared before overlap
    assert dock.outputFile.property(marks.PROBLEM) == "out:not_found" and "does not exist" in dock.outputFile.toolTip()
    assert dock.overlapSpin.property(marks.PROBLEM) is None and dock.overlapSpin.styleSheet() == ""
    assert dock.overlapSpin.toolTip() == "Overlap of the tiles"
    dock.outputFile.setFilePath(str(tmp_path / "ok.gpkg"))
    assert dock.outputFile.property(marks.PROBLEM) is None and dock.overlapSpin.property(marks.PROBLEM)
    dock.overlapSpin.setValue(8)
    assert dock.overlapSpin.property(marks.PROBLEM) is None and dock.overlapSpin.styleSheet() == ""
    assert dock.overlapSpin.toolTip() == "Overlap of the tiles" and dock.runButton.isEnabled()
    # the Buildings panel marks its own widgets
    dock.modeCombo.setCurrentIndex(dock.modeCombo.findData("buildings"))
    panel = dock.buildings
    panel.set_action("train")
    panel.modelOutFile.setFilePath(str(tmp_path / "model.gpkg"))
    panel.update_state()
    assert panel.modelOutFile.property(marks.PROBLEM) == "out:bad_format", panel.segProblemsLabel.text()
    panel.modelOutFile.setFilePath(str(tmp_path / "model.pt"))
    panel.update_state()
    assert panel.modelOutFile.property(marks.PROBLEM) is None


def test_a_processing_error_names_the_parameter(urbanform, tmp_path):
    from urbanform.plugin.processing.cluster import ClusterAlgorithm
    from urbanform.plugin.processing.sweep import SweepAlgorithm
    from urbanform.plugin.requests import ClusterRequest, SweepRequest

    cluster = ClusterAlgorithm()
    cluster.initAlgorithm()
    error = cluster.problems_error(ClusterRequest(raster=str(SAMPLE), out=str(tmp_path / "no" / "o.gpkg"), overlap=64)
                                   .problems())
    lines = str(error).splitlines() if str(error) else error.args[0].splitlines()
    assert lines[0].startswith("Clustered tiles: the folder"), lines          # the label is the algorithm's
    assert lines[1].startswith("Overlap between tiles (same unit): The overlap"), lines    # in declared order
    sweep = SweepAlgorithm()
    sweep.initAlgorithm()
    error = sweep.problems_error(SweepRequest(raster=str(SAMPLE), out=str(tmp_path / "s.gpkg"), tile_sizes="x")
                                 .problems())
    assert (str(error) or error.args[0]).startswith("Tile sizes: 'x' is not a length"), str(error)
