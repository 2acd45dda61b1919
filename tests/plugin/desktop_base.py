"""Plumbing for scripts that the real QGIS desktop application runs (``qgis.bin --code SCRIPT`` under Xvfb).

QGIS runs such a script before its event loop starts, so nothing may block: each
step is a QTimer callback that polls for the condition it waits on. A script
subclasses ``Driver``, writes its steps, and calls ``finish(ok)``, which writes
the JSON report and ends QGIS with ``os._exit``. Scripts import this module
through UF_TEST_DIR (QGIS does not put the script's folder on sys.path).
"""
import json
import os
import sys
import time
import traceback

import qgis.utils
from qgis.PyQt.QtCore import QTimer

HEAVY = ("torch", "torchvision", "rasterio", "geopandas", "sklearn", "engine")


class Driver:
    def __init__(self, report_path: str, timeout_s: float):
        self.report_path = report_path
        self.deadline = time.monotonic() + timeout_s
        self.report = {"errors": [], "steps": []}
        qgis.utils.showException = self.show_exception      # never a modal error dialog

    def step(self, text):
        self.report["steps"].append(f"{time.strftime('%H:%M:%S')} {text}")

    def error(self, text):
        self.report["errors"].append(text)

    def later(self, ms, function):
        """Call ``function`` after ``ms`` in the event loop; an exception ends the run with a report."""
        def call():
            try:
                function()
            except Exception:  # noqa: BLE001 - report, then end
                self.error(traceback.format_exc())
                self.finish(False)
        QTimer.singleShot(ms, call)

    def wait(self, what, predicate, then, every_ms=250):
        """Poll ``predicate`` until it is true (then call ``then``) or the deadline passes (then finish)."""
        def poll():
            if predicate():
                self.step(f"{what}: yes")
                then()
            elif time.monotonic() > self.deadline:
                self.error(f"timed out waiting for: {what}")
                self.finish(False)
            else:
                self.later(every_ms, poll)
        self.later(every_ms, poll)

    def wait_rendered(self, canvas, then):
        """Wait until the map canvas has not been drawing for a second, then call ``then``."""
        quiet = []

        def rendered():
            quiet.append(not canvas.isDrawing())
            return len(quiet) >= 4 and all(quiet[-4:])
        self.wait("map rendered", rendered, lambda: self.later(1000, then))

    def open_panel(self, raster_path: str, raster_name: str, width: int = 400):
        """Maximise QGIS, load and start the plugin, add the raster, open the panel on it; returns the panel."""
        from qgis.PyQt.QtCore import Qt
        from qgis.utils import iface, loadPlugin, startPlugin, updateAvailablePlugins

        window = iface.mainWindow()
        window.resize(1600, 1000)
        window.showMaximized()
        updateAvailablePlugins()
        self.report["loaded"] = loadPlugin("urbanform")
        self.report["started"] = startPlugin("urbanform")
        self.step(f"plugin loaded={self.report['loaded']} started={self.report['started']}")
        self.report["plugin_dir"] = os.path.dirname(sys.modules["urbanform"].__file__)
        layer = iface.addRasterLayer(raster_path, raster_name)
        self.report["raster_valid"] = bool(layer and layer.isValid())
        dock = qgis.utils.plugins["urbanform"].open_dock()
        window.resizeDocks([dock], [width], Qt.Horizontal)
        dock.confirm_overwrite = lambda parent, path: True
        dock.rasterCombo.setLayer(layer)
        return dock

    def run_panel(self, dock, raster_name: str, then) -> None:
        """Click the panel's Run, wait for the run, zoom to the raster, wait for the map, then call ``then``."""
        from qgis.core import QgsProject
        from qgis.utils import iface

        ended = []
        dock.runFinished.connect(ended.append)
        self.report["run_started"] = dock.runButton.isEnabled() and dock.run()
        self.step(f"run started={self.report['run_started']} {dock.statusLabel.text()}")
        if not self.report["run_started"]:
            self.error(f"Run did not start: {dock.statusLabel.text()} {dock.problemsLabel.text()}")
            self.finish(False)
            return

        def ran():
            self.report["run_ok"] = ended[0]
            self.report["status"] = dock.statusLabel.text()
            canvas = iface.mapCanvas()
            raster = QgsProject.instance().mapLayersByName(raster_name)
            if raster:
                canvas.setExtent(raster[0].extent())
            canvas.refreshAllLayers()
            self.wait_rendered(canvas, then)
        self.wait("run finished", lambda: bool(ended), ran)

    def finish(self, ok: bool) -> None:
        """Write the report (``ok`` only without errors) and end QGIS: exit code 0 when ok."""
        self.report["heavy"] = [m for m in HEAVY if m in sys.modules]
        self.report["ok"] = ok = bool(ok) and not self.report["errors"]
        with open(self.report_path, "w") as f:
            json.dump(self.report, f, indent=1)
        os._exit(0 if ok else 1)

    def show_exception(self, etype, value, tb, msg=None, *args, **kwargs):
        self.error(f"{msg}: {''.join(traceback.format_exception(etype, value, tb))}")
