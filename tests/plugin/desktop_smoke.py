"""Desktop smoke test, run by the real QGIS application: ``qgis.bin --code desktop_smoke.py`` (under Xvfb).

Loads and starts the plugin, adds a raster, opens the Urban Form Mapper panel,
sets K = 4, random ResNet-18 weights and an output, clicks Run, waits for the
layers, zooms to the raster, waits for the map to render, saves a screenshot of
the main window and writes a JSON report; then ends QGIS with ``os._exit`` (0
when the layers arrived, else 1). tests/plugin/test_desktop.py runs it.

QGIS runs this file before its event loop starts, so nothing here blocks: each
step is a QTimer callback that polls for the condition it waits on.

Environment: UF_SMOKE_RASTER (input raster), UF_SMOKE_OUT (output .gpkg),
UF_SMOKE_PNG (screenshot), UF_SMOKE_REPORT (JSON report), UF_SMOKE_TIMEOUT
(seconds, default 200), URBANFORM_ENGINE_PYTHON (the engine's Python).
"""
import os
import sys

from qgis.core import QgsProject
from qgis.utils import iface

sys.path.insert(0, os.environ["UF_TEST_DIR"])
from desktop_base import Driver  # noqa: E402 - QGIS does not put this folder on sys.path


class Smoke(Driver):
    def __init__(self):
        super().__init__(os.environ["UF_SMOKE_REPORT"], float(os.environ.get("UF_SMOKE_TIMEOUT", "200")))
        self.raster_path = os.environ["UF_SMOKE_RASTER"]
        self.out = os.environ["UF_SMOKE_OUT"]
        self.png = os.environ["UF_SMOKE_PNG"]
        self.name = os.path.splitext(os.path.basename(self.out))[0]
        self.dock = None

    # -- the steps ---------------------------------------------------------------------------------
    def start(self):
        self.dock = dock = self.open_panel(self.raster_path, "Kampala sample (OpenAerialMap)")
        dock.kSpin.setValue(4)
        dock.backboneCombo.setCurrentIndex(dock.backboneCombo.findData("resnet18"))
        dock.weightsCombo.setCurrentIndex(dock.weightsCombo.findData("none"))
        dock.tileUnitCombo.setCurrentIndex(dock.tileUnitCombo.findData("px"))
        dock.tileSizeSpin.setValue(64)
        dock.overlapSpin.setValue(0)
        dock.outputFile.setFilePath(self.out)
        self.report["dock_visible"] = dock.isVisible()
        self.wait("time estimate shown", lambda: " · about " in dock.estimateLabel.text()
                  or "no time" in dock.estimateLabel.text(), self.run)

    def run(self):
        self.report["estimate"] = self.dock.estimateLabel.text()
        self.report["problems"] = self.dock.problemsLabel.text()
        self.run_panel(self.dock, "Kampala sample (OpenAerialMap)", self.screenshot)

    def screenshot(self):
        os.makedirs(os.path.dirname(self.png), exist_ok=True)
        self.report["screenshot_saved"] = iface.mainWindow().grab().save(self.png)
        self.step(f"screenshot {self.png}")
        self.end()

    def end(self):
        """The report: exit code 0 when the group with both layers arrived."""
        project = QgsProject.instance()
        group = project.layerTreeRoot().findGroup(self.name)
        self.report["group"] = group is not None
        self.report["group_layers"] = [node.name() for node in group.children()] if group is not None else []
        self.report["renderers"] = {layer.name(): layer.renderer().type()
                                    for layer in project.mapLayers().values() if layer.renderer() is not None}
        self.finish(self.report.get("run_ok") is True and len(self.report["group_layers"]) == 2)


SMOKE = Smoke()
SMOKE.later(0, SMOKE.start)
