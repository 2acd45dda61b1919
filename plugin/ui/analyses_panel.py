"""The dock's "Analyses" mode: a report on a run, change between two dates, similar places, tile classes.

The panel builds a ``ReportRequest``, ``ChangeRequest``, ``SimilarRequest`` or ``ClassifyRequest`` from its
widgets (``request()``) and nothing else: validation is the request's ``problems()`` (the first one marked on its
widget, ``marks``), ranges and choices are the contract's (``bounds``), and every run is a ``task.EngineTask``
(engine subprocess, JSON progress, cancel). Similar and Classify take the dock's raster, device and seed. Query and
label layers that are not plain local files are written to temporary files at Run (``stats_inputs``).

``report(run)`` writes RUN_report.html next to any run's GeoPackage in the background and opens it
(``open_report``, on the main thread when the task has finished); the dock's Report button after a cluster run or
a sweep and this panel's Report button after a change, similar or classify run call it.

Live similarity: after a similar run, each click of the map tool on a tile adds it to the query (a click on a
query tile takes it out) and the run's tiles are rescored at once from the run's OUT_live.npz
(``layers.similar_live``), in a background task, debounced; no engine run. Run writes the exact files again.
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from qgis.core import (Qgis, QgsApplication, QgsCoordinateTransform, QgsFeature, QgsFeatureRequest,
                       QgsFieldProxyModel, QgsGeometry, QgsMapLayerProxyModel, QgsProject, QgsRectangle,
                       QgsSpatialIndex, QgsTask, QgsVectorLayer)
from qgis.gui import QgsFileWidget, QgsMapToolEmitPoint
from qgis.PyQt import sip, uic
from qgis.PyQt.QtCore import QTimer, QUrl, pyqtSignal
from qgis.PyQt.QtGui import QDesktopServices
from qgis.PyQt.QtWidgets import QWidget

from ...engine.contract.problems import NO_ENGINE, NOT_LOCAL, REQUIRED, Problem, messages
from .. import log, settings
from ..layers.analyses import ADDERS, style_similarity
from ..layers.similar_live import LiveSimilarity
from ..paths import RESOURCES
from ..requests import ChangeRequest, ClassifyRequest, ReportRequest, SimilarRequest, default_report, outputs
from ..runner.task import EngineTask
from . import marks, stats_inputs, wording
from .bounds import bound
from .panel import DockPanel

FORM_CLASS, _ = uic.loadUiType(str(RESOURCES / "ui" / "analyses_panel.ui"))

ANALYSES = (("report", "Report on a run (HTML)"), ("change", "Change between two dates"),
            ("similar", "Find similar places"), ("classify", "Classify tiles from labels"))
REQUESTS = {"report": ReportRequest, "change": ChangeRequest, "similar": SimilarRequest, "classify": ClassifyRequest}
ERROR_STYLE = "color: #b00020;"
WRITTEN_AT_RUN = ("query", "labels")          # layers Run writes to files first: not being a file yet is fine
PICKS_NAME = "Similar: query points"
KEY = "dock/analyses_"
LIVE_DEBOUNCE_MS = 150                        # clicks closer than this give one update
REPORTED = ("change", "similar", "classify")  # runs the panel's Report button explains


def open_report(path) -> None:
    """Open the HTML report in the system browser (main thread)."""
    QDesktopServices.openUrl(QUrl.fromLocalFile(str(path)))


class AnalysesPanel(DockPanel, QWidget, FORM_CLASS):
    """``dock`` gives the raster (``rasterCombo``), the engine (``engine_python()``, ``engine_problem()``), the
    device and seed widgets and the overwrite question (``confirm_overwrite``)."""

    runFinished = pyqtSignal(bool)
    liveUpdated = pyqtSignal(float)           # seconds from the click to the rescored layer

    def __init__(self, dock, iface, parent=None):
        super().__init__(parent)
        self.dock = dock
        self.iface = iface
        self.open_report = open_report               # tests replace it (no browser offscreen)
        self.task: EngineTask | None = None
        self.current = None                          # the running request
        self.last_run = ""                           # the last change, similar or classify run (its report is one
        self.last_kind = ""                          # click away) and its kind
        self.last_report = ""
        self._run_key: tuple = ()
        self._failed_input: tuple | None = None
        self._temp_layers = stats_inputs.TempLayers()
        self._auto = {"change": "", "similar": "", "classify": "", "report": ""}
        self._started = 0.0
        self.live: LiveSimilarity | None = None      # the last similar run's tiles, rescored as the query changes
        self._live_layer_id = ""
        self._live_fids: dict[int, int] = {}
        self._live_index: QgsSpatialIndex | None = None
        self._live_task = None
        self._live_pending = False
        self._live_clicked = 0.0
        self.live_seconds: list[float] = []
        self._live_timer = QTimer(self)
        self._live_timer.setSingleShot(True)
        self._live_timer.setInterval(LIVE_DEBOUNCE_MS)
        self._build()
        self.restore_settings()
        self._connect_signals()
        self.raster_changed()
        self._analysis_changed()

    # -- set-up ------------------------------------------------------------------------------------
    def _build(self) -> None:
        """The widgets of resources/ui/analyses_panel.ui; their ranges and choices from the declarations."""
        self.setupUi(self)
        # short names for the state and buttons (prefixed in the .ui: the dock has its own of those names)
        self.problemsLabel, self.progressBar, self.statusLabel = (self.anProblemsLabel, self.anProgressBar,
                                                                   self.anStatusLabel)
        self.reportButton, self.runButton, self.cancelButton = (self.anReportButton, self.anRunButton,
                                                                 self.anCancelButton)
        for value, label in ANALYSES:
            self.analysisCombo.addItem(label, value)
        self.runFile.setStorageMode(QgsFileWidget.GetFile)
        self.runFile.setFilter("GeoPackage (*.gpkg)")
        self.changeModelFile.setStorageMode(QgsFileWidget.GetFile)
        self.changeModelFile.setFilter("Model file (*.pt)")
        for widget, filter_ in ((self.reportOutFile, "HTML (*.html)"), (self.changeOutFile, "GeoPackage (*.gpkg)"),
                                (self.similarOutFile, "GeoPackage (*.gpkg)"),
                                (self.classifyOutFile, "GeoPackage (*.gpkg)")):
            widget.setStorageMode(QgsFileWidget.SaveFile)
            widget.setFilter(filter_)
            widget.setConfirmOverwrite(False)                     # Run asks, once
        examples, top = ReportRequest.TOOL.param("examples"), SimilarRequest.TOOL.param("top")
        bound(self.examplesSpin, examples)
        self.examplesSpin.setValue(examples.default)
        bound(self.topSpin, top)
        self.topSpin.setMaximum(max(self.topSpin.maximum(), 100000))          # no upper bound is declared
        self.topSpin.setValue(top.default)
        for combo in (self.beforeCombo, self.afterCombo):
            combo.setFilters(QgsMapLayerProxyModel.RasterLayer)
        for combo in (self.queryLayerCombo, self.labelsCombo):
            combo.setFilters(QgsMapLayerProxyModel.PointLayer | QgsMapLayerProxyModel.PolygonLayer)
        for combo in (self.beforeCombo, self.afterCombo, self.queryLayerCombo, self.labelsCombo):
            combo.setAllowEmptyLayer(True)
            combo.setLayer(None)
        self.queryTilesEdit.setPlaceholderText("tile_id of a run's tiles, e.g. 12,40")
        self.fieldCombo.setFilters(QgsFieldProxyModel.AllTypes)
        self.fieldCombo.setAllowEmptyFieldName(True)
        classifier = ClassifyRequest.TOOL.param("classifier")
        for value in classifier.choices:
            self.classifierCombo.addItem(value, value)
        self.classifierCombo.setCurrentIndex(self.classifierCombo.findData(classifier.default))
        finetune = ClassifyRequest.TOOL.param("finetune")
        self.finetuneCheck.setText(finetune.title)
        self.finetuneCheck.setToolTip(finetune.help)
        self.finetuneCheck.setChecked(finetune.default)
        self.pickButton.setToolTip("Click the tiles to look for on the map: each click adds a point to the layer "
                                   f"{PICKS_NAME!r}, the query; after a run, the similarity follows each click "
                                   "(a click on a query tile takes it out)")
        self.clearPicksButton.setToolTip(f"Remove the points of {PICKS_NAME!r}")
        self.pick_tool = QgsMapToolEmitPoint(self.iface.mapCanvas())
        self.pick_tool.setButton(self.pickButton)
        self._picks_id = ""                                   # the layer of clicked query points
        self.reportButton.setToolTip("An HTML report of the last run: for a change run the transitions, for a similar "
                                     "run the query and the most similar tiles, for a classify run the scores and "
                                     "a gallery per class")
        self.reportButton.setVisible(False)
        self.progressBar.setRange(0, 100)
        self.problemsLabel.setStyleSheet(ERROR_STYLE)
        for label in (self.problemsLabel, self.statusLabel):
            wording.show_whole(label)

    def _connect_signals(self) -> None:
        self.analysisCombo.currentIndexChanged.connect(self._analysis_changed)
        self.labelsCombo.layerChanged.connect(self.fieldCombo.setLayer)
        self.runFile.fileChanged.connect(self._run_file_changed)
        self.beforeCombo.layerChanged.connect(self.raster_changed)
        for signal in (self.runFile.fileChanged, self.reportOutFile.fileChanged, self.examplesSpin.valueChanged,
                       self.changeModelFile.fileChanged, self.beforeCombo.layerChanged, self.afterCombo.layerChanged,
                       self.changeOutFile.fileChanged, self.queryTilesEdit.textChanged,
                       self.queryLayerCombo.layerChanged, self.topSpin.valueChanged, self.similarOutFile.fileChanged,
                       self.labelsCombo.layerChanged, self.fieldCombo.fieldChanged,
                       self.classifierCombo.currentIndexChanged, self.finetuneCheck.toggled,
                       self.classifyOutFile.fileChanged):
            signal.connect(self.update_state)
        self.pickButton.toggled.connect(self._pick_toggled)
        self.clearPicksButton.clicked.connect(self.clear_picks)
        self.pick_tool.canvasClicked.connect(self.add_pick)
        self._live_timer.timeout.connect(self._live_update)
        self.runButton.clicked.connect(self.run)
        self.cancelButton.clicked.connect(self.cancel)
        self.reportButton.clicked.connect(lambda: self.report(self.last_run))

    # -- query tiles clicked on the map ---------------------------------------------------------------
    def _pick_toggled(self, on: bool) -> None:
        canvas = self.iface.mapCanvas()
        if on:
            canvas.setMapTool(self.pick_tool)
        elif canvas.mapTool() is self.pick_tool:
            canvas.unsetMapTool(self.pick_tool)

    def picks_layer(self, create: bool = True) -> QgsVectorLayer | None:
        """The memory layer of clicked query points (made, in the map's CRS, on the first click)."""
        project = QgsProject.instance()
        layer = project.mapLayer(self._picks_id) if self._picks_id else None
        if layer is None and create:
            crs = self.iface.mapCanvas().mapSettings().destinationCrs()
            if not crs.isValid() and self.dock.rasterCombo.currentLayer() is not None:
                crs = self.dock.rasterCombo.currentLayer().crs()
            layer = QgsVectorLayer(f"Point?crs={crs.authid() or crs.toWkt()}", PICKS_NAME, "memory")
            project.addMapLayer(layer)
            self._picks_id = layer.id()
        return layer

    def add_pick(self, point, _button=None) -> None:
        """A click on the map: a query point (in the map's CRS), and the points layer becomes the query. After a
        similar run, a click on a query tile takes its points out instead, and the similarity follows."""
        self._live_clicked = time.perf_counter()
        layer = self.picks_layer()
        on_query = self._picks_on_tile(point, layer) if self.live_layer() is not None else []
        if on_query:
            layer.dataProvider().deleteFeatures(on_query)
        else:
            feature = QgsFeature(layer.fields())
            feature.setGeometry(QgsGeometry.fromPointXY(point))
            layer.dataProvider().addFeatures([feature])
        layer.updateExtents()
        layer.triggerRepaint()
        self.queryLayerCombo.setLayer(layer)
        self.update_state()
        if self.live_layer() is not None:
            self._live_timer.start()

    def clear_picks(self) -> None:
        layer = self.picks_layer(create=False)
        if layer is not None:
            layer.dataProvider().truncate()
            layer.triggerRepaint()
        self.update_state()

    # -- live similarity -------------------------------------------------------------------------------
    def live_layer(self) -> QgsVectorLayer | None:
        """The tiles of the last similar run while they are in the project and the live features are loaded."""
        if self.live is None or not self._live_layer_id:
            return None
        return QgsProject.instance().mapLayer(self._live_layer_id)

    def start_live(self, layer: QgsVectorLayer, path) -> None:
        """Rescore ``layer`` (a similar run's tiles) from ``path`` (its OUT_live.npz) as the query changes."""
        self.stop_live()
        try:
            live = LiveSimilarity.load(path)
        except (OSError, ValueError, KeyError) as exc:
            log.warning(f"Live similarity is off: {path} cannot be read ({exc}).")
            return
        fids, index = {}, QgsSpatialIndex()
        for feature in layer.getFeatures(QgsFeatureRequest().setSubsetOfAttributes(["tile_id"], layer.fields())):
            fids[int(feature["tile_id"])] = feature.id()
            index.addFeature(feature)
        self.live, self._live_layer_id, self._live_fids, self._live_index = live, layer.id(), fids, index

    def stop_live(self) -> None:
        self._live_timer.stop()
        self.live, self._live_layer_id, self._live_fids, self._live_index = None, "", {}, None
        self._live_pending = False

    def _to_layer(self, point, source_crs, layer):
        transform = QgsCoordinateTransform(source_crs, layer.crs(), QgsProject.instance())
        return transform.transform(point)

    def _tile_at(self, point, crs) -> tuple[int, QgsGeometry] | None:
        """(tile_id, geometry in the tiles' CRS) of the live tile under ``point`` (in ``crs``), or None."""
        layer = self.live_layer()
        here = self._to_layer(point, crs, layer)
        geom = QgsGeometry.fromPointXY(here)
        for fid in self._live_index.intersects(QgsRectangle(here.x(), here.y(), here.x(), here.y())):
            feature = layer.getFeature(fid)
            if feature.geometry().intersects(geom):
                return int(feature["tile_id"]), feature.geometry()
        return None

    def _picks_on_tile(self, point, picks) -> list[int]:
        """The query points on the tile under ``point`` (in the map's CRS): none when it is no query tile."""
        crs = self.iface.mapCanvas().mapSettings().destinationCrs()
        tile = self._tile_at(point, crs)
        if tile is None:
            return []
        layer = self.live_layer()
        return [f.id() for f in picks.getFeatures()
                if tile[1].intersects(QgsGeometry.fromPointXY(self._to_layer(f.geometry().asPoint(), picks.crs(),
                                                                            layer)))]

    def live_query(self) -> list[int]:
        """The tile ids of the live query: the tiles under the query points and the typed tile ids."""
        ids = set()
        for text in self.queryTilesEdit.text().replace(" ", "").split(","):
            if text.isdigit():
                ids.add(int(text))
        picks = self.picks_layer(create=False)
        if picks is not None:
            for feature in picks.getFeatures():
                tile = self._tile_at(feature.geometry().asPoint(), picks.crs())
                if tile is not None:
                    ids.add(tile[0])
        return sorted(ids)

    def _live_update(self) -> None:
        """Rescore the tiles for the current query in a background task (one at a time; the last query wins)."""
        if self.live_layer() is None:
            return
        if self._live_task is not None:
            self._live_pending = True
            return
        query = self.live_query()
        if not query:
            self._set_status("Live similarity: no query tile; click a tile of the map.")
            return
        live, clicked = self.live, self._live_clicked

        def score(_task):
            return live.scores(query)

        def done(exception, result=None):
            self._live_task = None
            if sip.isdeleted(self):
                return
            if exception is None and result is not None:
                self._apply_live(query, result, clicked)
            if self._live_pending:
                self._live_pending = False
                self._live_update()

        self._live_task = QgsTask.fromFunction("Urban Form Mapper: live similarity", score, on_finished=done)
        QgsApplication.taskManager().addTask(self._live_task)

    def _apply_live(self, query, result, clicked: float) -> None:
        """Main thread: the scores into the tiles layer, classes redrawn."""
        layer = self.live_layer()
        if layer is None:
            return
        sim, rank, is_query = result
        fields = layer.fields()
        i_sim, i_rank, i_query = (fields.indexOf(n) for n in ("similarity", "rank", "query"))
        changes = {self._live_fids[t]: {i_sim: float(s), i_rank: int(r), i_query: int(q)}
                   for t, s, r, q in zip(self.live.tile_ids, sim, rank, is_query, strict=True) if t in self._live_fids}
        layer.dataProvider().changeAttributeValues(changes)
        style_similarity(layer)
        layer.triggerRepaint()
        seconds = time.perf_counter() - clicked if clicked else 0.0
        self.live_seconds.append(seconds)
        self._set_status(f"Live similarity: {len(query)} query tile(s) ({', '.join(map(str, query[:8]))}"
                         f"{'…' if len(query) > 8 else ''}); updated {seconds:.2f} s after the click. On "
                         "the features' first principal axes; Run writes the exact files.")
        self.liveUpdated.emit(seconds)

    # -- the request -------------------------------------------------------------------------------
    def analysis(self) -> str:
        return self.analysisCombo.currentData()

    def set_analysis(self, analysis: str) -> None:
        self.analysisCombo.setCurrentIndex(max(0, self.analysisCombo.findData(analysis)))

    def _layers(self) -> dict:
        """request field -> the chosen vector layer Run hands the engine (None when empty)."""
        if self.analysis() == "similar":
            return {"query": self.queryLayerCombo.currentLayer()}
        if self.analysis() == "classify":
            return {"labels": self.labelsCombo.currentLayer()}
        return {}

    def _planned(self) -> dict:
        return {field: (stats_inputs.local_file(layer) or stats_inputs.temp_path(layer)) if layer else None
                for field, layer in self._layers().items()}

    def request(self):
        """What Run would do now, from the widgets."""
        from .dock import raster_path

        kind, planned = self.analysis(), self._planned()
        seed = self.dock.seedSpin.value()
        if kind == "report":
            return ReportRequest(run=self.runFile.filePath().strip(), out=self.reportOutFile.filePath().strip(),
                                 examples=self.examplesSpin.value(), seed=seed)
        if kind == "change":
            return ChangeRequest(model=self.changeModelFile.filePath().strip(),
                                 raster_before=raster_path(self.beforeCombo.currentLayer()),
                                 raster_after=raster_path(self.afterCombo.currentLayer()),
                                 out=self.changeOutFile.filePath().strip())
        if kind == "similar":
            return SimilarRequest(raster=self.raster(), out=self.similarOutFile.filePath().strip(),
                                  query=planned.get("query"), query_tiles=self.queryTilesEdit.text().strip() or None,
                                  top=self.topSpin.value(), device=self.device(), seed=seed)
        return ClassifyRequest(raster=self.raster(), out=self.classifyOutFile.filePath().strip(),
                               labels=planned.get("labels"), field=self.fieldCombo.currentField() or None,
                               classifier=self.classifierCombo.currentData(),
                               finetune=self.finetuneCheck.isChecked(), device=self.device(), seed=seed)

    def problem_widgets(self, req=None) -> dict:
        """Parameter of the request -> the widget that sets it."""
        kind = self.analysis() if req is None else req.TOOL.name
        widgets = {"device": self.dock.deviceCombo, "seed": self.dock.seedSpin}
        widgets.update({
            "report": dict(run=self.runFile, out=self.reportOutFile, examples=self.examplesSpin),
            "change": dict(model=self.changeModelFile, raster_before=self.beforeCombo, raster_after=self.afterCombo,
                           out=self.changeOutFile),
            "similar": dict(raster=self.dock.rasterCombo, query=self.queryLayerCombo, top=self.topSpin,
                            query_tiles=self.queryTilesEdit, out=self.similarOutFile),
            "classify": dict(raster=self.dock.rasterCombo, labels=self.labelsCombo, field=self.fieldCombo,
                             classifier=self.classifierCombo, finetune=self.finetuneCheck, out=self.classifyOutFile),
        }[kind])
        if kind == "similar" and self.queryLayerCombo.currentLayer() is None:
            widgets["query"] = self.queryTilesEdit             # nothing chosen: the tile ids are the quick way
        return widgets

    def problems_and_widgets(self) -> list[tuple[Problem, object]]:
        engine = self.dock.engine_problem(self.dock.engine_python())
        out = [(Problem("engine", NO_ENGINE, engine), None)] if engine else []
        req = self.request()
        widgets = self.problem_widgets(req)
        layer = self.dock.rasterCombo.currentLayer()
        if self.analysis() in ("similar", "classify") and layer is not None and not self.raster():
            out.append((Problem("raster", NOT_LOCAL, f"The layer {layer.name()!r} is not a local raster file; save "
                                "it to a GeoTIFF first (right-click the layer > Export > Save As…)."),
                        self.dock.rasterCombo))
        for problem in replace(req, overwrite=True).problems():
            if problem.code == NOT_LOCAL and problem.param in WRITTEN_AT_RUN:
                continue
            if out and problem.param == "raster" and problem.code == REQUIRED:
                continue
            out.append((problem, widgets.get(problem.param)))
        return out

    def existing_outputs(self) -> list[Path]:
        return [p for p in self.request().outputs().values() if p.exists()]

    # -- reacting to changes -----------------------------------------------------------------------
    def raster_changed(self, *_args) -> None:
        """Follow the raster (the first date's, for change) with the default outputs, unless the user chose them."""
        from .dock import raster_path

        before = raster_path(self.beforeCombo.currentLayer()) or self.raster()
        for kind, widget, raster in (("change", self.changeOutFile, before), ("similar", self.similarOutFile,
                                                                                self.raster()),
                                     ("classify", self.classifyOutFile, self.raster())):
            current = widget.filePath().strip()
            if not current or current == self._auto[kind]:
                request = REQUESTS[kind]
                self._auto[kind] = outputs.proposed_output(raster, kind, lambda path, r=request: _files(r, path))
                if self._auto[kind] != current:
                    widget.setFilePath(self._auto[kind])
        self.update_state()

    def _run_file_changed(self, path: str) -> None:
        current = self.reportOutFile.filePath().strip()
        if path.strip() and (not current or current == self._auto["report"]):
            self._auto["report"] = default_report(path.strip())
            self.reportOutFile.setFilePath(self._auto["report"])

    def _analysis_changed(self, *_args) -> None:
        self.pages.setCurrentIndex(self.analysisCombo.currentIndex())
        self.reportButton.setVisible(self._report_offered())
        self.update_state()

    def _report_offered(self) -> bool:
        return bool(self.last_run) and self.analysis() == self.last_kind

    def update_state(self, *_args) -> None:
        pairs = self.problems_and_widgets()
        problems = [p for p, _w in pairs]
        running = self.is_running()
        text = "\n".join(messages(problems))
        if not problems and self.existing_outputs():
            text = f"{self.existing_outputs()[0].name} exists; Run will ask before replacing it."
        wording.set_text(self.problemsLabel, text)
        self.problemsLabel.setStyleSheet(ERROR_STYLE if problems else "")
        self.runButton.setEnabled(not running and not problems)
        self.reportButton.setEnabled(not running)
        if self.dock.is_analyses():             # the dock marks its own widgets in its other modes
            failed = self._failed_input
            if failed and failed[0] == tuple(self.request().argv()):
                pairs = [*pairs, failed[1:]]
            marks.mark(self.dock, pairs)
        self.cancelButton.setEnabled(running and not self.task.isCanceled())

    # -- running -----------------------------------------------------------------------------------
    def _busy(self) -> bool:
        return self.is_running() or self.dock.is_running() or self.dock.buildings.is_running()

    def run(self) -> bool:
        """Start the chosen analysis; False (with the reason shown) when it cannot."""
        if self._busy():
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
        req = self.request()
        run_key = tuple(req.argv())
        if self.existing_outputs():
            if not self.dock.confirm_overwrite(self, str(self.existing_outputs()[0])):
                self._set_status("Not run: the existing output was kept.")
                return False
            req.overwrite = True
            from .dock import remove_layers_of

            remove_layers_of(req.outputs().values())
        error = self._temp_layers.write(self._layers(), self._planned())
        if error:
            self._temp_layers.remove()
            self._report(error, Qgis.Critical)
            return False
        self.save_settings()
        self._run_key, self._failed_input = run_key, None
        self._start(python, req)
        return True

    def report(self, run: str) -> bool:
        """Write RUN_report.html next to the run's GeoPackage in the background, then open it."""
        if not run or self._busy():
            return False
        python = self.dock.engine_python()
        problem = self.dock.engine_problem(python)
        req = ReportRequest(run=run, out=default_report(run), overwrite=True)
        problems = req.problems()
        if problem or problems:
            self._report(problem or problems[0].message, Qgis.Critical)
            return False
        self._run_key, self._failed_input = (), None
        self._start(python, req)
        return True

    def _start(self, python: str, req) -> None:
        task = EngineTask(f"Urban Form Mapper: {req.name}", python, req.argv(), outputs=list(req.outputs().values()),
                          on_success=self._on_success, on_failure=self._on_failure,
                          message_bar=self.iface.messageBar())
        task.describe_failure = self._failure_text
        task.progressChanged.connect(self._on_progress)
        task.statusChanged.connect(self._set_status)
        if req.TOOL.name == "similar":
            self.stop_live()                          # its layer is about to be replaced
        self.task, self.current, self._started = task, req, time.time()
        self.progressBar.setValue(0)
        self._set_status(f"Starting {req.TOOL.name} {req.name}…")
        QgsApplication.taskManager().addTask(task)
        self.update_state()
        self.dock.update_state()

    def cancel(self) -> None:
        if self.task is not None and not self.task.isCanceled():
            self.task.cancel()
            self._set_status("Cancelling…")
            self.update_state()

    def _on_progress(self, value: float) -> None:
        self.progressBar.setValue(int(value))

    def _on_success(self, task: EngineTask) -> None:
        """Main thread: open the report, or add the styled layer."""
        if sip.isdeleted(self):
            return
        req, ok = self.current, False
        try:
            kind = req.TOOL.name
            if kind == "report":
                html = req.outputs()["html"]
                self.last_report = str(html)
                text = f"Report written: {html}; opening it."
                self.open_report(html)
            else:
                group, layer = ADDERS[kind](req.outputs(), req.name)
                count = layer.featureCount()
                if kind == "similar":
                    self.start_live(layer, req.outputs()["live"])
                del group, layer                                # the project owns the layer
                text = f"{req.name}: {count} tiles added to the map ({req.out})."
                if self.live is not None and kind == "similar":
                    text += " Click tiles with the map tool: the similarity follows."
                if kind in REPORTED:
                    self.last_run, self.last_kind = req.out, kind
                    text += " Report explains the run."
            log.push(self.iface.messageBar(), text, Qgis.Success, 8)
            self._set_status(text)
            ok = True
        finally:            # an exception goes on to EngineTask, which reports it
            self._finish(ok)

    def _on_failure(self, task: EngineTask) -> None:
        if sip.isdeleted(self):
            return
        result = task.result
        if result is None or result.cancelled:
            self._set_status("Cancelled; no output was written.")
        else:
            failed = self._failed(result)
            if failed is not None:                   # bad input the engine found: its widget is marked
                self._failed_input = (self._run_key, *failed)
            self._set_status(f"Failed: {self._failure_text(result)}", error=True)
        self._finish(False)

    def _failed(self, result):
        req = self.current
        if req is None or not self._run_key:
            return None
        return marks.failed_input(self.dock, result, self.problem_widgets(req))

    def _failure_text(self, result) -> str:
        failed = self._failed(result)
        return failed[0].message if failed is not None else result.message

    def _finish(self, ok: bool) -> None:
        self.task = self.current = None
        self._temp_layers.remove()
        self.progressBar.setValue(100 if ok else 0)
        if ok:
            self.raster_changed()                 # default outputs move on to free names
        self.reportButton.setVisible(self._report_offered())
        self.update_state()
        self.dock.update_state()
        self.runFinished.emit(ok)

    def _set_status(self, text: str, error: bool = False) -> None:
        wording.set_text(self.statusLabel, text)
        self.statusLabel.setStyleSheet(ERROR_STYLE if error else "")
        if not self.dock.is_analyses():              # a report asked for from the dock's own Report button
            self.dock._set_status(text, error)      # noqa: SLF001 - the dock's status line

    def _report(self, text: str, level) -> None:
        self._set_status(text, error=level == Qgis.Critical)
        log.push(self.iface.messageBar(), wording.panel_words(text), level, 0 if level == Qgis.Critical else 8)

    # -- settings ----------------------------------------------------------------------------------
    def save_settings(self) -> None:
        values = {"analysis": self.analysis(), "examples": self.examplesSpin.value(), "top": self.topSpin.value(),
                  "classifier": self.classifierCombo.currentData(), "model": self.changeModelFile.filePath(),
                  "finetune": self.finetuneCheck.isChecked()}
        for key, value in values.items():
            settings.set(KEY + key, value)

    def restore_settings(self) -> None:
        get = settings.get
        for combo, key in ((self.analysisCombo, "analysis"), (self.classifierCombo, "classifier")):
            index = combo.findData(get(KEY + key, combo.currentData(), str))
            if index >= 0:
                combo.setCurrentIndex(index)
        self.examplesSpin.setValue(get(KEY + "examples", self.examplesSpin.value(), int))
        self.topSpin.setValue(get(KEY + "top", self.topSpin.value(), int))
        self.changeModelFile.setFilePath(get(KEY + "model", "", str))
        self.finetuneCheck.setChecked(get(KEY + "finetune", self.finetuneCheck.isChecked(), bool))

    # -- closing -----------------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Plugin unload: cancel the run and forget the callbacks into this panel."""
        canvas = self.iface.mapCanvas()
        if canvas.mapTool() is self.pick_tool:
            canvas.unsetMapTool(self.pick_tool)
        self.stop_live()
        if self.task is not None:
            self.task.on_success = self.task.on_failure = None
            self.task.cancel()
            self.task = self.current = None
        self._temp_layers.remove()


def _files(request_class, path: str):
    """The files a run of ``request_class`` writes under ``path`` (for a free default name)."""
    fields = {"report": dict(run=""), "change": dict(model="", raster_before="", raster_after=""),
              "similar": dict(raster=""), "classify": dict(raster="")}[request_class.TOOL.name]
    return request_class(out=path, **fields).outputs().values()
