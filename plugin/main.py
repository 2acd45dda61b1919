"""The plugin object QGIS creates: menu entry and Processing provider.

Kept thin (QuickOSM style): it wires actions to the modules that do the work
and undoes everything in ``unload`` so that reloading the plugin is clean.
"""
from __future__ import annotations

from qgis.core import QgsApplication
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction, QMessageBox

from .paths import icon_path, read_metadata
from .provider import UrbanFormProvider

MENU = "&Urban Form Mapper"


class UrbanFormPlugin:
    def __init__(self, iface):
        self.iface = iface
        self.provider: UrbanFormProvider | None = None
        self.actions: list[QAction] = []

    # -- QGIS hooks -------------------------------------------------------------
    def initProcessing(self) -> None:  # noqa: N802 - QGIS API
        self.provider = UrbanFormProvider()
        QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:  # noqa: N802 - QGIS API
        self.initProcessing()
        about = QAction(QIcon(str(icon_path())), "About Urban Form Mapper…", self.iface.mainWindow())
        about.setObjectName("urbanformAbout")
        about.triggered.connect(self.show_about)
        self.iface.addPluginToRasterMenu(MENU, about)
        self.actions.append(about)

    def unload(self) -> None:
        for action in self.actions:
            self.iface.removePluginRasterMenu(MENU, action)
            action.deleteLater()
        self.actions.clear()
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None

    # -- actions ------------------------------------------------------------------
    def about_text(self) -> str:
        meta = read_metadata()
        return (f"<b>{meta.get('name', 'Urban Form Mapper')}</b> {meta.get('version', '')}<br><br>"
                f"{meta.get('about', '')}<br><br>"
                "Run the engine from a terminal in the plugin folder:<br>"
                "<code>make setup</code>, then "
                "<code>.venv/bin/python -m engine cluster RASTER --out OUT.gpkg --k 8</code>")

    def show_about(self) -> None:
        QMessageBox.about(self.iface.mainWindow(), "Urban Form Mapper", self.about_text())
