"""The dock's "Buildings" mode: train a building model from a footprint layer, or map the buildings of the
raster with a model file, and optionally score the result against footprints.

The panel builds a ``request.TrainSegRequest``, ``SegmentRequest`` or ``EvaluateSegRequest`` from its widgets
(``train_request()``, ``segment_request()``, ``evaluate_request()``) and nothing else: validation is the
request's ``problems()``, and every run is a ``task.EngineTask`` (engine subprocess, JSON progress, cancel).
The raster, the engine Python and the device come from the dock that embeds the panel. Footprint layers that
are not plain local files (memory or database layers, one layer of a multi-layer GeoPackage) are written to
temporary files at Run, as for the statistics (``stats_inputs``), and removed when the run ends.

A run is a chain: train, then (if "apply after training" is ticked) segment, then (if a layer to evaluate
against is chosen) evaluate. ``runFinished(ok)`` is emitted once, when the chain ends.
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

from qgis.core import Qgis, QgsApplication, QgsMapLayerProxyModel, QgsProject, QgsVectorLayer, QgsWkbTypes
from qgis.gui import QgsFileWidget
from qgis.PyQt import sip, uic
from qgis.PyQt.QtCore import pyqtSignal
from qgis.PyQt.QtWidgets import QPushButton, QWidget

from ...engine.contract import defaults
from ...engine.contract.problems import NO_ENGINE, NOT_LOCAL, REQUIRED, Problem, messages
from .. import log, settings
from ..layers.buildings import add_segment_outputs
from ..layers.clusters import is_run_output
from ..paths import RESOURCES
from ..requests import (SEG_ENCODERS, WEIGHT_WORDS, EvaluateSegRequest, SegmentRequest, TrainSegRequest, outputs,
                        seg_scores_text)
from ..runner.task import EngineTask, TrainingClock
from . import marks, stats_inputs, wording
from .bounds import bound
from .panel import DockPanel

FORM_CLASS, _ = uic.loadUiType(str(RESOURCES / "ui" / "buildings_panel.ui"))

ACTIONS = (("train", "Train a model from footprints"), ("apply", "Map buildings with a model file"))
WEIGHT_LABELS = {"imagenet": "ImageNet (pretrained)", "none": "None (from scratch)", "file": "File…"}
WEIGHT_CHOICES = tuple((w, WEIGHT_LABELS.get(w, w)) for w in (*WEIGHT_WORDS, "file"))     # "file": segWeightsFile
BUDGETS = (("epochs", "epochs"), ("minutes", "minutes"))
KEY = "dock/seg_"
ERROR_STYLE = "color: #b00020;"


FOOTPRINT_NAME = re.compile(r"building|footprint|bldg", re.IGNORECASE)


def footprint_candidate(layers):
    """The first polygon layer whose name says buildings or footprints and that no run of this plugin wrote
    (a run's ``buildings``, ``tiles`` or ``clusters`` never count); None when there is none."""
    for layer in layers:
        if isinstance(layer, QgsVectorLayer) and layer.geometryType() == QgsWkbTypes.PolygonGeometry \
                and FOOTPRINT_NAME.search(layer.name() or "") and not is_run_output(layer):
            return layer
    return None


class BuildingsPanel(DockPanel, QWidget, FORM_CLASS):
    """``dock`` gives the raster layer (``rasterCombo``), the engine (``engine_python()``, ``engine_problem()``),
    the device and seed widgets and the overwrite question (``confirm_overwrite``)."""

    runFinished = pyqtSignal(bool)

    def __init__(self, dock, iface, parent=None):
        super().__init__(parent)
        self.setupUi(self)
        self.dock = dock
        self.iface = iface
        self.task: EngineTask | None = None
        self.stage = ""                               # "train", "segment" or "evaluate" while running
        self.scores: dict | None = None               # the last evaluation's answer
        self.offer_button: QPushButton | None = None  # "Apply it" in the message bar after training
        self._chain: dict = {}                        # the requests of the running chain
        self._run_key: tuple = ()                     # their command lines, as the widgets set them
        # (command lines, problem, widget) of the last run the engine stopped for bad input: the widget stays marked
        # while the widgets ask for those same runs
        self._failed_input: tuple | None = None
        self._temp_layers = stats_inputs.TempLayers()
        self._started = 0.0
        self._auto = {"model": "", "gpkg": ""}        # default outputs (they follow the raster)
        self._auto_footprints = True                  # the footprint layer is the panel's guess, not the user's
        self._init_widgets()
        self.restore_settings()
        self._connect_signals()
        self.raster_changed()
        self._action_changed()

    # -- set-up ------------------------------------------------------------------------------------
    def _init_widgets(self) -> None:
        for value, label in ACTIONS:
            self.actionCombo.addItem(label, value)
        for encoder in SEG_ENCODERS:
            self.encoderCombo.addItem(encoder, encoder)
        for spin, tool, name in ((self.epochsSpin, TrainSegRequest.TOOL, "epochs"),
                                 (self.minutesSpin, TrainSegRequest.TOOL, "minutes")):
            bound(spin, tool.param(name))                        # the ranges the contract declares
        bound(self.chipSpin, TrainSegRequest.TOOL.param("chip"), minimum=0)      # 0: auto, the engine's choice
        bound(self.thresholdSpin, SegmentRequest.TOOL.param("threshold"), minimum=0.0)   # 0: the model's own
        tta = SegmentRequest.TOOL.param("tta")                     # the contract's words for test-time flips
        self.ttaCheck.setText(tta.title)
        self.ttaCheck.setToolTip(tta.help)
        for value, label in WEIGHT_CHOICES:
            self.segWeightsCombo.addItem(label, value)
        for value, label in BUDGETS:
            self.budgetCombo.addItem(label, value)
        for combo in (self.footprintsCombo, self.evaluateCombo):
            combo.setFilters(QgsMapLayerProxyModel.PolygonLayer)
            combo.setAllowEmptyLayer(True)
        self.evaluateCombo.setLayer(None)
        self._set_footprints(footprint_candidate(QgsProject.instance().mapLayers().values()), update=False)
        self.segWeightsFile.setStorageMode(QgsFileWidget.GetFile)
        self.segWeightsFile.setFilter("PyTorch weights (*.pt *.pth *.bin);;All files (*)")
        self.modelOutFile.setStorageMode(QgsFileWidget.SaveFile)
        self.modelOutFile.setFilter("Model file (*.pt)")
        self.modelOutFile.setConfirmOverwrite(False)              # Run asks, once
        self.modelFile.setStorageMode(QgsFileWidget.GetFile)
        self.modelFile.setFilter("Model file (*.pt)")
        self.segOutFile.setStorageMode(QgsFileWidget.SaveFile)
        self.segOutFile.setFilter("GeoPackage (*.gpkg)")
        self.segOutFile.setConfirmOverwrite(False)
        self.segProgressBar.setRange(0, 100)
        self.segProblemsLabel.setStyleSheet(ERROR_STYLE)
        for label in (self.segProblemsLabel, self.segStatusLabel):
            wording.show_whole(label)

    def _connect_signals(self) -> None:
        self.actionCombo.currentIndexChanged.connect(self._action_changed)
        self.segWeightsCombo.currentIndexChanged.connect(self._weights_changed)
        self.budgetCombo.currentIndexChanged.connect(self._budget_changed)
        self.applyAfterCheck.toggled.connect(self._action_changed)
        for signal in (self.actionCombo.currentIndexChanged, self.footprintsCombo.layerChanged,
                       self.encoderCombo.currentIndexChanged, self.segWeightsCombo.currentIndexChanged,
                       self.segWeightsFile.fileChanged, self.epochsSpin.valueChanged, self.minutesSpin.valueChanged,
                       self.budgetCombo.currentIndexChanged, self.chipSpin.valueChanged,
                       self.chipsPerEpochSpin.valueChanged, self.modelOutFile.fileChanged,
                       self.applyAfterCheck.toggled, self.modelFile.fileChanged, self.segOverlapSpin.valueChanged,
                       self.thresholdSpin.valueChanged, self.probabilityCheck.toggled, self.regularizeCheck.toggled,
                       self.ttaCheck.toggled, self.segOutFile.fileChanged, self.evaluateCombo.layerChanged):
            signal.connect(self.update_state)
        self.segRunButton.clicked.connect(self.run)
        self.segCancelButton.clicked.connect(self.cancel)
        self.footprintsCombo.layerChanged.connect(self._footprints_chosen)
        QgsProject.instance().layersAdded.connect(self._layers_added)

    # -- the footprint layer -----------------------------------------------------------------------
    def _set_footprints(self, layer, update: bool = True) -> None:
        """Pick ``layer`` (or none) for the user, who may still choose another."""
        self._auto_footprints = True
        self.footprintsCombo.blockSignals(True)
        self.footprintsCombo.setLayer(layer)
        self.footprintsCombo.blockSignals(False)
        if update:
            self.update_state()

    def _footprints_chosen(self, _layer) -> None:
        self._auto_footprints = False              # the user's choice: later layers never replace it

    def _layers_added(self, layers) -> None:
        """A footprint layer added while nothing (or only the panel's guess) is chosen becomes the choice."""
        if sip.isdeleted(self) or not self._auto_footprints:
            return
        candidate = footprint_candidate(layers)
        if candidate is not None and candidate is not self.footprintsCombo.currentLayer():
            self._set_footprints(candidate)

    def footprints_warning(self) -> str:
        """Why the chosen footprint layer is probably wrong ('' when it looks fine)."""
        layer = self.footprintsCombo.currentLayer()
        if self.action() != "train" or layer is None or not is_run_output(layer):
            return ""
        return (f"Footprints: {layer.name()!r} is a result of an Urban Form Mapper run, not mapped buildings; "
                "choose the building footprint layer you trust (e.g. from OpenStreetMap or a survey).")

    # -- the requests ------------------------------------------------------------------------------
    def action(self) -> str:
        return self.actionCombo.currentData()

    def set_action(self, action: str) -> None:
        self.actionCombo.setCurrentIndex(max(0, self.actionCombo.findData(action)))

    def train_request(self) -> TrainSegRequest:
        layer = self.footprintsCombo.currentLayer()
        minutes = self.budgetCombo.currentData() == "minutes"
        weights = self.segWeightsCombo.currentData()
        return TrainSegRequest(
            raster=self.raster(), out=self.modelOutFile.filePath().strip(),
            buildings=(stats_inputs.local_file(layer) or stats_inputs.temp_path(layer)) if layer else None,
            encoder=self.encoderCombo.currentData(),
            weights=self.segWeightsFile.filePath().strip() if weights == "file" else weights,
            chip=self.chipSpin.value() or None, chips_per_epoch=self.chipsPerEpochSpin.value() or None,
            epochs=None if minutes else self.epochsSpin.value(),
            minutes=self.minutesSpin.value() if minutes else None, device=self.device(),
            seed=self.dock.seedSpin.value())

    def segment_request(self, model: str | None = None) -> SegmentRequest:
        """What mapping the buildings would do; ``model`` replaces the model file (the one being trained)."""
        overlap = self.segOverlapSpin.value()
        return SegmentRequest(
            raster=self.raster(), model=self.modelFile.filePath().strip() if model is None else model,
            out=self.segOutFile.filePath().strip(), overlap=None if overlap < 0 else overlap,
            threshold=self.thresholdSpin.value() or None, probability=self.probabilityCheck.isChecked(),
            regularize=self.regularizeCheck.isChecked(), tta=self.ttaCheck.isChecked(), device=self.device())

    def evaluate_request(self, seg: SegmentRequest) -> EvaluateSegRequest | None:
        """The evaluation after ``seg`` (of its mask, pixel and object scores), or None when no layer is chosen."""
        layer = self.evaluateCombo.currentLayer()
        if layer is None:
            return None
        return EvaluateSegRequest(pred=str(seg.outputs()["mask"]),
                                  truth=stats_inputs.local_file(layer) or stats_inputs.temp_path(layer))

    def _planned(self) -> tuple[dict, dict]:
        """(field -> layer, field -> file) of the layers Run writes to temporary files when they are not files."""
        chosen = {"evaluate": self.evaluateCombo.currentLayer() if self._segments() else None}
        if self.action() == "train":
            chosen["buildings"] = self.footprintsCombo.currentLayer()
        planned = {field: (stats_inputs.local_file(layer) or stats_inputs.temp_path(layer)) if layer else None
                   for field, layer in chosen.items()}
        return chosen, planned

    def _segments(self) -> bool:
        return self.action() == "apply" or self.applyAfterCheck.isChecked()

    def requests(self) -> list:
        """The requests Run would start, in order (an evaluation is checked on the mask the segment writes)."""
        out = []
        model = None
        if self.action() == "train":
            out.append(self.train_request())
            model = out[0].out
        if self._segments():
            out.append(self.segment_request(model))
        return out

    def problems_and_widgets(self) -> list[tuple[Problem, object]]:
        """(problem, the widget that sets its parameter, or None) for each of ``problems()``."""
        from dataclasses import replace

        engine = self.dock.engine_problem(self.dock.engine_python())
        out = [(Problem("engine", NO_ENGINE, engine), None)] if engine else []
        layer = self.dock.rasterCombo.currentLayer()
        if layer is not None and not self.raster():
            out.append((Problem("raster", NOT_LOCAL, f"The layer {layer.name()!r} is not a local raster file; save it "
                                "to a GeoTIFF first (right-click the layer > Export > Save As…) and choose that layer."),
                        self.dock.rasterCombo))
        for req in self.requests():
            training_model = isinstance(req, SegmentRequest) and self.action() == "train"
            if training_model:
                req = replace(req, model="")                # the model is the one training writes
            widgets = self.problem_widgets(req)
            for problem in replace(req, overwrite=True).problems():
                if training_model and problem.param == "model":
                    continue
                if problem.code == NOT_LOCAL and problem.param != "raster":
                    continue                                  # footprint layers: Run writes them first
                if out and problem.param == "raster" and problem.code == REQUIRED:
                    continue
                if problem not in [p for p, _w in out]:
                    out.append((problem, widgets.get(problem.param)))
        return out

    def problem_widgets(self, req) -> dict:
        """Parameter of ``req`` -> the widget that sets it."""
        widgets = {"raster": self.dock.rasterCombo, "device": self.dock.deviceCombo}
        if isinstance(req, TrainSegRequest):
            file_weights = self.segWeightsCombo.currentData() == "file"
            widgets.update(buildings=self.footprintsCombo, encoder=self.encoderCombo, chip=self.chipSpin,
                           weights=self.segWeightsFile if file_weights else self.segWeightsCombo,
                           chips_per_epoch=self.chipsPerEpochSpin, epochs=self.epochsSpin, minutes=self.minutesSpin,
                           out=self.modelOutFile)
        elif isinstance(req, SegmentRequest):
            widgets.update(model=self.modelFile, out=self.segOutFile, overlap=self.segOverlapSpin,
                           threshold=self.thresholdSpin)
        return widgets

    def existing_outputs(self) -> list[Path]:
        return [p for req in self.requests() for p in req.outputs().values() if p.exists()]

    # -- reacting to changes -----------------------------------------------------------------------
    def raster_changed(self, *_args) -> None:
        """Follow the raster with the default outputs, unless the user chose them."""
        raster = self.raster()
        for key, widget, make in (("model", self.modelOutFile, self._proposed_model),
                                  ("gpkg", self.segOutFile, self._proposed_gpkg)):
            current = widget.filePath().strip()
            if not current or current == self._auto[key]:
                self._auto[key] = make(raster)
                if self._auto[key] != current:
                    widget.setFilePath(self._auto[key])
        self.update_state()

    @staticmethod
    def _proposed_model(raster: str) -> str:
        """RASTER_buildings.pt, or _2, _3 ... when any file training writes under that name exists."""
        return outputs.proposed_output(raster, "buildings", lambda path: TrainSegRequest(
            raster="", out=path, buildings=None).outputs().values(), suffix=".pt")

    @staticmethod
    def _proposed_gpkg(raster: str) -> str:
        """RASTER_buildings_map.gpkg, or _2, _3 ... when any file mapping writes under that name exists (not
        RASTER_buildings.gpkg: its RASTER_buildings_manifest.json would replace the model's)."""
        return outputs.proposed_output(raster, "buildings_map", lambda path: SegmentRequest(
            raster="", model="", out=path, probability=True).outputs().values())

    def _action_changed(self, *_args) -> None:
        train = self.action() == "train"
        self.trainGroup.setVisible(train)
        self.applyGroup.setVisible(self._segments())
        for widget in (self.modelLabel, self.modelFile):
            widget.setVisible(not train)                       # training applies its own model
        self.segRunButton.setText("Train" if train else "Map buildings")
        self.update_state()

    def _weights_changed(self, *_args) -> None:
        self.segWeightsFile.setVisible(self.segWeightsCombo.currentData() == "file")

    def _budget_changed(self, *_args) -> None:
        minutes = self.budgetCombo.currentData() == "minutes"
        self.epochsSpin.setVisible(not minutes)
        self.minutesSpin.setVisible(minutes)

    def update_state(self, *_args) -> None:
        pairs = self.problems_and_widgets()
        problems = [p for p, _w in pairs]
        running = self.is_running()
        text = "\n".join(messages(problems))
        if not problems and self.existing_outputs():
            text = f"{self.existing_outputs()[0].name} exists; Run will ask before replacing it."
        warning = self.footprints_warning()
        if warning:
            text = "\n".join(t for t in (warning, text) if t)
        wording.set_text(self.segProblemsLabel, text, "buildings")
        self.segProblemsLabel.setStyleSheet(ERROR_STYLE if problems or warning else "")
        self.segRunButton.setEnabled(not running and not problems)
        if self.dock.is_buildings():             # the dock marks its own widgets in its other modes
            failed = self._failed_input
            if failed and failed[0] == tuple(tuple(r.argv()) for r in self.requests()):
                pairs = [*pairs, failed[1:]]
            marks.mark(self.dock, pairs)
        self.segCancelButton.setEnabled(running and not self.task.isCanceled())

    # -- running -----------------------------------------------------------------------------------
    def run(self) -> bool:
        """Start the chain (train, segment, evaluate as chosen); False (with the reason shown) when it cannot."""
        if self.is_running() or self.dock.is_running():
            return False
        python = self.dock.engine_python()
        problem = self.dock.engine_problem(python)
        if problem:
            self._report(problem, Qgis.Critical)
            return False
        problems = self.problems()
        if problems:
            self._report(problems[0].message, Qgis.Warning)
            return False
        reqs = self.requests()
        run_key = tuple(tuple(r.argv()) for r in reqs)      # before Run adds --overwrite
        existing = self.existing_outputs()
        if existing:
            if not self.dock.confirm_overwrite(self, str(existing[0])):
                self._set_status("Not run: the existing output was kept.")
                return False
            for req in reqs:
                req.overwrite = True
            from .dock import remove_layers_of

            remove_layers_of([p for req in reqs for p in req.outputs().values()])
        chosen, planned = self._planned()
        error = self._temp_layers.write(chosen, planned)
        if error:
            self._temp_layers.remove()
            self._report(error, Qgis.Critical)
            return False
        self.save_settings()
        self.scores = None
        self._run_key, self._failed_input = run_key, None
        self._chain = {"python": python, "train": next((r for r in reqs if isinstance(r, TrainSegRequest)), None),
                       "segment": next((r for r in reqs if isinstance(r, SegmentRequest)), None)}
        if self._chain["segment"] is not None:
            self._chain["evaluate"] = self.evaluate_request(self._chain["segment"])
        self._start(self._chain["train"] or self._chain["segment"])
        return True

    def _start(self, req) -> None:
        stage = {TrainSegRequest: "train", SegmentRequest: "segment", EvaluateSegRequest: "evaluate"}[type(req)]
        verb = {"train": "Training", "segment": "Mapping the buildings of", "evaluate": "Evaluating"}[stage]
        task = EngineTask(f"Urban Form Mapper: {req.name}", self._chain["python"], req.argv(),
                          outputs=list(req.outputs().values()), on_success=self._on_success,
                          on_failure=self._on_failure, message_bar=self.iface.messageBar())
        if hasattr(req, "progress"):
            task.progress_of = req.progress()
        task.panel = "buildings"
        task.describe_failure = self._failure_text
        if stage == "train":
            task.status_of = TrainingClock(req.minutes)      # epochs, time per epoch, expected end
        task.progressChanged.connect(self._on_progress)
        task.statusChanged.connect(self._set_status)
        self.task, self.stage, self._started = task, stage, time.time()
        self._chain["current"] = req
        self.segProgressBar.setValue(0)
        self._set_status(f"{verb} {req.name}…")
        QgsApplication.taskManager().addTask(task)
        self.update_state()

    def cancel(self) -> None:
        """Cancel the running engine (it removes its partial files)."""
        if self.task is not None and not self.task.isCanceled():
            self.task.cancel()
            self._set_status("Cancelling…")
            self.update_state()

    def _on_progress(self, value: float) -> None:
        self.segProgressBar.setValue(int(value))

    def _on_success(self, task: EngineTask) -> None:
        """Main thread: the next step of the chain, or the layers and figures."""
        if sip.isdeleted(self):
            return
        req, finished = self._chain.get("current"), True
        try:
            if isinstance(req, TrainSegRequest):
                finished = self._trained(req)
            elif isinstance(req, SegmentRequest):
                finished = self._segmented(req)
            else:
                self._evaluated(task.result.last_event if task.result else {})
        except Exception:
            self._finish(False)         # EngineTask reports the exception
            raise
        if finished:
            self._finish(True)

    def _trained(self, req: TrainSegRequest) -> bool:
        """After training: the validation figures; then segment (ticked) or offer to. True when the chain ends."""
        text = f"{req.name}: model trained ({req.summary()}), {req.out}."
        log.info(text)
        self.modelFile.setFilePath(req.out)
        if self._chain.get("segment") is not None:
            self._set_status(text)
            self._start(self._chain["segment"])
            return False
        self._set_status(text)
        self._offer_apply(text, req.out)
        return True

    def _offer_apply(self, text: str, model: str) -> None:
        """A message with a button that maps the buildings of the raster with the new model."""
        bar = self.iface.messageBar()
        item = bar.createMessage("Urban Form Mapper", text)
        button = QPushButton("Map buildings with it", item)
        button.clicked.connect(lambda: self.apply_model(model))
        item.layout().addWidget(button)
        bar.pushWidget(item, Qgis.Success, 0)
        self.offer_button = button

    def apply_model(self, model: str) -> bool:
        """Switch to "apply" with ``model`` and run it (the offer after training)."""
        self.set_action("apply")
        self.modelFile.setFilePath(model)
        return self.run()

    def _segmented(self, req: SegmentRequest) -> bool:
        group, layers = add_segment_outputs(req.outputs(), req.name)
        count = layers["buildings"].featureCount()
        del group, layers                                   # the project owns the layers
        text = f"{req.name}: {count} buildings mapped, added to the map ({req.out})."
        log.info(text)
        self._set_status(text)
        evaluation = self._chain.get("evaluate")
        if evaluation is not None:
            self._start(evaluation)
            return False
        log.push(self.iface.messageBar(), text, Qgis.Success, 8)
        return True

    def _evaluated(self, scores: dict) -> None:
        if not isinstance(scores, dict) or "iou" not in scores:
            raise RuntimeError("the evaluation printed no scores")
        self.scores = scores
        name = self._chain["segment"].name
        text = f"{name} against {self.evaluateCombo.currentText() or 'the footprints'}: {seg_scores_text(scores)}"
        log.info(f"{text}\n{json.dumps(scores, default=float)}")
        log.push(self.iface.messageBar(), text, Qgis.Success, 0)
        self._set_status(text)

    def _on_failure(self, task: EngineTask) -> None:
        """Main thread: the task has reported the error or the cancellation already."""
        if sip.isdeleted(self):
            return
        req = self._chain.get("current")
        result = task.result
        if isinstance(req, TrainSegRequest):
            # the engine keeps MODEL_checkpoint.pt (for --resume) after a cancel; this panel offers no resume,
            # so a cancelled or failed training leaves nothing behind
            checkpoint = req.outputs()["checkpoint"]
            try:
                if checkpoint.is_file() and checkpoint.stat().st_mtime >= self._started - 1:
                    checkpoint.unlink()
            except OSError:
                pass
        if result is None or result.cancelled:
            self._set_status(f"{self.stage.capitalize()} cancelled; no output was written.")
        else:
            failed = self._failed(result)
            if failed is not None:                   # bad input the engine found: its widget is marked
                self._failed_input = (self._run_key, *failed)
            self._set_status(f"Failed: {self._failure_text(result)}", error=True)
        self._finish(False)

    def _failed(self, result):
        """(problem, widget) of a bad input the engine pinned on a widget's parameter of the running step."""
        req = self._chain.get("current")
        return marks.failed_input(self.dock, result, self.problem_widgets(req), "buildings") if req else None

    def _failure_text(self, result) -> str:
        """Why the step failed, a bad input named by its widget's label; else the engine's own line."""
        failed = self._failed(result)
        return failed[0].message if failed is not None else result.message

    def _finish(self, ok: bool) -> None:
        self.task, self.stage = None, ""
        self._chain = {}
        self._temp_layers.remove()
        self.segProgressBar.setValue(100 if ok else 0)
        if ok:
            self.raster_changed()                 # default outputs move on to free names
        self.update_state()
        self.runFinished.emit(ok)

    def _set_status(self, text: str, error: bool = False) -> None:
        """The status line, whole and in the panel's words."""
        wording.set_text(self.segStatusLabel, text, "buildings")
        self.segStatusLabel.setStyleSheet(ERROR_STYLE if error else "")

    def _report(self, text: str, level) -> None:
        self._set_status(text, error=level == Qgis.Critical)
        log.push(self.iface.messageBar(), wording.panel_words(text, "buildings"), level,
                 0 if level == Qgis.Critical else 8)

    # -- settings ----------------------------------------------------------------------------------
    def save_settings(self) -> None:
        values = {"action": self.action(), "encoder": self.encoderCombo.currentData(),
                  "weights": self.segWeightsCombo.currentData(), "weights_file": self.segWeightsFile.filePath(),
                  "budget": self.budgetCombo.currentData(), "epochs": self.epochsSpin.value(),
                  "minutes": self.minutesSpin.value(), "chip_size": self.chipSpin.value(),
                  "chips_per_epoch": self.chipsPerEpochSpin.value(),
                  "apply_after": self.applyAfterCheck.isChecked(), "model": self.modelFile.filePath(),
                  "overlap": self.segOverlapSpin.value(), "threshold": self.thresholdSpin.value(),
                  "probability": self.probabilityCheck.isChecked(), "regularize": self.regularizeCheck.isChecked(),
                  "tta": self.ttaCheck.isChecked()}
        for key, value in values.items():
            settings.set(KEY + key, value)

    def restore_settings(self) -> None:
        get = settings.get
        for combo, key, default in ((self.actionCombo, "action", "train"),
                                    (self.encoderCombo, "encoder", defaults.DEFAULT_SEG_ENCODER),
                                    (self.segWeightsCombo, "weights", defaults.DEFAULT_WEIGHTS),
                                    (self.budgetCombo, "budget", "epochs")):
            index = combo.findData(get(KEY + key, default, str))
            if index >= 0:
                combo.setCurrentIndex(index)
        self.segWeightsFile.setFilePath(get(KEY + "weights_file", "", str))
        self.epochsSpin.setValue(get(KEY + "epochs", 10, int))
        self.minutesSpin.setValue(get(KEY + "minutes", 15.0, float))
        train, segment = TrainSegRequest(raster="", buildings=None, out=""), SegmentRequest(raster="", model="", out="")
        # (a new key: the old one holds the box's former default, 256, for anyone who ran it once)
        self.chipSpin.setValue(get(KEY + "chip_size", train.chip or 0, int))
        self.chipsPerEpochSpin.setValue(get(KEY + "chips_per_epoch", 0, int))
        self.applyAfterCheck.setChecked(get(KEY + "apply_after", True, bool))
        self.modelFile.setFilePath(get(KEY + "model", "", str))
        self.segOverlapSpin.setValue(get(KEY + "overlap", -1, int))
        self.thresholdSpin.setValue(get(KEY + "threshold", segment.threshold or 0.0, float))
        self.probabilityCheck.setChecked(get(KEY + "probability", segment.probability, bool))
        self.regularizeCheck.setChecked(get(KEY + "regularize", segment.regularize, bool))
        self.ttaCheck.setChecked(get(KEY + "tta", segment.tta, bool))
        self._weights_changed()
        self._budget_changed()

    # -- closing -----------------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Plugin unload: cancel the run and forget the callbacks into this panel."""
        if self.task is not None:
            self.task.on_success = self.task.on_failure = None
            self.task.cancel()
            self.task = None
        self._chain = {}
        self._temp_layers.remove()
        try:
            QgsProject.instance().layersAdded.disconnect(self._layers_added)
        except TypeError:
            pass
