"""The Urban Form Mapper panel: pick a raster and parameters, see what a run would do, run it.

The dock builds a ``request.ClusterRequest`` (or, in "Sensitivity sweep" mode, a
``request.SweepRequest``) from its widgets (``request()``) and nothing else:
validation is the request's ``problems()``, the tile count,
the time estimate and the engine check come from ``probe`` in background
tasks, and a run is a ``task.EngineTask``. The UI thread does no subprocess
work and no I/O beyond trivial path checks (and writing a polygon layer to a
temporary GeoPackage when a run is limited to it).

Engine > Runs on (``engine_choice``) sends the runs to an engine server
instead: the task uploads the inputs and downloads the results to the same
local files, so the layers load as after a local run; the check asks the
server (its version and devices), and there is no tile count.
"""
from __future__ import annotations

import os
import re
import tempfile
from dataclasses import replace
from pathlib import Path

from qgis.core import (Qgis, QgsApplication, QgsCoordinateTransform, QgsCsException, QgsMapLayerProxyModel,
                       QgsProject, QgsRasterLayer, QgsRectangle, QgsVectorFileWriter, QgsVectorLayer)
from qgis.gui import QgsDockWidget, QgsFileWidget
from qgis.PyQt import sip, uic
from qgis.PyQt.QtCore import QTimer, pyqtSignal
from qgis.PyQt.QtWidgets import QDoubleSpinBox, QLabel, QLineEdit, QMessageBox, QPushButton

from ...engine.contract import defaults
from ...engine.contract.problems import (BAD_FORMAT, NO_ENGINE, NO_OVERLAP, NOT_LOCAL, REJECTED, REQUIRED,
                                        Problem, messages)
from .. import log, settings
from ..layers.clusters import add_cluster_outputs, add_clusters_table, add_sweep_outputs, style_sweep_layer
from ..paths import RESOURCES
from ..requests import (BACKBONES, DEEPCLUSTER, DEVICES, LENGTH_UNITS, METHODS, WEIGHT_WORDS, ClusterRequest,
                        SweepRequest, outputs, parse_k)
from ..requests.wording import METHOD_LABELS
from ..runner import dask_setting, engine_env, probe, server_settings, webmap
from ..runner.task import EngineTask
from . import marks, plots, stats_inputs, wording
from .bounds import bound
from .analyses_panel import AnalysesPanel
from .buildings_panel import BuildingsPanel
from .engine_bar import EngineSetupBar
from .engine_choice import EngineChoice

FORM_CLASS, _ = uic.loadUiType(str(RESOURCES / "ui" / "dock.ui"))

AREA_MODES = (("none", "Whole raster"), ("extent", "Current map extent"),
              ("layer", "Polygon layer features"))
MODES = (("single", "Single clustering"), ("sweep", "Sensitivity sweep"), ("buildings", "Buildings (segmentation)"),
         ("analyses", "Analyses (report, change, similar, classify)"))
WEIGHT_LABELS = {"imagenet": "ImageNet (pretrained)", "none": "None (random)", "file": "File…"}
WEIGHT_CHOICES = tuple((w, WEIGHT_LABELS.get(w, w)) for w in (*WEIGHT_WORDS, "file"))     # "file": weightsFile
CLUSTER_DEFAULTS, SWEEP_DEFAULTS = ClusterRequest(raster="", out=""), SweepRequest(raster="", out="")
DEBOUNCE_MS = 500
KEY = "dock/"            # settings under /urbanform/dock/; the engine Python is /urbanform/engine_python
ERROR_STYLE = "color: #b00020;"
STATS_LAYERS = tuple(field for _attr, field, *_ in stats_inputs.PICKERS)
WRITTEN_AT_RUN = (*STATS_LAYERS, "area")      # layers Run writes to files first: not being a file yet is fine


def written_at_run(problem: Problem) -> bool:
    """A layer that is no file yet because Run writes it to one first: no reason to wait."""
    return problem.code == NOT_LOCAL and problem.param in WRITTEN_AT_RUN


def confirm_overwrite(parent, path: str) -> bool:
    """Ask whether to replace an existing output (the dock's default; tests replace ``dock.confirm_overwrite``)."""
    answer = QMessageBox.question(parent, "Urban Form Mapper",
                                  f"{path} (or a file named after it) already exists.\nReplace these outputs?",
                                  QMessageBox.Yes | QMessageBox.No, QMessageBox.No)
    return answer == QMessageBox.Yes


def ask_resume(parent, path: str, state: dict) -> bool | None:
    """An interrupted sweep is in ``path``: True finishes it, False replaces it, None keeps it (tests replace
    ``dock.ask_resume``)."""
    box = QMessageBox(QMessageBox.Question, "Urban Form Mapper",
                      f"{path} holds an interrupted sweep.\nFinished: {', '.join(state['finished']) or 'none'}; "
                      f"missing: {', '.join(state['missing']) or 'none'}.\n\nFinish the missing tile sizes (same "
                      "parameters), or start again and replace it?", QMessageBox.Cancel, parent)
    finish = box.addButton("Finish it", QMessageBox.AcceptRole)
    replace_button = box.addButton("Replace it", QMessageBox.DestructiveRole)
    box.exec_()
    clicked = box.clickedButton()
    return True if clicked is finish else False if clicked is replace_button else None


def raster_path(layer) -> str:
    """The file behind a raster layer, or '' when it is not a local GDAL file (WMS, XYZ, virtual...)."""
    if not isinstance(layer, QgsRasterLayer) or layer.providerType() != "gdal":
        return ""
    source = layer.source()
    return source if Path(source).is_file() else ""


class UrbanFormDock(QgsDockWidget, FORM_CLASS):
    """The panel. ``request()`` is what it would run; ``run()`` runs it; ``runFinished(ok)`` says how it ended."""

    runFinished = pyqtSignal(bool)

    def __init__(self, iface, parent=None):
        super().__init__(parent)
        self.setupUi(self)
        self.iface = iface
        self.confirm_overwrite = confirm_overwrite
        self.ask_resume = ask_resume
        self.task: EngineTask | None = None
        self.engine_info: dict | None = None       # the last engine check ("asked": the Python or server checked)
        self.detected_python: str | None = None
        self._detecting = False
        self._detected = False                      # detection ran: search again only on request (Check, new setting)
        self._checking: str | None = None          # the Python whose check is under way
        self._tiles: dict | None = None            # the last tile probe's answer ...
        self._tiles_for: tuple | None = None       # ... for this (python, probe arguments)
        self._speed_pending: set[tuple] = set()
        self._background: list[probe.BackgroundCall] = []
        self._run_request: ClusterRequest | SweepRequest | None = None
        self._run_key: tuple = ()                     # the running request's command line, as the widgets set it
        # (command line, problem) of the last run the engine stopped for bad input: its widget stays marked while
        # the widgets ask for that same run
        self._failed_input: tuple[tuple, Problem] | None = None
        self._temp_layers = stats_inputs.TempLayers()   # statistics layers written to files for the running run
        self._auto_output = ""
        self.sweep: dict | None = None               # the last sweep loaded: name, ks, layer_ids, plots
        self.plots_dialog = None
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(DEBOUNCE_MS)
        self._timer.timeout.connect(self._refresh)
        self._init_widgets()
        self.restore_settings()
        self._connect_signals()
        self._raster_changed()
        self._area_mode_changed()
        self._web_changed()
        self._refresh()

    # -- set-up ------------------------------------------------------------------------------------
    def _init_widgets(self) -> None:
        self.rasterCombo.setFilters(QgsMapLayerProxyModel.RasterLayer)
        self.areaLayerCombo.setFilters(QgsMapLayerProxyModel.PolygonLayer)
        self.areaLayerCombo.setToolTip("Its selected features, or all of them when none is selected")
        stats_inputs.init_pickers(self)
        for value, label in AREA_MODES:
            self.areaCombo.addItem(label, value)
        for value, label in MODES:
            self.modeCombo.addItem(label, value)
        for spin in (self.kSpin, self.kFromSpin, self.kToSpin):             # K as the contract bounds it
            bound(spin, ClusterRequest.TOOL.param("k"))
        bound(self.epochsSpin, ClusterRequest.TOOL.param("epochs"))
        for method in METHODS:
            self.methodCombo.addItem(METHOD_LABELS.get(method, method), method)
        self.sweepGroup.setVisible(False)
        for unit in LENGTH_UNITS:
            self.tileUnitCombo.addItem(unit, unit)
        for backbone in BACKBONES:
            self.backboneCombo.addItem(backbone, backbone)
        for value, label in WEIGHT_CHOICES:
            self.weightsCombo.addItem(label, value)
        for device in DEVICES[:2]:                  # auto, cpu: until the engine check lists the devices
            self.deviceCombo.addItem(device, device)
        self.weightsFile.setStorageMode(QgsFileWidget.GetFile)
        self.weightsFile.setFilter("PyTorch weights (*.pt *.pth *.bin);;All files (*)")
        self.outputFile.setStorageMode(QgsFileWidget.SaveFile)
        self.outputFile.setFilter("GeoPackage (*.gpkg)")
        self.outputFile.setConfirmOverwrite(False)          # Run asks, once
        self.outputFile.setDialogTitle("Output GeoPackage")
        self.enginePython.setStorageMode(QgsFileWidget.GetFile)
        self.enginePython.setDialogTitle("Engine Python (with torch and rasterio)")
        self.engineGroup.setSaveCollapsedState(False)
        self.engineGroup.setCollapsed(True)
        # "Set up engine" / "Update engine" at the top of the panel, and the installer's settings under Engine
        self.setupBar = EngineSetupBar(self.dockContents)       # above the scrolling form: always in view
        self.mainLayout.insertWidget(0, self.setupBar)
        self.indexUrlEdit = QLineEdit(self)
        self.indexUrlEdit.setObjectName("indexUrlEdit")
        self.indexUrlEdit.setPlaceholderText("PyPI (default); or your mirror's URL")
        self.indexUrlEdit.setToolTip("Package index for Set up engine: a PyPI mirror or proxy of your organisation")
        self.wheelDir = QgsFileWidget(self)
        self.wheelDir.setObjectName("wheelDir")
        self.wheelDir.setStorageMode(QgsFileWidget.GetDirectory)
        self.wheelDir.setToolTip("For sites without internet: a folder of wheels made elsewhere with "
                                 "`pip download --require-hashes -r requirements.lock -d wheels`")
        self.basePython = QgsFileWidget(self)
        self.basePython.setObjectName("basePython")
        self.basePython.setStorageMode(QgsFileWidget.GetFile)
        self.basePython.lineEdit().setPlaceholderText("the Python QGIS runs on (default)")
        self.basePython.setToolTip("The Python interpreter Set up engine builds from (python3, or python.exe)")
        self.engineForm.addRow("Package index", self.indexUrlEdit)
        self.engineForm.addRow("Wheel folder", self.wheelDir)
        self.engineForm.addRow("Build from", self.basePython)
        # the Dask cluster of the runs on this computer (issue 14; empty: one process)
        self.daskEdit = QLineEdit(self)
        self.daskEdit.setObjectName("daskEdit")
        self.daskEdit.setPlaceholderText(dask_setting.PLACEHOLDER)
        self.daskEdit.setToolTip(dask_setting.TIP)
        self.engineForm.addRow("Dask scheduler", self.daskEdit)
        # a web map layer (XYZ, WMS, WMTS) as the raster: written to a GeoTIFF at this ground resolution at Run
        self.webResolutionSpin = QDoubleSpinBox(self)
        self.webResolutionSpin.setObjectName("webResolutionSpin")
        self.webResolutionSpin.setRange(webmap.MIN_RESOLUTION_M, 100.0)
        self.webResolutionSpin.setDecimals(2)
        self.webResolutionSpin.setSingleStep(0.1)
        self.webResolutionSpin.setSuffix(" m")
        self.webResolutionSpin.setValue(webmap.DEFAULT_RESOLUTION_M)
        self.webResolutionSpin.setToolTip("A web map layer is first written to a GeoTIFF (next to the output) at "
                                          "this ground resolution, over the area the run is limited to (the whole "
                                          "raster: its part in the map view)")
        self.webResolutionLabel = QLabel("Ground resolution", self)
        self.webResolutionLabel.setBuddy(self.webResolutionSpin)
        self.webEstimateLabel = QLabel(self)
        self.webEstimateLabel.setObjectName("webEstimateLabel")
        self.webEstimateLabel.setWordWrap(True)
        self.inputForm.insertRow(1, self.webResolutionLabel, self.webResolutionSpin)
        self.inputForm.insertRow(2, "", self.webEstimateLabel)
        # where the engine runs: this computer (the rows above) or a server (its URL and token), at the box's top
        self.engineChoice = EngineChoice(self.engineForm, [self.enginePython, self.indexUrlEdit, self.wheelDir,
                                                           self.basePython, self.daskEdit], self)
        self.progressBar.setRange(0, 100)
        self.problemsLabel.setStyleSheet(ERROR_STYLE)
        for label in (self.estimateLabel, self.problemsLabel, self.statusLabel):
            wording.show_whole(label)                  # long messages are shown whole, never cut
        # "Buildings" mode: its own panel (plugin/ui/buildings_panel.py) below the mode, in place of the clustering
        self.buildings = BuildingsPanel(self, self.iface, self.scrollContents)
        self.scrollLayout.insertWidget(self.scrollLayout.indexOf(self.clusterGroup) + 1, self.buildings)
        # "Analyses" mode: report, change, similar, classify (plugin/ui/analyses_panel.py), below the Buildings panel
        self.analyses = AnalysesPanel(self, self.iface, self.scrollContents)
        self.scrollLayout.insertWidget(self.scrollLayout.indexOf(self.buildings) + 1, self.analyses)
        # after a cluster run or a sweep: its HTML report, written in the background and opened
        self.reportButton = QPushButton("Report", self)
        self.reportButton.setObjectName("reportButton")
        self.reportButton.setToolTip("Write an HTML report of the last run (example tiles, sizes, profiles) and "
                                     "open it")
        self.reportButton.setVisible(False)
        self.buttonLayout.insertWidget(1, self.reportButton)
        self.last_run = ""                           # the GeoPackage of the last successful cluster run or sweep

    def _cluster_widgets(self) -> list:
        """What only clustering uses (hidden in Buildings mode; the raster, device and seed are shared)."""
        names = ("areaLabel", "areaCombo", "areaLayerLabel", "areaLayerCombo", "methodLabel", "methodCombo",
                 "epochsLabel", "epochsSpin", "kLabel", "kSpin", "kRangeLabel", "kRangeWidget", "tileSizeLabel",
                 "tileSizeSpin", "tileSizesEdit", "tileUnitCombo", "overlapLabel", "overlapSpin", "overlapUnitLabel",
                 "backboneLabel", "backboneCombo", "weightsLabel", "weightsCombo", "weightsFile", "statsGroup",
                 "outputGroup", "sweepGroup", "estimateLabel", "problemsLabel", "progressBar", "statusLabel",
                 "runButton", "cancelButton")
        return [getattr(self, name) for name in names]

    def _connect_signals(self) -> None:
        self.rasterCombo.layerChanged.connect(self._raster_changed)
        self.rasterCombo.layerChanged.connect(self.buildings.raster_changed)
        self.areaCombo.currentIndexChanged.connect(self._area_mode_changed)
        self.tileUnitCombo.currentIndexChanged.connect(self._unit_changed)
        self.weightsCombo.currentIndexChanged.connect(self._weights_changed)
        self.modeCombo.currentIndexChanged.connect(self._mode_changed)
        self.methodCombo.currentIndexChanged.connect(self._method_changed)
        self.kSlider.valueChanged.connect(self._sweep_k_changed)
        self.plotsButton.clicked.connect(self.show_plots)
        for signal in (self.rasterCombo.layerChanged, self.areaCombo.currentIndexChanged,
                       self.areaLayerCombo.layerChanged, self.methodCombo.currentIndexChanged,
                       self.modeCombo.currentIndexChanged, self.epochsSpin.valueChanged, self.kFromSpin.valueChanged,
                       self.kToSpin.valueChanged, self.tileSizesEdit.textChanged,
                       self.kSpin.valueChanged, self.tileSizeSpin.valueChanged, self.tileUnitCombo.currentIndexChanged,
                       self.overlapSpin.valueChanged, self.backboneCombo.currentIndexChanged,
                       self.weightsCombo.currentIndexChanged, self.weightsFile.fileChanged,
                       self.deviceCombo.currentIndexChanged, self.seedSpin.valueChanged, self.outputFile.fileChanged,
                       self.enginePython.fileChanged, self.webResolutionSpin.valueChanged, self.daskEdit.textChanged,
                       *stats_inputs.signals(self)):
            signal.connect(self._changed)
        self.iface.mapCanvas().extentsChanged.connect(self._extent_changed)
        self.checkButton.clicked.connect(self.recheck)
        self.engineChoice.changed.connect(self._engine_place_changed)
        self.engineChoice.failed.connect(lambda text: self._report(text, Qgis.Warning))
        self.enginePython.fileChanged.connect(self._engine_setting_changed)
        self.setupBar.engineReady.connect(self._engine_ready)
        self.setupBar.runningChanged.connect(lambda _running: self.update_state())
        self.indexUrlEdit.editingFinished.connect(
            lambda: settings.set("index_url", self.indexUrlEdit.text().strip()))
        self.wheelDir.fileChanged.connect(lambda path: settings.set("wheel_dir", path.strip()))
        self.basePython.fileChanged.connect(lambda path: settings.set("base_python", path.strip()))
        self.runButton.clicked.connect(self.run)
        self.cancelButton.clicked.connect(self.cancel)
        self.reportButton.clicked.connect(self.report)
        self.rasterCombo.layerChanged.connect(self.analyses.raster_changed)
        self.rasterCombo.layerChanged.connect(self._web_changed)

    # -- the request -------------------------------------------------------------------------------
    def is_sweep(self) -> bool:
        return self.modeCombo.currentData() == "sweep"

    def is_buildings(self) -> bool:
        return self.modeCombo.currentData() == "buildings"

    def is_analyses(self) -> bool:
        return self.modeCombo.currentData() == "analyses"

    def panel(self):
        """The panel of the mode when it has its own (Buildings, Analyses), else None (clustering)."""
        return self.buildings if self.is_buildings() else self.analyses if self.is_analyses() else None

    def request(self) -> ClusterRequest | SweepRequest:
        """What a run would do now, from the widgets."""
        layer = self.rasterCombo.currentLayer()
        if self.is_sweep():
            return SweepRequest(
                raster=self.raster_file(layer), out=self.outputFile.filePath().strip(),
                k_text=f"{self.kFromSpin.value()}..{self.kToSpin.value()}", tile_sizes=self.tileSizesEdit.text(),
                tile_unit=self.tileUnitCombo.currentData(), method=self.methodCombo.currentData(),
                epochs=self.epochsSpin.value(), backbone=self.backboneCombo.currentData(), weights=self._weights(),
                device=self.deviceCombo.currentData(), seed=self.seedSpin.value(), **stats_inputs.paths(self))
        mode = self.areaCombo.currentData()
        return ClusterRequest(
            raster=self.raster_file(layer), out=self.outputFile.filePath().strip(), k=self.kSpin.value(),
            method=self.methodCombo.currentData(), epochs=self.epochsSpin.value(), tile_size=self.tileSizeSpin.value(),
            tile_unit=self.tileUnitCombo.currentData(), overlap=self.overlapSpin.value(),
            backbone=self.backboneCombo.currentData(), weights=self._weights(), device=self.deviceCombo.currentData(),
            seed=self.seedSpin.value(),
            extent=self._map_extent(layer) if mode == "extent" else None,
            area=self._area_file(self.areaLayerCombo.currentLayer()) if mode == "layer" else None,
            **stats_inputs.paths(self))

    def raster_file(self, layer) -> str:
        """The raster's file: a local layer's own, or where Run writes a web map layer (next to the output)."""
        if not self.is_web():
            return raster_path(layer)
        out = self.outputFile.filePath().strip()
        folder = Path(out).parent if out else Path(tempfile.gettempdir()) / "urbanform-web"
        return str(folder / f"{Path(out).stem if out else 'urbanform'}_webmap.tif")

    def is_web(self) -> bool:
        """The raster is a web map layer (XYZ, WMS, WMTS) and the mode clusters (single run or sweep)."""
        return self.panel() is None and webmap.is_web_layer(self.rasterCombo.currentLayer())

    def web_plan(self) -> "webmap.WebPlan":
        """What Run writes of the web map layer: over the area limit (the map view, the polygon layer's extent) or,
        for the whole raster, its part in the map view. Raises ValueError (no overlap, a bad resolution)."""
        layer = self.rasterCombo.currentLayer()
        canvas = self.iface.mapCanvas()
        view, view_crs = canvas.extent(), canvas.mapSettings().destinationCrs()
        mode = "none" if self.is_sweep() else self.areaCombo.currentData()
        area = self.areaLayerCombo.currentLayer() if mode == "layer" else None
        if area is not None:
            rect, crs = area.extent(), area.crs()
        elif not view.isEmpty() and view_crs.isValid():
            rect, crs = view, view_crs
        else:
            rect, crs = layer.extent(), layer.crs()
        return webmap.plan(layer, rect, crs, self.webResolutionSpin.value(), QgsProject.instance().transformContext())

    def _web_problem(self) -> Problem | None:
        """Why the web map layer cannot be written as asked (too large, no overlap), naming the fix; else None."""
        try:
            text = self.web_plan().problem()
        except (ValueError, QgsCsException) as exc:
            text = str(exc)
        return Problem("web_resolution", REJECTED, text) if text else None

    def _web_changed(self, *_args) -> None:
        """Show the ground resolution and the estimate only for a web map layer."""
        web = self.is_web()
        for widget in (self.webResolutionLabel, self.webResolutionSpin, self.webEstimateLabel):
            widget.setVisible(web)
        if web:
            try:
                self.webEstimateLabel.setText(f"Written at Run: {self.web_plan().text()}")
            except (ValueError, QgsCsException) as exc:
                self.webEstimateLabel.setText(str(exc))

    def _written_at_run(self, problem: Problem) -> bool:
        """written_at_run, and the raster of a web map layer (Run writes it first)."""
        return written_at_run(problem) or (problem.param == "raster" and problem.code == NOT_LOCAL and self.is_web())

    def _weights(self) -> str:
        choice = self.weightsCombo.currentData()
        return self.weightsFile.filePath().strip() if choice == "file" else choice

    def _map_extent(self, layer) -> tuple[float, float, float, float] | None:
        """The map canvas extent in the raster layer's CRS (None when it cannot be transformed)."""
        if layer is None:
            return None
        canvas = self.iface.mapCanvas()
        rect = canvas.extent()
        source = canvas.mapSettings().destinationCrs()
        target = layer.crs()
        if self.is_web():                    # the GeoTIFF's CRS (a geographic web layer is written in UTM)
            try:
                target = self.web_plan().crs_object()
            except (ValueError, QgsCsException):
                pass
        if source.isValid() and target.isValid() and source != target:
            try:
                rect = QgsCoordinateTransform(source, target, QgsProject.instance()).transformBoundingBox(rect)
            except QgsCsException:
                return None
        return (rect.xMinimum(), rect.yMinimum(), rect.xMaximum(), rect.yMaximum())

    @staticmethod
    def _area_file(layer) -> str | None:
        """Where Run writes the polygon layer for ``--area`` (a temporary GeoPackage)."""
        if layer is None:
            return None
        name = re.sub(r"\W+", "_", layer.id())
        return str(Path(tempfile.gettempdir()) / "urbanform-area" / f"{os.getpid()}_{name}.gpkg")

    def problems(self) -> list[Problem]:
        """Why Run is disabled (empty when it can run). An existing output is no reason: Run asks."""
        req = self.request()
        layer = self.rasterCombo.currentLayer()
        engine = self.engine_problem(self.engine_python())
        out = [Problem("engine", NO_ENGINE, engine)] if engine else []
        if layer is not None and not req.raster:
            out.append(Problem("raster", NOT_LOCAL, f"The layer {layer.name()!r} is not a local raster file (it comes "
                               f"from {layer.providerType()}); save it to a GeoTIFF first (right-click the layer > "
                               "Export > Save As…) and choose that layer."))
        out += [p for p in replace(req, overwrite=True).problems() if not (out and p.param == "raster" and
                p.code == REQUIRED) and not self._written_at_run(p)]
        dask = None if self.is_remote() else dask_setting.problem(self.daskEdit.text())
        if dask:                                  # an Engine setting: said (and marked) before the run's inputs
            out.insert(1 if engine else 0, Problem("dask", BAD_FORMAT, dask))
        web = self._web_problem() if self.is_web() else None
        if web is not None:
            out.append(web)
        if isinstance(req, SweepRequest):
            return out                                   # no area limit and no probe for a sweep
        mode = self.areaCombo.currentData()
        if mode == "extent" and layer is not None and not self.is_web():        # a web layer: its plan says
            if req.extent is None:
                out.append(Problem("extent", NO_OVERLAP, "The map extent cannot be transformed to the raster's CRS; "
                                                         "choose another area limit."))
            elif not layer.extent().intersects(QgsRectangle(*req.extent)):
                out.append(Problem("extent", NO_OVERLAP, "The current map extent does not overlap the raster; zoom to "
                                                         "the raster or choose another area limit."))
        if mode == "layer" and req.area is None:
            out.append(Problem("area", REQUIRED, "Choose a polygon layer for the area limit."))
        out += self._probe_errors(req)
        return out

    def _probe_errors(self, req: ClusterRequest) -> list[Problem]:
        """The engine's own error for bad input (probe exit code 2), for the current parameters."""
        python = self.engine_python()
        if self.is_remote() or isinstance(req, SweepRequest) or self._tiles is None \
                or self._tiles_for != self._tile_key(python, req):
            return []
        if not self._tiles.get("ok"):
            return [Problem("input", REJECTED, self._tiles["error"])] if self._tiles.get("bad_input") else []
        speed = probe.SPEED_CACHE.get(probe.speed_key(python, req, self._tiles["tile_px"]))
        return [Problem("input", REJECTED, speed["error"])] if speed and speed.get("bad_input") else []

    def problem_widgets(self) -> dict:
        """Request parameter -> the widget that sets it (the one a problem with it marks)."""
        sweep = self.is_sweep()
        return {"raster": self.rasterCombo, "out": self.outputFile, "k": self.kFromSpin if sweep else self.kSpin,
                "method": self.methodCombo, "epochs": self.epochsSpin,
                "tile_size": self.tileSizesEdit if sweep else self.tileSizeSpin, "overlap": self.overlapSpin,
                "backbone": self.backboneCombo, "device": self.deviceCombo, "area": self.areaLayerCombo,
                "weights": self.weightsFile if self.weightsCombo.currentData() == "file" else self.weightsCombo,
                "extent": self.areaCombo, "dask": self.daskEdit, "web_resolution": self.webResolutionSpin,
                **{field: getattr(self, attr) for attr, field, *_ in stats_inputs.PICKERS}}

    @staticmethod
    def _tile_key(python: str | None, req: ClusterRequest) -> tuple:
        return (python, tuple(probe.tile_args(req)))

    # -- engine ------------------------------------------------------------------------------------
    def engine_python(self) -> str | None:
        """The Python in the Engine box, else the detected one (None until detection has finished)."""
        return self.enginePython.filePath().strip() or self.detected_python or engine_env.chosen()

    def is_remote(self) -> bool:
        """The engine runs on a server (Engine > Runs on), not on this computer."""
        return self.engineChoice.is_remote()

    def engine_key(self) -> str | None:
        """What the engine check is about: the server's URL, or the engine Python (None: not known yet)."""
        return self.engineChoice.url() if self.is_remote() else self.engine_python()

    def engine_problem(self, python: str | None) -> str | None:
        """Why the engine cannot run (``python`` on this computer, or the server), with the fix; None when it can
        (or is not checked yet)."""
        if self.is_remote():
            url = self.engineChoice.url()
            if not url:
                return "Set the engine server's URL under Engine (Runs on: Server), or run on this computer."
            info = self.engine_info
            if info and info.get("asked") == url and not info.get("ok"):
                return info.get("error", "the engine server does not work")
            return None
        if self.setupBar.is_running():
            return "The engine is being set up (see the top of the panel); Run is available when it is ready."
        if not python:
            if self._detecting or not self._detected:
                return "Still looking for the engine; a moment."
            return "No engine yet: click Set up engine at the top of the panel (no terminal needed)."
        if not Path(python).is_file():
            return engine_env.check(python)["error"]                # no process: the file is missing
        info = self.engine_info
        if info and info.get("asked") == python and not info.get("ok"):
            return info.get("error", "the engine does not work")
        return None

    def check_engine(self) -> None:
        """Check the engine Python (detecting it first when the box is empty), or the server, in the background."""
        if self.is_remote():
            server = server_settings.active_server()          # main thread: QGIS may ask for the master password
            if not server.url:
                return
            self._checking = server.url
            self.engineLabel.setText(f"Checking the engine server {server.url}…")
            self.engineLabel.setStyleSheet("")
            self._start("Urban Form Mapper: check the engine server", lambda c: probe.check_server(server, c),
                        self._check_done)
            return
        python = self.engine_python()
        if python is None:
            self._detect()
            return
        self._checking = python
        self.engineLabel.setText(f"Checking {python}…")
        self.engineLabel.setStyleSheet("")
        self._start("Urban Form Mapper: check the engine", lambda c: probe.check_engine(python, c),
                    self._check_done)

    def recheck(self) -> None:
        """The Check button: check the engine again and forget failed probes (the user may have fixed them)."""
        for key in [k for k, v in probe.SPEED_CACHE.items() if not v.get("ok")]:
            del probe.SPEED_CACHE[key]
        self._tiles = self._tiles_for = None
        if not self.enginePython.filePath().strip() and not self.is_remote():
            self._detected = False                  # look for the engine again: the user may have set one up
            self.detected_python = None
        self.engine_info = None
        self.check_engine()
        self._refresh()

    def _engine_place_changed(self) -> None:
        """Engine > Runs on, the server's URL or its token changed: check the engine there (after the pause)."""
        self.engine_info = None
        self._checking = None
        self._tiles = self._tiles_for = None
        self._changed()

    def _engine_setting_changed(self, *_args) -> None:
        """A new Engine > Python (or none: search again, once)."""
        if not self.enginePython.filePath().strip():
            self._detected = False

    def _engine_ready(self, python: str) -> None:
        """Set up engine finished: use the new engine (unless the user chose another Python) and check it."""
        self.detected_python = python
        self._detected = True
        self.engine_info = None
        self.enginePython.lineEdit().setPlaceholderText(f"detected: {python}")
        self._refresh()

    def _detect(self) -> None:
        if self._detecting:
            return
        self._detecting = True
        self.engineLabel.setText("Looking for the engine Python…")
        self._start("Urban Form Mapper: find the engine", probe.detect_engine, self._detect_done)

    def _detect_done(self, value: dict) -> None:
        self._detecting = False
        self._detected = True
        self.detected_python = value.get("python") if isinstance(value, dict) else None
        self.enginePython.lineEdit().setPlaceholderText(
            f"detected: {self.detected_python}" if self.detected_python else "none found: choose a Python")
        if self.detected_python is None and not self.is_remote():
            self._show_engine({"ok": False, "asked": None,
                               "error": "none found. Set up engine (top of the panel) builds one."})
        self._refresh()

    def _check_done(self, info: dict) -> None:
        if info.get("asked") == self._checking:
            self._checking = None
        if info.get("asked") != self.engine_key():
            return                                                       # the box changed meanwhile
        self._show_engine(info)
        if info.get("ok"):
            self._set_devices(info.get("devices") or ["cpu"])

    def _show_engine(self, info: dict) -> None:
        self.engine_info = info
        if self.is_remote():                         # a server: its version and devices, or why it cannot be used
            self.engineLabel.setText(probe.engine_text(info))
            self.engineLabel.setStyleSheet("" if info.get("ok") else ERROR_STYLE)
            if not info.get("ok"):
                self.engineGroup.setCollapsed(False)
            self.setupBar.hide_unless_running()
            self.update_state()
            return
        managed = engine_env.managed_status()
        is_managed = bool(info.get("asked")) and info.get("asked") == managed["python"]
        text = probe.engine_text(info)
        if info.get("ok") and is_managed:
            text += " · set up by the plugin, " + ("current" if managed["current"] else
                                                   "built from an older lock: Update engine")
        self.engineLabel.setText(text)
        self.engineLabel.setStyleSheet("" if info.get("ok") else ERROR_STYLE)
        if info.get("ok"):
            if is_managed and not managed["current"]:
                self.setupBar.show_outdated(info["asked"])
            else:
                self.setupBar.hide_unless_running()
        else:
            if info.get("asked"):
                self.engineGroup.setCollapsed(False)     # a chosen Python that does not work: show why
            self.setupBar.show_missing(info.get("asked"))
        self.update_state()

    def _set_devices(self, devices: list[str]) -> None:
        current = self.deviceCombo.currentData() or settings.get(KEY + "device", "auto", str)
        self.deviceCombo.blockSignals(True)
        self.deviceCombo.clear()
        for device in ["auto", *[d for d in devices if d != "auto"]]:
            self.deviceCombo.addItem(device, device)
        index = self.deviceCombo.findData(current)
        self.deviceCombo.setCurrentIndex(max(index, 0))
        self.deviceCombo.blockSignals(False)
        if self.deviceCombo.currentData() != current:
            self._changed()

    # -- reacting to changes -----------------------------------------------------------------------
    def _changed(self, *_args) -> None:
        """Validate now (cheap); probe and save after the user paused for DEBOUNCE_MS."""
        self.update_state()
        self._timer.start()

    def _extent_changed(self) -> None:
        if self.areaCombo.currentData() == "extent" or self.is_web():
            self._changed()

    def _raster_changed(self, *_args) -> None:
        """Follow the raster (and the mode) with the default output, unless the user chose an output."""
        current = self.outputFile.filePath().strip()
        if not current or current == self._auto_output:
            req = self.request()
            self._auto_output = outputs.proposed_output(
                raster_path(self.rasterCombo.currentLayer()), "sweep" if self.is_sweep() else "clusters",
                lambda path: replace(req, out=path).outputs().values())
            if self._auto_output != current:
                self.outputFile.setFilePath(self._auto_output)

    def _auto_output_taken(self) -> bool:
        """The proposed output (not one the user chose) names files that exist now: a run wrote them."""
        current = self.outputFile.filePath().strip()
        return bool(current) and current == self._auto_output and outputs.is_taken(
            current, lambda path: replace(self.request(), out=path).outputs().values())

    def _mode_changed(self, *_args) -> None:
        """A sweep takes a K range and a list of tile sizes; it has no overlap or area limit. Buildings mode shows
        its own panel instead of the clustering widgets."""
        buildings, analyses = self.is_buildings(), self.is_analyses()
        for widget in self._cluster_widgets():
            widget.setVisible(not buildings and not analyses)
        self.buildings.setVisible(buildings)
        self.analyses.setVisible(analyses)
        self.reportButton.setVisible(bool(self.last_run) and not buildings and not analyses)
        self.clusterGroup.setTitle("Building segmentation" if buildings else "Analyses" if analyses else "Clustering")
        if self.panel() is not None:
            self.panel().update_state()
            return
        self.sweepGroup.setVisible(bool(self.sweep))
        self._weights_changed()
        sweep = self.is_sweep()
        for widget in (self.kLabel, self.kSpin, self.tileSizeSpin):
            widget.setVisible(not sweep)
        for widget in (self.kRangeLabel, self.kRangeWidget, self.tileSizesEdit):
            widget.setVisible(sweep)
        self.tileSizeLabel.setText("Tile sizes" if sweep else "Tile size")
        for widget in (self.overlapLabel, self.overlapSpin, self.overlapUnitLabel, self.areaLabel, self.areaCombo):
            widget.setEnabled(not sweep)
        self.areaCombo.setToolTip("A sweep always uses the whole raster" if sweep
                                  else "Only tiles whose centre lies in this area")
        self._area_mode_changed()
        self._raster_changed()

    def _method_changed(self, *_args) -> None:
        deep = self.methodCombo.currentData() == DEEPCLUSTER
        self.epochsSpin.setEnabled(deep)
        self.epochsLabel.setEnabled(deep)

    def _area_mode_changed(self, *_args) -> None:
        self.areaLayerCombo.setEnabled(self.areaCombo.currentData() == "layer" and not self.is_sweep())

    def _unit_changed(self, *_args) -> None:
        decimals = 0 if self.tileUnitCombo.currentData() == "px" else 2
        self.tileSizeSpin.setDecimals(decimals)
        self.overlapSpin.setDecimals(decimals)
        self.overlapUnitLabel.setText(self.tileUnitCombo.currentData())

    def _weights_changed(self, *_args) -> None:
        self.weightsFile.setVisible(self.weightsCombo.currentData() == "file")

    def update_state(self) -> None:
        """Show why Run is disabled (or that it will ask before replacing files) and enable it accordingly."""
        problems = self.problems()
        running = self.is_running()
        text = "\n".join(messages(problems))
        req = self.request()
        interrupted = req.interrupted() if isinstance(req, SweepRequest) and not problems else None
        if interrupted:
            text = (f"{Path(req.out).name} holds an interrupted sweep (missing: "
                    f"{', '.join(interrupted['missing']) or 'none'}); Run will ask whether to finish it.")
        elif not problems and any(p.exists() for p in req.outputs().values()):
            text = f"{Path(req.out).name} exists; Run will ask before replacing it."
        text = wording.set_text(self.problemsLabel, text)
        self.problemsLabel.setStyleSheet(ERROR_STYLE if problems else "")
        self.runButton.setEnabled(not running and not problems)
        self.runButton.setToolTip(text if problems else "Run the engine on this raster")
        if self.panel() is None:                 # the Buildings and Analyses panels mark their own widgets
            widgets = self.problem_widgets()
            failed = self._failed_input
            failed = [failed[1]] if failed and failed[0] == tuple(req.argv()) else []
            marks.mark(self, [(p, widgets.get(p.param)) for p in problems + failed])
        self.cancelButton.setEnabled(running and not self.task.isCanceled())
        self.reportButton.setEnabled(not running and not self.analyses.is_running())

    def _refresh(self) -> None:
        """After a pause: remember the parameters, check a new engine Python, count tiles."""
        if not self.is_running() and self._auto_output_taken():
            self._raster_changed()                  # written meanwhile (another run, Processing): a free name
        self.save_settings()
        if self.is_remote():
            self._refresh_remote()
            return
        python = self.engine_python()
        if python is None:
            if not self._detected:
                self._detect()                   # once; again only on Check or a new Engine setting
            self.update_state()
            return
        if python != self._checking and (self.engine_info is None or self.engine_info.get("asked") != python):
            self.check_engine()
        if self.panel() is not None:             # no tile count or time estimate for segmentation or analyses
            self.panel().update_state()
            return
        req = self.request()
        inputs_ok = not [p for p in replace(req, overwrite=True, out="").problems()
                         if not (p.param == "out" and p.code == REQUIRED) and not self._written_at_run(p)]
        if isinstance(req, SweepRequest):
            self.estimateLabel.setText(sweep_text(req) if inputs_ok else "")
            self.update_state()
            return
        self._web_changed()
        if self.is_web():                        # no tile count before the GeoTIFF exists: its size instead
            self.estimateLabel.setText(self.webEstimateLabel.text() if inputs_ok else "")
            self.update_state()
            return
        key = self._tile_key(python, req)
        if not inputs_ok:
            self.estimateLabel.setText("")
        elif key != self._tiles_for:
            self.estimateLabel.setText("Counting tiles…")
            args = probe.tile_args(req)
            self._start("Urban Form Mapper: count tiles",
                        lambda c: {"key": key, "answer": probe.probe(python, args, c)}, self._tiles_done)
        else:
            self._update_estimate()
        self.update_state()

    def _refresh_remote(self) -> None:
        """_refresh for runs on a server: check it once per URL; no tile count (the raster is on this computer,
        the engine there)."""
        url = self.engineChoice.url()
        if url and url != self._checking and (self.engine_info is None or self.engine_info.get("asked") != url):
            self.check_engine()
        if self.panel() is not None:
            self.panel().update_state()
            return
        req = self.request()
        if isinstance(req, SweepRequest):
            inputs_ok = not [p for p in replace(req, overwrite=True, out="").problems()
                             if not (p.param == "out" and p.code == REQUIRED) and not self._written_at_run(p)]
            self.estimateLabel.setText(sweep_text(req) if inputs_ok else "")
        else:
            self.estimateLabel.setText(f"Runs on the engine server {url}" if url else "")
        self.update_state()

    def _tiles_done(self, value: dict) -> None:
        self._tiles_for, self._tiles = value["key"], value["answer"]
        self._update_estimate()
        self.update_state()

    def _update_estimate(self) -> None:
        """The tile count and time estimate for the current parameters; starts the speed probe when needed."""
        python, req = self.engine_python(), self.request()
        if self.is_remote() or isinstance(req, SweepRequest) or self._tiles is None \
                or self._tiles_for != self._tile_key(python, req):
            return
        tiles = self._tiles
        if not tiles.get("ok"):
            self.estimateLabel.setText("" if tiles.get("bad_input") else f"No tile count: {tiles.get('error')}")
            return
        key = probe.speed_key(python, req, tiles["tile_px"])
        speed = probe.SPEED_CACHE.get(key)
        if speed is None and key not in self._speed_pending and not self.is_running():
            self._speed_pending.add(key)
            args = probe.speed_args(req, tiles["tile_px"])
            self._start("Urban Form Mapper: time the model",
                        lambda c: {"key": key, "answer": probe.probe(python, args, c, probe.SPEED_TIMEOUT_S)},
                        self._speed_done)
        text = probe.estimate_text(tiles, speed, limited=bool(req.area))
        if req.method == DEEPCLUSTER:      # the probe times feature extraction only, not training
            text = text.replace(" · about ", " · features about ") + \
                f" · DeepCluster then trains {req.epochs} epochs (much longer)"
        self.estimateLabel.setText(text)

    def _speed_done(self, value: dict) -> None:
        key, answer = value["key"], value["answer"]
        self._speed_pending.discard(key)
        if not answer.get("cancelled"):
            probe.SPEED_CACHE[key] = answer
        self._update_estimate()
        self.update_state()

    def _start(self, description: str, function, on_done) -> None:
        """Run ``function(is_cancelled)`` in a background task; ``on_done(value)`` on the main thread."""
        self._background = [t for t in self._background if not sip.isdeleted(t)]
        call = probe.BackgroundCall(description, function)
        call.done.connect(on_done)
        self._background.append(call)
        QgsApplication.taskManager().addTask(call)

    # -- running -----------------------------------------------------------------------------------
    def is_running(self) -> bool:
        return self.task is not None

    def run(self) -> bool:
        """Start the engine on ``request()``; False (with the reason shown) when it cannot start."""
        if self.panel() is not None:
            return self.panel().run()
        if self.is_running() or self.buildings.is_running() or self.analyses.is_running():
            return False
        python = self.engine_python()
        problem = self.engine_problem(python)
        if problem:
            self._show_engine({"ok": False, "asked": self.engine_key(), "error": problem})
            self._report(problem, Qgis.Critical)
            return False
        problems = self.problems()
        if problems:
            self._report(problems[0].message, Qgis.Warning)
            return False
        req = self.request()
        run_key = tuple(req.argv())                 # before Run adds --overwrite or --resume
        interrupted = req.interrupted() if isinstance(req, SweepRequest) else None
        resume = self.ask_resume(self, req.out, interrupted) if interrupted else False
        if interrupted and resume is None:
            self.statusLabel.setText("Not run: the interrupted sweep was kept.")
            return False
        if resume:
            req.resume = True
            remove_layers_of(req.outputs().values())
        elif any(p.exists() for p in req.outputs().values()) or (self.is_web() and Path(req.raster).exists()):
            if not interrupted and not self.confirm_overwrite(self, req.out):
                self.statusLabel.setText("Not run: the existing output was kept.")
                return False
            req.overwrite = True
            remove_layers_of(req.outputs().values())
        if getattr(req, "area", None) and not self._write_area(self.areaLayerCombo.currentLayer(), req.area):
            return False
        error = self._temp_layers.write(stats_inputs.layers(self), stats_inputs.paths(self))
        if error:
            self._temp_layers.remove()
            self._report(error, Qgis.Critical)
            return False
        self.save_settings()
        if self.is_web():
            return self._write_web_then_run(req, python, run_key)
        self._start_engine(req, python, run_key)
        return True

    def _write_web_then_run(self, req, python: str, run_key: tuple) -> bool:
        """Write the web map layer to ``req.raster`` in the background (progress in the dock), then run ``req``."""
        try:
            plan = self.web_plan()
        except (ValueError, QgsCsException) as exc:
            self._report(str(exc), Qgis.Warning)
            return False
        task = webmap.WebMapTask(plan, req.raster, overwrite=bool(req.overwrite or getattr(req, "resume", False)))
        task.progressChanged.connect(self._on_progress)
        task.statusChanged.connect(self._on_status)
        task.done.connect(lambda path, error: self._web_written(req, python, run_key, path, error))
        self.task, self._run_request, self._run_key, self._failed_input = task, req, run_key, None
        self.progressBar.setValue(0)
        self._set_status(f"Writing the web map layer: {plan.text()}")
        QgsApplication.taskManager().addTask(task)
        self.update_state()
        return True

    def _web_written(self, req, python: str, run_key: tuple, path: str, error: str) -> None:
        """Main thread: the GeoTIFF is written (start the engine on it), or why not (cancelled, failed)."""
        if sip.isdeleted(self):
            return
        self.task = None
        if not path:
            self._report(f"Web map layer: {error}", Qgis.Info if error.startswith("cancelled") else Qgis.Critical)
            self._finish_run(False)
            return
        log.info(f"Web map layer written to {path}")
        self._start_engine(req, python, run_key)

    def _start_engine(self, req, python: str, run_key: tuple) -> None:
        """Start the engine task of ``req``."""
        task = EngineTask(f"Urban Form Mapper: {req.name}", python, req.argv(), outputs=list(req.outputs().values()),
                          on_success=self._on_success, on_failure=self._on_failure,
                          message_bar=self.iface.messageBar())
        if isinstance(req, SweepRequest):
            task.describe_cancel = lambda: sweep_cancel_text(req)
        task.describe_failure = self._failure_text
        task.progressChanged.connect(self._on_progress)
        task.statusChanged.connect(self._on_status)
        self.task, self._run_request, self._run_key, self._failed_input = task, req, run_key, None
        self.progressBar.setValue(0)
        self._set_status(f"Starting {req.name}…")
        QgsApplication.taskManager().addTask(task)
        self.update_state()

    def _write_area(self, layer: QgsVectorLayer, path: str) -> bool:
        """Write the polygon layer (its selection, if any) to ``path`` for ``--area``."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        options = QgsVectorFileWriter.SaveVectorOptions()
        options.driverName = "GPKG"
        options.layerName = "area"
        options.onlySelectedFeatures = layer.selectedFeatureCount() > 0
        options.actionOnExistingFile = QgsVectorFileWriter.CreateOrOverwriteFile
        error, message, *_ = QgsVectorFileWriter.writeAsVectorFormatV3(
            layer, path, QgsProject.instance().transformContext(), options)
        if error != QgsVectorFileWriter.NoError:
            self._report(f"The polygon layer {layer.name()!r} could not be written for the run: {message}",
                         Qgis.Critical)
            return False
        return True

    def cancel(self) -> None:
        """Cancel the running engine (it removes its partial files)."""
        self.buildings.cancel()
        self.analyses.cancel()
        if self.task is not None and not self.task.isCanceled():
            self.task.cancel()
            self._set_status("Cancelling…")
            self.update_state()

    def _on_progress(self, value: float) -> None:
        self.progressBar.setValue(int(value))

    def _on_status(self, text: str) -> None:
        self._set_status(text)

    def _on_success(self, task: EngineTask) -> None:
        """Main thread, from the task's finished(): add the styled layers."""
        if sip.isdeleted(self):
            return
        req, ok = self._run_request, False
        try:
            self.last_run = req.out                     # the Report button explains it
            if isinstance(req, SweepRequest):
                self._load_sweep(req)
                ok = True
                return
            group, tiles, _raster = add_cluster_outputs(req.outputs(), req.name)
            count = tiles.featureCount()
            table = add_clusters_table(req.out, req.name, group) if req.with_stats else None
            del group, tiles, _raster, table                    # the project owns the layers
            text = f"{req.name}: {count} tiles in up to {req.k} clusters, added to the map ({req.out})."
            if req.with_stats:
                self._close_plots()
                self.plots_dialog = plots.show_plots(req.name, req.plots(), self, "statistics")
            log.push(self.iface.messageBar(), text, Qgis.Success, 8)
            self._set_status(text)
            ok = True
        finally:       # an exception goes on to EngineTask, which reports it
            self._finish_run(ok)

    def report(self) -> bool:
        """The HTML report of the last cluster run or sweep, written in the background and then opened."""
        return self.analyses.report(self.last_run)

    # -- sweep results -------------------------------------------------------------------------------
    def _load_sweep(self, req: SweepRequest) -> None:
        """Main thread: the sweep's layers in a group named after the run, styled on K; the plots opened."""
        chosen = settings.get(KEY + "sweep_k", self.kSpin.value(), int)
        group, layers, ks = add_sweep_outputs(req.outputs()["gpkg"], req.name, chosen)
        k = chosen if chosen in ks else ks[0]
        self.sweep = {"name": req.name, "ks": ks, "layer_ids": [layer.id() for layer in layers],
                      "plots": req.plots()}
        sizes = ", ".join(layer.name()[len(req.name) + 1:] for layer in layers)
        del group, layers                                   # the project owns the layers
        self.kSlider.blockSignals(True)
        self.kSlider.setRange(0, len(ks) - 1)
        self.kSlider.setValue(ks.index(k))
        self.kSlider.blockSignals(False)
        self.kValueLabel.setText(str(k))
        self.sweepLabel.setText(f"{req.name}: {sizes}; K {ks[0]}–{ks[-1]}")
        self.sweepGroup.setVisible(True)
        state = req.interrupted()
        missing = ", ".join(state["missing"]) if state else ""
        text = (f"{req.name}: sweep of {len(ks)} K values × {len(self.sweep['layer_ids'])} tile sizes added to the "
                f"map ({req.out}).") + (f" Missing: {missing}." if missing else "")
        log.push(self.iface.messageBar(), text, Qgis.Warning if missing else Qgis.Success, 8)
        self._set_status(text)
        self.show_plots()

    def sweep_k(self) -> int | None:
        """The K the sweep layers show (None before a sweep was loaded)."""
        if not self.sweep:
            return None
        return self.sweep["ks"][self.kSlider.value()]

    def _sweep_k_changed(self, index: int) -> None:
        """Restyle every layer of the loaded sweep on ``k<K>``."""
        if not self.sweep or not 0 <= index < len(self.sweep["ks"]):
            return
        k = self.sweep["ks"][index]
        self.kValueLabel.setText(str(k))
        project = QgsProject.instance()
        view = self.iface.layerTreeView()
        for layer_id in self.sweep["layer_ids"]:
            layer = project.mapLayer(layer_id)
            if layer is not None and style_sweep_layer(layer, k) and view is not None:
                view.refreshLayerSymbology(layer_id)          # the legend shows the new classes
        settings.set(KEY + "sweep_k", k)

    def show_plots(self) -> None:
        """The sweep's PNG plots in a non-modal dialog (or the system viewer, per setting)."""
        if not self.sweep:
            return
        if self.plots_dialog is not None and not sip.isdeleted(self.plots_dialog) \
                and self.plots_dialog.run_name == self.sweep["name"]:
            self.plots_dialog.show()
            self.plots_dialog.raise_()
            return
        self._close_plots()
        self.plots_dialog = plots.show_plots(self.sweep["name"], self.sweep["plots"], self)

    def _close_plots(self) -> None:
        if self.plots_dialog is not None and not sip.isdeleted(self.plots_dialog):
            self.plots_dialog.close()
            self.plots_dialog.deleteLater()
        self.plots_dialog = None

    def _on_failure(self, task: EngineTask) -> None:
        """Main thread: the task has reported the error or the cancellation in the message bar already."""
        if sip.isdeleted(self):
            return
        result = task.result
        if result is None or result.cancelled:
            req = self._run_request
            text = sweep_cancel_text(req) if isinstance(req, SweepRequest) else "cancelled; no output was written."
            self._set_status(text[:1].upper() + text[1:])
        else:
            failed = marks.failed_input(self, result, self.problem_widgets())
            if failed is not None:                   # bad input the engine found: its widget is marked
                self._failed_input = (self._run_key, failed[0])
            self._set_status(f"Failed: {self._failure_text(result)}", error=True)
        self._finish_run(False)

    def _failure_text(self, result) -> str:
        """Why the run failed: a bad input the engine pinned on a widget's parameter is named by the widget's label
        ('Clusters (K): 8 is larger than the number of valid tiles (3). ...'), else the engine's own line."""
        failed = marks.failed_input(self, result, self.problem_widgets())
        return failed[0].message if failed is not None else result.message

    def _finish_run(self, ok: bool) -> None:
        self.task = self._run_request = None
        self.reportButton.setVisible(ok and bool(self.last_run) and self.panel() is None)
        self._temp_layers.remove()
        self.progressBar.setValue(100 if ok else 0)
        if ok and self._auto_output_taken():
            self._raster_changed()                               # the next free name, so nothing is replaced
        self.update_state()
        self._update_estimate()
        self.runFinished.emit(ok)

    def _set_status(self, text: str, error: bool = False) -> None:
        """The status line, whole and in the dock's words."""
        wording.set_text(self.statusLabel, text)
        self.statusLabel.setStyleSheet(ERROR_STYLE if error else "")

    def _report(self, text: str, level) -> None:
        """A message in the dock and in QGIS's message bar (with the whole text in the log panel)."""
        self._set_status(text, error=level == Qgis.Critical)
        log.push(self.iface.messageBar(), wording.panel_words(text), level, 0 if level == Qgis.Critical else 8)

    # -- settings ----------------------------------------------------------------------------------
    def save_settings(self) -> None:
        """Remember the parameters (QgsSettings /urbanform/); the output is not remembered: it follows the raster."""
        values = {"mode": self.modeCombo.currentData(), "method": self.methodCombo.currentData(),
                  "epochs": self.epochsSpin.value(), "k_from": self.kFromSpin.value(), "k_to": self.kToSpin.value(),
                  "tile_sizes": self.tileSizesEdit.text(), "k": self.kSpin.value(),
                  "tile_size": self.tileSizeSpin.value(), "tile_unit": self.tileUnitCombo.currentData(),
                  "overlap": self.overlapSpin.value(), "backbone": self.backboneCombo.currentData(),
                  "weights": self.weightsCombo.currentData(), "weights_file": self.weightsFile.filePath(),
                  "device": self.deviceCombo.currentData(), "seed": self.seedSpin.value(),
                  "area": self.areaCombo.currentData(), "raster": raster_path(self.rasterCombo.currentLayer())}
        for key, value in values.items():
            settings.set(KEY + key, value)
        stats_inputs.save(self)
        settings.set("engine_python", self.enginePython.filePath().strip())
        settings.set("index_url", self.indexUrlEdit.text().strip())
        settings.set(KEY + "web_resolution", self.webResolutionSpin.value())
        dask_setting.save(self.daskEdit.text())              # a valid address or none (a bad one is marked)

    def restore_settings(self) -> None:
        get = settings.get
        single, sweep = CLUSTER_DEFAULTS, SWEEP_DEFAULTS         # the contract's defaults (a fresh profile)
        _select(self.methodCombo, get(KEY + "method", single.method, str))
        self.epochsSpin.setValue(get(KEY + "epochs", single.epochs, int))
        self._method_changed()
        self.kSpin.setValue(get(KEY + "k", single.k, int))
        self.kFromSpin.setValue(get(KEY + "k_from", min(parse_k(sweep.k_text)), int))
        self.kToSpin.setValue(get(KEY + "k_to", max(parse_k(sweep.k_text)), int))
        self.tileSizesEdit.setText(get(KEY + "tile_sizes", sweep.tile_sizes, str))
        _select(self.modeCombo, get(KEY + "mode", "single", str))
        self._mode_changed()
        _select(self.tileUnitCombo, get(KEY + "tile_unit", single.tile_unit, str))
        self._unit_changed()
        self.tileSizeSpin.setValue(get(KEY + "tile_size", float(single.tile_size), float))
        self.overlapSpin.setValue(get(KEY + "overlap", float(single.overlap), float))
        _select(self.backboneCombo, get(KEY + "backbone", defaults.DEFAULT_BACKBONE, str))
        _select(self.weightsCombo, get(KEY + "weights", defaults.DEFAULT_WEIGHTS, str))
        self.weightsFile.setFilePath(get(KEY + "weights_file", "", str))
        self._weights_changed()
        device = get(KEY + "device", single.device, str)
        if self.deviceCombo.findData(device) < 0:
            self.deviceCombo.addItem(device, device)        # until the engine check lists the real devices
        _select(self.deviceCombo, device)
        self.seedSpin.setValue(get(KEY + "seed", single.seed, int))
        _select(self.areaCombo, get(KEY + "area", "none", str))
        self.enginePython.setFilePath(get("engine_python", "", str))
        self.webResolutionSpin.setValue(get(KEY + "web_resolution", webmap.DEFAULT_RESOLUTION_M, float))
        self.daskEdit.setText(get(dask_setting.KEY, "", str))
        self.indexUrlEdit.setText(get("index_url", "", str))
        self.wheelDir.setFilePath(get("wheel_dir", "", str))
        self.basePython.setFilePath(get("base_python", "", str))
        raster = get(KEY + "raster", "", str)
        for layer in QgsProject.instance().mapLayers().values():
            if raster and isinstance(layer, QgsRasterLayer) and layer.source() == raster:
                self.rasterCombo.setLayer(layer)
                break
        stats_inputs.restore(self)

    # -- closing -----------------------------------------------------------------------------------
    def closeEvent(self, event) -> None:  # noqa: N802 - Qt API
        """Closing the panel cancels a run."""
        self.cancel()
        self.save_settings()
        super().closeEvent(event)

    def shutdown(self) -> None:
        """Plugin unload: cancel the run and background look-ups and forget the callbacks into this dock."""
        self._timer.stop()
        try:
            self.iface.mapCanvas().extentsChanged.disconnect(self._extent_changed)
        except TypeError:
            pass
        if self.task is not None:
            self.task.on_success = self.task.on_failure = None
            self.task.cancel()
            self.task = self._run_request = None
        self._temp_layers.remove()
        self.buildings.shutdown()
        self.analyses.shutdown()
        if self.setupBar.task is not None:
            self.setupBar.task.cancel()          # the installer stops and removes what it built
        for call in self._background:
            if not sip.isdeleted(call):
                call.cancel()
        self._background = []
        self._close_plots()


def sweep_text(req: SweepRequest) -> str:
    """'3 K values × 2 tile sizes (64px, 128px) · 6 clusterings' for the estimate line."""
    ks, labels = req.ks(), req.tile_labels()
    method = METHOD_LABELS.get(req.method, req.method)
    return (f"Sweep: {len(ks)} K values × {len(labels)} tile sizes ({', '.join(labels)}) · "
            f"{len(ks) * len(labels)} {method} clusterings on the whole raster")


def sweep_cancel_text(req: SweepRequest) -> str:
    """What a cancelled sweep left: nothing, or its finished tile sizes (which Run can finish)."""
    state = req.interrupted()
    if not state or not state["finished"]:
        return "cancelled; no output was written."
    return (f"cancelled; the finished tile sizes are kept in {Path(req.out).name} ({', '.join(state['finished'])}; "
            f"missing: {', '.join(state['missing'])}). Run again to finish them.")


def remove_layers_of(paths) -> None:
    """Remove the project's layers that show any of ``paths`` (before their files are replaced)."""
    files = {os.path.abspath(p) for p in paths}
    project = QgsProject.instance()
    ids = [layer.id() for layer in project.mapLayers().values()
           if os.path.abspath(layer.source().split("|")[0]) in files]
    project.removeMapLayers(ids)


def _select(combo, value) -> None:
    index = combo.findData(value)
    if index >= 0:
        combo.setCurrentIndex(index)
