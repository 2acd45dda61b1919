"""The plugin object QGIS creates: the panel, the menu entries and the Processing provider.

Kept thin (QuickOSM style): it wires actions to the modules that do the work
and undoes everything in ``unload`` so that reloading the plugin is clean. The
panel (plugin/dock.py, with its .ui) is created on first use.
"""
from __future__ import annotations

import html

from qgis.core import QgsApplication
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction, QMessageBox

from .paths import icon_path, read_metadata
from .provider import UrbanFormProvider
from .runner.engine_env import engine_line

MENU = "&Urban Form Mapper"


class UrbanFormPlugin:
    def __init__(self, iface):
        self.iface = iface
        self.provider: UrbanFormProvider | None = None
        self.actions: list[QAction] = []
        self.dock_action: QAction | None = None
        self.dock = None                      # plugin.dock.UrbanFormDock, created on first use

    # -- QGIS hooks -------------------------------------------------------------
    def initProcessing(self) -> None:  # noqa: N802 - QGIS API
        self.provider = UrbanFormProvider()
        QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:  # noqa: N802 - QGIS API
        self.initProcessing()
        icon = QIcon(str(icon_path()))
        self.dock_action = QAction(icon, "Urban Form Mapper", self.iface.mainWindow())
        self.dock_action.setObjectName("urbanformDock")
        self.dock_action.setCheckable(True)
        self.dock_action.setToolTip("Urban Form Mapper: cluster raster tiles into urban-form types")
        self.dock_action.triggered.connect(self.toggle_dock)
        self.iface.addPluginToRasterMenu(MENU, self.dock_action)
        self.iface.addToolBarIcon(self.dock_action)
        about = QAction(icon, "About Urban Form Mapper…", self.iface.mainWindow())
        about.setObjectName("urbanformAbout")
        about.triggered.connect(self.show_about)
        self.iface.addPluginToRasterMenu(MENU, about)
        self.actions += [self.dock_action, about]

    def unload(self) -> None:
        if self.dock is not None:
            self.dock.shutdown()              # cancels a running task
            self.iface.removeDockWidget(self.dock)
            self.dock.deleteLater()
            self.dock = None
        if self.dock_action is not None:
            self.iface.removeToolBarIcon(self.dock_action)
            self.dock_action = None
        for action in self.actions:
            self.iface.removePluginRasterMenu(MENU, action)
            action.deleteLater()
        self.actions.clear()
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None

    # -- the panel ----------------------------------------------------------------
    def toggle_dock(self, checked: bool) -> None:
        if checked:
            self.open_dock()
        elif self.dock is not None:
            self.dock.setUserVisible(False)

    def open_dock(self):
        """Show the panel (creating it the first time) and return it."""
        if self.dock is None:
            from .ui.dock import UrbanFormDock   # loads the .ui: only when the panel is first wanted

            self.dock = UrbanFormDock(self.iface, self.iface.mainWindow())
            self.dock.setObjectName("UrbanFormMapperDock")
            self.iface.addDockWidget(Qt.RightDockWidgetArea, self.dock)
            self.dock.closedStateChanged.connect(self._dock_closed_changed)
        self.dock.setUserVisible(True)
        self.dock_action.setChecked(True)
        return self.dock

    def _dock_closed_changed(self, closed: bool) -> None:
        if self.dock_action is not None:
            self.dock_action.setChecked(not closed)

    # -- actions ------------------------------------------------------------------
    def about_text(self) -> str:
        meta = read_metadata()
        return (f"<b>{meta.get('name', 'Urban Form Mapper')}</b> {meta.get('version', '')}<br><br>"
                f"{meta.get('about', '')}<br><br>"
                "Open the panel from Raster > Urban Form Mapper > Urban Form Mapper or the toolbar. "
                "The first time, the panel offers <b>Set up engine</b>: it installs the engine (Python with "
                "PyTorch, a few GB) into your QGIS profile; nothing else is needed. Servers and scripts: "
                "Processing > Urban Form Mapper > Set up engine (<code>qgis_process run urbanform:setupengine</code>)."
                "<br>Engine: " + html.escape(engine_line()))

    def show_about(self) -> None:
        QMessageBox.about(self.iface.mainWindow(), "Urban Form Mapper", self.about_text())
