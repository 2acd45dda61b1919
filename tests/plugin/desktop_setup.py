"""The first hour in the real QGIS desktop app (under Xvfb), run by ``qgis.bin --code desktop_setup.py``.

The plugin comes from its zip, unpacked in a clean profile, and no engine exists.
The script opens the panel, checks that it says so and offers Set up engine with
Run grey (screenshot), clicks Set up engine, waits for the engine, runs a
clustering with the panel's defaults and waits for the styled layers
(screenshot). tests/plugin/test_desktop.py::test_set_up_engine_and_run_from_the_zip runs it.

Environment: UF_TEST_DIR (this folder), UF_RASTER, UF_OUT (.gpkg), UF_PNG_DIR (screenshots),
UF_REPORT (JSON report), UF_TIMEOUT (seconds).
"""
import os
import sys

from qgis.core import QgsProject
from qgis.utils import iface

sys.path.insert(0, os.environ["UF_TEST_DIR"])
from desktop_base import Driver  # noqa: E402 - QGIS does not put this folder on sys.path

RASTER_NAME = "Kampala sample (OpenAerialMap)"


class FirstHour(Driver):
    def __init__(self):
        super().__init__(os.environ["UF_REPORT"], float(os.environ.get("UF_TIMEOUT", "600")))
        self.out = os.environ["UF_OUT"]
        self.png_dir = os.environ["UF_PNG_DIR"]
        self.dock = None

    def shot(self, name: str) -> None:
        """The panel alone (for the README) and the whole window (for the test artifacts)."""
        os.makedirs(self.png_dir, exist_ok=True)
        self.report.setdefault("screenshots", []).append(name)
        self.dock.grab().save(os.path.join(self.png_dir, f"dock_{name}.png"))
        iface.mainWindow().grab().save(os.path.join(self.png_dir, f"desktop_{name}.png"))

    def start(self):
        self.dock = dock = self.open_panel(os.environ["UF_RASTER"], RASTER_NAME, width=430)
        dock.outputFile.setFilePath(self.out)
        self.wait("no engine found", lambda: dock._detected and not dock._detecting,
                  lambda: self.later(1500, self.offer))          # let the debounced refresh settle

    def offer(self):
        dock = self.dock
        self.report["bar_visible"] = dock.setupBar.isVisible()
        self.report["bar_text"] = dock.setupBar.messageLabel.text()
        self.report["setup_button"] = dock.setupBar.setupButton.text()
        self.report["run_enabled_without_engine"] = dock.runButton.isEnabled()
        self.report["problems_without_engine"] = dock.problemsLabel.text()
        self.shot("setup")
        dock.setupBar.setupButton.click()
        self.report["setup_started"] = dock.setupBar.is_running()
        self.wait("engine set up", lambda: not dock.setupBar.is_running(), self.engine_ready, every_ms=500)

    def engine_ready(self):
        dock = self.dock
        self.report["bar_after_setup"] = dock.setupBar.messageLabel.text() if dock.setupBar.isVisible() else ""
        self.wait("engine checked and Run enabled",
                  lambda: (dock.engine_info or {}).get("ok") and dock.runButton.isEnabled(), self.run)

    def run(self):
        self.report["engine"] = self.dock.engineLabel.text()
        self.report["backbone"] = self.dock.backboneCombo.currentData()
        self.run_panel(self.dock, RASTER_NAME, self.end)

    def end(self):
        self.shot("ready")
        name = os.path.splitext(os.path.basename(self.out))[0]
        group = QgsProject.instance().layerTreeRoot().findGroup(name)
        self.report["group_layers"] = [node.name() for node in group.children()] if group is not None else []
        self.finish(self.report.get("run_ok") is True and bool(self.report["group_layers"]))


FIRST_HOUR = FirstHour()
FIRST_HOUR.later(0, FIRST_HOUR.start)
