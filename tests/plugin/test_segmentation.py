"""Building segmentation in real QGIS (pytest-qgis, offscreen) with the real engine: the dock's Buildings mode
(train, map, evaluate, cancel, bad input), the styled layers, the three Processing algorithms, and the
predicted buildings as the Buildings input of the statistics. Models are tiny (resnet18 from scratch, 128 px
chips, one to four epochs on the 768x512 sample), so the whole file runs in about two minutes on a CPU."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from qgis.core import (Qgis, QgsApplication, QgsFeature, QgsPalettedRasterRenderer, QgsProcessingFeedback,
                       QgsProject, QgsRasterLayer, QgsSingleBandPseudoColorRenderer, QgsSingleSymbolRenderer,
                       QgsVectorLayer)
from qgis.PyQt.QtCore import Qt

from .helpers import BUILDINGS, SAMPLE, clean_settings, engine_here, make_dock, mosaic, sample_layers, wait_for

__all__ = ["clean_settings", "engine_here", "make_dock", "sample_layers"]       # fixtures used here

SCORES = ("iou", "precision", "recall", "f1", "obj_f1")


def project_layer_names() -> list[str]:
    return sorted(layer.name() for layer in QgsProject.instance().mapLayers().values())


def memory_copy(path: Path, name: str) -> QgsVectorLayer:
    """The footprints as a memory layer (not a file: Run must write it to a temporary file for the engine)."""
    source = QgsVectorLayer(str(path), "src", "ogr")
    layer = QgsVectorLayer(f"Polygon?crs={source.crs().authid()}", name, "memory")
    layer.dataProvider().addAttributes(source.fields().toList())
    layer.updateFields()
    layer.dataProvider().addFeatures([QgsFeature(f) for f in source.getFeatures()])
    return layer


def buildings_dock(make_dock, **changes):
    """A dock in Buildings mode with a tiny model's parameters."""
    dock = make_dock()
    dock.modeCombo.setCurrentIndex(dock.modeCombo.findData("buildings"))
    panel = dock.buildings
    panel.encoderCombo.setCurrentIndex(panel.encoderCombo.findData("resnet18"))
    panel.segWeightsCombo.setCurrentIndex(panel.segWeightsCombo.findData("none"))
    panel.chipSpin.setValue(128)
    panel.chipsPerEpochSpin.setValue(16)                # a tiny epoch: seconds on a CPU
    panel.epochsSpin.setValue(changes.get("epochs", 1))
    panel.applyAfterCheck.setChecked(changes.get("apply_after", True))
    assert wait_for(lambda: dock.engine_python() is not None, 60)         # the engine Python is found
    return dock, panel


def log_messages() -> list[str]:
    """Messages of the log tab "Urban Form Mapper" from now on."""
    received: list[str] = []
    QgsApplication.messageLog().messageReceived.connect(
        lambda message, tag, level: received.append(message) if tag == "Urban Form Mapper" else None)
    return received


# -- requests (no engine) --------------------------------------------------------------------------
def test_requests_check_inputs_and_build_the_engine_command_lines(urbanform, tmp_path):
    from urbanform.engine.contract import problems as codes
    from urbanform.plugin.requests import EvaluateSegRequest, SegmentRequest, TrainSegRequest

    def found(req):
        return [(p.param, p.code) for p in req.problems()]

    raster, footprints = str(SAMPLE), str(BUILDINGS)
    req = TrainSegRequest(raster=raster, buildings=footprints, out=str(tmp_path / "m.pt"), encoder="resnet18",
                          weights="none", chip=128, epochs=3, chips_per_epoch=16)
    assert req.problems() == []
    assert req.argv()[:3] == ["train-seg", raster, "--buildings"] and "--epochs" in req.argv()
    assert req.argv()[req.argv().index("--chip") + 1] == "128" and "--minutes" not in req.argv()
    assert req.argv()[req.argv().index("--chips-per-epoch") + 1] == "16"
    assert sorted(req.outputs()) == ["checkpoint", "manifest", "model"]
    minutes = TrainSegRequest(raster=raster, buildings=footprints, out=str(tmp_path / "m.pt"), epochs=None,
                              minutes=2.5)
    assert minutes.argv()[minutes.argv().index("--minutes") + 1] == "2.5" and "--epochs" not in minutes.argv()
    bad = TrainSegRequest(raster=raster, buildings=None, out=str(tmp_path / "m.gpkg"), chip=100, epochs=2,
                          minutes=1, encoder="vgg16")
    assert found(bad) == [("buildings", codes.REQUIRED), ("out", codes.BAD_FORMAT), ("encoder", codes.BAD_CHOICE),
                          ("chip", codes.OUT_OF_RANGE), ("epochs", codes.BAD_FORMAT)]
    problems = "\n".join(p.message for p in bad.problems())
    for text in ("multiple of 32", "either a number of epochs", "must end in .pt"):
        assert text in problems, problems
    (tmp_path / "m.pt").write_bytes(b"")
    assert found(req) == [("out", codes.EXISTS)] and "m.pt already exists" in req.problems()[0].message
    req.overwrite = True
    assert req.problems() == [] and "--overwrite" in req.argv()

    seg = SegmentRequest(raster=raster, model=str(tmp_path / "missing.pt"), out=str(tmp_path / "b.gpkg"))
    assert found(seg) == [("model", codes.NOT_FOUND)] and "does not exist" in seg.problems()[0].message
    seg = SegmentRequest(raster=raster, model=str(tmp_path / "m.pt"), out=str(tmp_path / "b.gpkg"), overlap=16,
                         probability=True, regularize=True)
    assert seg.problems() == []
    argv = seg.argv()
    assert {"--probability", "--regularize"} <= set(argv) and argv[argv.index("--overlap") + 1] == "16"
    assert [p.name for p in seg.outputs().values()] == ["b.gpkg", "b_mask.tif", "b_prob.tif", "b_manifest.json"]
    (tmp_path / "b_mask.tif").write_bytes(b"")
    assert found(seg) == [("out", codes.EXISTS)] and "b_mask.tif already exists" in seg.problems()[0].message

    ev = EvaluateSegRequest(pred=str(tmp_path / "b_mask.tif"), truth=None)
    assert found(ev) == [("truth", codes.REQUIRED)]
    ev.truth = footprints
    assert ev.problems() == [] and ev.argv() == ["evaluate-seg", "--pred", ev.pred, "--truth", footprints]
    assert ev.outputs() == {}


# -- the dock --------------------------------------------------------------------------------------
def test_buildings_mode_shows_bad_input_before_any_run(make_dock, sample_layers, tmp_path, qgis_iface):
    QgsProject.instance().removeMapLayer(sample_layers.buildings_id)       # no footprint layer in the project
    dock, panel = buildings_dock(make_dock)
    assert panel.isVisibleTo(dock) and not dock.kSpin.isVisibleTo(dock) and not dock.runButton.isVisibleTo(dock)
    assert dock.deviceCombo.isVisibleTo(dock) and dock.rasterCombo.isVisibleTo(dock)
    assert panel.modelOutFile.filePath().endswith("_buildings.pt")
    assert ("buildings", "required") in [(p.param, p.code) for p in panel.problems()]
    assert "Building footprints" in panel.segProblemsLabel.text()
    assert not panel.segRunButton.isEnabled() and dock.run() is False
    assert not panel.is_running()

    panel.set_action("apply")
    assert panel.segRunButton.text() == "Map buildings"
    panel.modelFile.setFilePath(str(tmp_path / "nope.pt"))
    assert f"{tmp_path / 'nope.pt'} does not exist." in panel.segProblemsLabel.text()
    assert panel.run() is False

    # an existing output is not an error: Run asks, and "no" keeps it and runs nothing
    model = tmp_path / "m.pt"
    model.write_bytes(b"not a model")
    panel.modelFile.setFilePath(str(model))
    out = tmp_path / "b.gpkg"
    out.write_bytes(b"")
    panel.segOutFile.setFilePath(str(out))
    assert panel.segProblemsLabel.text() == "b.gpkg exists; Run will ask before replacing it."
    asked = []
    dock.confirm_overwrite = lambda parent, path: asked.append(path) or False
    assert wait_for(lambda: dock.engine_python() is not None, 60)
    assert panel.run() is False and asked == [str(out)], panel.segStatusLabel.text()
    assert "existing output was kept" in panel.segStatusLabel.text() and out.read_bytes() == b""

    # back to clustering: its widgets come back
    dock.modeCombo.setCurrentIndex(dock.modeCombo.findData("single"))
    assert not panel.isVisibleTo(dock) and dock.kSpin.isVisibleTo(dock) and dock.runButton.isVisibleTo(dock)


def test_dock_trains_then_maps_and_evaluates_with_progress_and_styled_layers(make_dock, sample_layers, tmp_path,
                                                                             qgis_iface):
    footprints = memory_copy(BUILDINGS, "mapped buildings")       # a memory layer: written to a file at Run
    QgsProject.instance().addMapLayer(footprints)
    dock, panel = buildings_dock(make_dock, epochs=1, apply_after=True)
    panel.footprintsCombo.setLayer(footprints)
    panel.evaluateCombo.setLayer(QgsProject.instance().mapLayer(sample_layers.buildings_id))
    panel.probabilityCheck.setChecked(True)
    tta = panel.segment_request().TOOL.param("tta")               # test-time flips: the contract's words,
    assert panel.ttaCheck.text() == tta.title and panel.ttaCheck.toolTip() == tta.help
    assert not panel.segment_request().tta and "--tta" not in panel.segment_request().argv()
    panel.ttaCheck.setChecked(True)                               # on the command line when ticked, remembered
    assert panel.segment_request().tta and "--tta" in panel.segment_request().argv()
    panel.save_settings()
    assert make_dock().buildings.ttaCheck.isChecked()
    panel.modelOutFile.setFilePath(str(tmp_path / "model.pt"))
    panel.segOutFile.setFilePath(str(tmp_path / "kampala_b.gpkg"))
    assert panel.problems() == [], panel.problems()
    progress, stages, ended = [], [], []
    panel.segProgressBar.valueChanged.connect(progress.append)
    panel.runFinished.connect(ended.append)
    start = panel._start
    panel._start = lambda req: (stages.append(type(req).__name__), start(req))
    log = log_messages()

    assert dock.run(), panel.segStatusLabel.text()
    temp_file = Path(panel.train_request().buildings)
    assert temp_file.is_file() and temp_file.suffix == ".gpkg"        # the memory layer, written for the engine
    assert wait_for(lambda: bool(ended), 180), panel.segStatusLabel.text()
    assert ended == [True], panel.segStatusLabel.text()
    assert stages == ["TrainSegRequest", "SegmentRequest", "EvaluateSegRequest"]
    assert any(0 < v < 100 for v in progress) and progress[-1] == 100
    assert not temp_file.exists()                                      # removed after the run
    assert {p.name for p in tmp_path.iterdir()} >= {"model.pt", "model_checkpoint.pt", "model_manifest.json",
                                                    "kampala_b.gpkg", "kampala_b_mask.tif", "kampala_b_prob.tif",
                                                    "kampala_b_manifest.json", "kampala_b_buildings.qml",
                                                    "kampala_b_mask.qml", "kampala_b_prob.qml"}
    assert json.loads((tmp_path / "kampala_b_manifest.json").read_text())["params"]["tta"] is True

    # the layers: a group named after the run, outlines, semi-transparent mask, unchecked probability
    group = QgsProject.instance().layerTreeRoot().findGroup("kampala_b")
    assert group is not None
    nodes = {node.layer().name(): node for node in group.findLayers()}
    assert sorted(nodes) == ["kampala_b building mask", "kampala_b building probability", "kampala_b buildings"]
    buildings = nodes["kampala_b buildings"].layer()
    assert isinstance(buildings.renderer(), QgsSingleSymbolRenderer)
    assert buildings.renderer().symbol().symbolLayer(0).brushStyle() == Qt.NoBrush
    mask = nodes["kampala_b building mask"].layer()
    assert isinstance(mask.renderer(), QgsPalettedRasterRenderer)
    assert [c.value for c in mask.renderer().classes()] == [1] and mask.renderer().opacity() == 0.5
    prob = nodes["kampala_b building probability"].layer()
    assert isinstance(prob.renderer(), QgsSingleBandPseudoColorRenderer)
    assert (prob.renderer().classificationMin(), prob.renderer().classificationMax()) == (0.0, 1.0)
    assert not nodes["kampala_b building probability"].itemVisibilityChecked()
    assert nodes["kampala_b buildings"].itemVisibilityChecked()
    assert nodes["kampala_b building mask"].itemVisibilityChecked()

    # the evaluation figures: message bar, log tab and status
    assert set(SCORES) <= set(panel.scores)
    successes = qgis_iface.messageBar().get_messages(Qgis.Success)
    shown = [m for m in successes if "IoU" in m and "object F1" in m and "precision" in m and "recall" in m]
    assert shown, successes
    assert any("IoU" in m and "object F1" in m for m in log), log
    assert any("model trained" in m and "validation IoU" in m for m in log), log
    assert "IoU" in panel.segStatusLabel.text()
    assert panel.modelFile.filePath() == str(tmp_path / "model.pt")


def test_training_offers_to_map_the_buildings_with_the_new_model(make_dock, sample_layers, tmp_path):
    import re

    dock, panel = buildings_dock(make_dock, epochs=2, apply_after=False)
    panel.footprintsCombo.setLayer(QgsProject.instance().mapLayer(sample_layers.buildings_id))
    panel.modelOutFile.setFilePath(str(tmp_path / "m.pt"))
    panel.segOutFile.setFilePath(str(tmp_path / "b.gpkg"))
    ended, statuses = [], []
    panel.runFinished.connect(ended.append)
    set_status = panel._set_status
    panel._set_status = lambda text, error=False: (statuses.append(text), set_status(text, error))
    assert panel.run()
    assert wait_for(lambda: bool(ended), 180) and ended == [True], panel.segStatusLabel.text()
    # while training: epochs done of the total, the time per epoch and the expected end (wall clock)
    timed = [t for t in statuses if re.search(r"epoch 1/2 done · [0-9.]+ (s|min)\b.* per epoch · expected end "
                                              r"(\d\d:\d\d \(in .+\)|now)", t)]
    assert timed, statuses
    assert any(t.startswith("Training: epoch 2/2 done") for t in statuses), statuses
    assert not (tmp_path / "b.gpkg").exists() and QgsProject.instance().layerTreeRoot().findGroup("b") is None
    assert panel.offer_button is not None and panel.modelFile.filePath() == str(tmp_path / "m.pt")
    panel.offer_button.click()                          # "Map buildings with it" in the message bar
    assert panel.action() == "apply" and panel.is_running()
    assert wait_for(lambda: len(ended) == 2, 120) and ended[1] is True, panel.segStatusLabel.text()
    assert (tmp_path / "b_mask.tif").is_file() and QgsProject.instance().layerTreeRoot().findGroup("b") is not None


def _cancel_when(panel, ended, predicate, timeout=180):
    """Click Cancel once ``predicate()`` holds; wait until the run has ended."""
    count = len(ended)
    assert wait_for(lambda: predicate() or len(ended) > count, timeout), panel.segStatusLabel.text()
    assert len(ended) == count, "the run ended before it could be cancelled"
    panel.segCancelButton.click()
    assert wait_for(lambda: len(ended) > count, 120)


def test_cancel_while_training_or_mapping_leaves_no_file_and_no_layer(make_dock, sample_layers, tmp_path,
                                                                      tiny_model, qgis_iface):
    out = tmp_path / "out"
    out.mkdir()
    dock, panel = buildings_dock(make_dock, epochs=50, apply_after=True)
    panel.footprintsCombo.setLayer(QgsProject.instance().mapLayer(sample_layers.buildings_id))
    panel.modelOutFile.setFilePath(str(out / "m.pt"))
    panel.segOutFile.setFilePath(str(out / "b.gpkg"))
    ended = []
    panel.runFinished.connect(ended.append)
    before = project_layer_names()

    # during training, after the first epoch (the engine has written its checkpoint by then)
    assert panel.run(), panel.segStatusLabel.text()
    _cancel_when(panel, ended, lambda: "epoch 1/50" in panel.segStatusLabel.text())
    assert ended == [False] and "cancelled" in panel.segStatusLabel.text()
    assert list(out.iterdir()) == [] and project_layer_names() == before
    assert any("cancelled" in m for m in qgis_iface.messageBar().get_messages(Qgis.Info))

    # while mapping (a 4 x 4 mosaic of the sample takes long enough to catch)
    big = QgsRasterLayer(str(mosaic(SAMPLE, tmp_path / "big.tif", 4)), "big")
    QgsProject.instance().addMapLayer(big)
    before = project_layer_names()
    dock.rasterCombo.setLayer(big)
    panel.set_action("apply")
    panel.modelFile.setFilePath(str(tiny_model))
    assert panel.run(), panel.segStatusLabel.text()
    _cancel_when(panel, ended, lambda: panel.stage == "segment" and panel.segStatusLabel.text().startswith("segment"))
    assert ended[1] is False and "cancelled" in panel.segStatusLabel.text()
    assert list(out.iterdir()) == [] and project_layer_names() == before
    assert not panel.is_running() and panel.segRunButton.isEnabled()


# -- Processing and statistics -------------------------------------------------------------------
@pytest.fixture(scope="module")
def provider(urbanform, qgis_processing):
    from urbanform.plugin.provider import UrbanFormProvider

    registry = QgsApplication.processingRegistry()
    assert registry.addProvider(UrbanFormProvider())
    yield registry.providerById("urbanform")
    registry.removeProvider("urbanform")


def run_alg(name: str, params: dict, feedback=None) -> dict:
    import processing

    return processing.run(name, params, feedback=feedback or QgsProcessingFeedback())


class Feedback(QgsProcessingFeedback):
    def __init__(self):
        super().__init__()
        self.infos: list[str] = []
        self.percents: list[float] = []
        self.progressChanged.connect(self.percents.append)

    def pushInfo(self, info):  # noqa: N802 - QGIS API
        self.infos.append(info)
        super().pushInfo(info)


@pytest.fixture(scope="module")
def trained(provider, tmp_path_factory):
    """urbanform:trainsegmentation on the sample from a memory layer of its footprints: a U-Net trained for one
    epoch; (model file, result, feedback)."""
    from urbanform.plugin.processing import segmentation

    out = tmp_path_factory.mktemp("model") / "tiny.pt"
    feedback = Feedback()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("URBANFORM_ENGINE_PYTHON", sys.executable)
        result = run_alg("urbanform:trainsegmentation", {
            "INPUT": str(SAMPLE), "BUILDINGS": memory_copy(BUILDINGS, "footprints"),
            "ENCODER": segmentation.ENCODERS.index("resnet18"), "WEIGHTS": segmentation.WEIGHT_CHOICES.index("none"),
            "CHIP": 128, "EPOCHS": 1, "CHIPS_PER_EPOCH": 16, "OUTPUT": str(out)}, feedback)
    return out, result, feedback


@pytest.fixture
def tiny_model(trained) -> Path:
    return trained[0]


def test_processing_trains_segments_and_evaluates(provider, engine_here, tmp_path, trained):
    ours = [alg for alg in provider.algorithms() if alg.name() in ("trainsegmentation", "segment",
                                                                    "evaluatesegmentation")]
    assert len(ours) == 3
    for algorithm in ours:                 # the help names every parameter and output
        described = list(algorithm.parameterDefinitions()) + list(algorithm.outputDefinitions())
        for item in described:
            assert item.description().split(" (")[0] in algorithm.shortHelpString(), (algorithm.id(), item.name())
    tiny_model, result, feedback = trained
    assert Path(result["OUTPUT"]) == tiny_model and tiny_model.is_file() and Path(result["MANIFEST"]).is_file()
    assert 0 <= result["VAL_IOU"] <= 1 and feedback.percents and max(feedback.percents) == 100
    assert any("validation IoU" in m for m in feedback.infos)
    footprints = memory_copy(BUILDINGS, "footprints")

    feedback = Feedback()
    result = run_alg("urbanform:segment", {"INPUT": str(SAMPLE), "MODEL": str(tiny_model), "PROBABILITY": True,
                                           "OUTPUT": str(tmp_path / "b.gpkg")}, feedback)
    assert result["OUTPUT"] == str(tmp_path / "b.gpkg") and Path(result["MASK"]).name == "b_mask.tif"
    assert Path(result["PROBABILITY_RASTER"]).name == "b_prob.tif" and Path(result["PROBABILITY_RASTER"]).is_file()
    layer = QgsVectorLayer(f"{result['OUTPUT']}|layername=buildings", "b", "ogr")
    assert layer.isValid() and {"area", "orien"} <= set(layer.fields().names())
    assert feedback.percents and max(feedback.percents) >= 99

    feedback = Feedback()
    result = run_alg("urbanform:evaluatesegmentation", {"PRED": str(tmp_path / "b_mask.tif"), "TRUTH": footprints},
                     feedback)
    for key in ("IOU", "PRECISION", "RECALL", "F1", "OBJ_F1"):
        assert 0 <= result[key] <= 1, (key, result)
    assert any("IoU" in m and "object F1" in m for m in feedback.infos), feedback.infos

    with pytest.raises(Exception, match="does not exist"):
        run_alg("urbanform:segment", {"INPUT": str(SAMPLE), "MODEL": str(tmp_path / "none.pt"),
                                      "OUTPUT": str(tmp_path / "c.gpkg")})


def test_predicted_buildings_feed_the_statistics(provider, make_dock, sample_layers, engine_here, tmp_path,
                                                 tiny_model):
    """Segment the sample, then urban-form statistics of a cluster run with the predicted buildings."""
    from urbanform.plugin.processing import cluster

    # a one-epoch model is unsure everywhere: its mean probability as the threshold gives buildings to count
    first = run_alg("urbanform:segment", {"INPUT": str(SAMPLE), "MODEL": str(tiny_model), "PROBABILITY": True,
                                          "OUTPUT": str(tmp_path / "first.gpkg")})
    prob = QgsRasterLayer(first["PROBABILITY_RASTER"], "prob")
    mean = prob.dataProvider().bandStatistics(1).mean
    assert 0 < mean < 1
    del prob
    seg = run_alg("urbanform:segment", {"INPUT": str(SAMPLE), "MODEL": str(tiny_model), "THRESHOLD": mean,
                                        "OUTPUT": str(tmp_path / "pred.gpkg")})
    predicted = QgsVectorLayer(f"{seg['OUTPUT']}|layername=buildings", "predicted buildings", "ogr")
    assert predicted.isValid() and predicted.featureCount() > 0
    QgsProject.instance().addMapLayer(predicted)
    dock = make_dock()                                   # the dock's statistics picker offers them
    assert predicted.id() in [dock.buildingsCombo.layer(i).id() for i in range(dock.buildingsCombo.count())
                              if dock.buildingsCombo.layer(i) is not None]
    run = run_alg("urbanform:cluster", {"INPUT": str(SAMPLE), "K": 3, "BACKBONE": cluster.BACKBONES.index("resnet18"),
                                        "WEIGHTS": cluster.WEIGHT_CHOICES.index("none"),
                                        "OUTPUT": str(tmp_path / "run.gpkg")})
    stats = run_alg("urbanform:statistics", {"RUN": run["OUTPUT"], "BUILDINGS": predicted})
    tiles = QgsVectorLayer(stats["OUTPUT"], "tiles", "ogr")
    assert tiles.isValid() and "bldg_count" in tiles.fields().names()
    assert sum(f["bldg_count"] or 0 for f in tiles.getFeatures()) > 0
    assert json.loads(Path(tmp_path / "run_manifest.json").read_text())


def test_footprint_picker_never_takes_a_runs_output_and_follows_new_footprints(make_dock, sample_layers, tmp_path):
    """The Footprints box starts with the layer that says it holds buildings (or nothing), never a layer a run
    wrote (tiles, clusters, a run's buildings); a footprint layer added later replaces a guess, not a choice;
    a run's output chosen by hand gets an inline warning."""
    from urbanform.plugin.layers.clusters import mark_output

    project = QgsProject.instance()
    # a clustering run's tiles (a GeoPackage with its manifest next to it), added before the footprints
    tiles_gpkg = tmp_path / "kampala_clusters.gpkg"
    src = QgsVectorLayer(str(BUILDINGS), "src", "ogr")
    from qgis.core import QgsCoordinateTransformContext, QgsVectorFileWriter

    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName, options.layerName = "GPKG", "tiles"
    assert QgsVectorFileWriter.writeAsVectorFormatV3(src, str(tiles_gpkg), QgsCoordinateTransformContext(),
                                                     options)[0] == QgsVectorFileWriter.NoError
    (tmp_path / "kampala_clusters_manifest.json").write_text("{}")
    del src
    project.removeMapLayer(sample_layers.buildings_id)
    tiles = QgsVectorLayer(f"{tiles_gpkg}|layername=tiles", "kampala_clusters tiles", "ogr")
    run_buildings = memory_copy(BUILDINGS, "kampala_b buildings")          # a segment run's output, marked
    mark_output(run_buildings, "buildings")
    project.addMapLayers([tiles, run_buildings])
    tiles_id, run_id = tiles.id(), run_buildings.id()
    del tiles, run_buildings

    dock, panel = buildings_dock(make_dock)
    assert panel.footprintsCombo.currentLayer() is None                    # nothing picked by itself
    assert ("buildings", "required") in [(p.param, p.code) for p in panel.problems()]
    # the real footprints arrive: they become the choice
    footprints = QgsVectorLayer(str(BUILDINGS), "OSM buildings", "ogr")
    project.addMapLayer(footprints)
    assert panel.footprintsCombo.currentLayer() is footprints
    assert panel.segProblemsLabel.text() == "" or "Footprints" not in panel.segProblemsLabel.text()
    # the user picks the run's tiles by hand: kept, with a warning in the panel's words
    panel.footprintsCombo.setLayer(project.mapLayer(tiles_id))
    text = panel.segProblemsLabel.text()
    assert "Footprints: 'kampala_clusters tiles' is a result of an Urban Form Mapper run" in text, text
    panel.footprintsCombo.setLayer(project.mapLayer(run_id))
    assert "'kampala_b buildings' is a result" in panel.segProblemsLabel.text()
    # a footprint layer added after the user's choice does not replace it
    more = memory_copy(BUILDINGS, "footprints 2")
    project.addMapLayer(more)
    assert panel.footprintsCombo.currentLayer().id() == run_id
    # a new panel with footprints already in the project picks them, not the run's outputs
    dock2, panel2 = buildings_dock(make_dock)
    assert panel2.footprintsCombo.currentLayer().id() in (footprints.id(), more.id())
    del footprints, more


def test_training_clock_text_for_epochs_and_for_a_time_budget(urbanform):
    from urbanform.plugin.runner.task import TrainingClock

    t = [1000.0]
    clock = TrainingClock(clock=lambda: t[0], now=lambda: t[0])
    assert clock({"stage": "train", "done": 0, "total": 5, "message": ""}).startswith("Training: epoch 1/5 started")
    t[0] += 40
    text = clock({"stage": "train", "done": 1, "total": 5, "message": "epoch 1/5 loss 0.500 val_iou 0.300"})
    assert text.startswith("Training: epoch 1/5 done · 40 s per epoch · expected end ") and "(in 2 min 40 s)" in text
    assert text.endswith("loss 0.500 val_iou 0.300")
    budget = TrainingClock(minutes=10, clock=lambda: t[0], now=lambda: t[0])
    budget({"stage": "train", "done": 0, "total": 0})
    t[0] += 90
    text = budget({"stage": "train", "done": 1, "total": 0, "message": "epoch 1/? loss 0.4 val_iou 0.2"})
    assert "epoch 1 done · 1 min 30 s per epoch · expected end" in text and "(in 8 min 30 s), the time budget" in text
    assert clock({"stage": "write", "done": 1, "total": 1, "message": "wrote m.pt"}) == "write 1/1: wrote m.pt"
