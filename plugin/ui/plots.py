"""The plots of a sensitivity sweep or of a run's statistics (PNG files the engine wrote), shown without
blocking QGIS.

A non-modal dialog with one tab per plot: the metrics against K first, then
the cluster lineage across K and the PCA scatter of each tile size. With the
setting ``/urbanform/plots_external`` true the PNGs open in the system's image
viewer instead (QDesktopServices).
"""
from __future__ import annotations

from pathlib import Path

from qgis.PyQt.QtCore import Qt, QUrl
from qgis.PyQt.QtGui import QDesktopServices, QPixmap
from qgis.PyQt.QtWidgets import QDialog, QDialogButtonBox, QLabel, QScrollArea, QTabWidget, QVBoxLayout

from ...engine.contract.outputs import label_of_tag
from .. import settings

EXTERNAL_KEY = "plots_external"


def plot_title(path: Path, run_name: str) -> str:
    """'metrics', 'lineage 64px', 'pca 2.5m' from RUN_lineage_64px.png, RUN_pca_2_5m.png."""
    stem = path.stem[len(run_name) + 1:] if path.stem.startswith(run_name + "_") else path.stem
    kind, _, tag = stem.partition("_")
    if kind in ("lineage", "pca") and tag:          # contract.outputs.sweep_outputs: the tile size's tag
        return f"{kind} {label_of_tag(tag)}"
    return stem.replace("_", " ")


class PlotsDialog(QDialog):
    """One tab per PNG; closing it only hides it (the dock reuses it for the same run)."""

    def __init__(self, run_name: str, paths: list[Path], parent=None, kind: str = "sweep"):
        super().__init__(parent)
        self.setModal(False)
        self.setWindowTitle(f"Urban Form Mapper: {kind} {run_name}")
        self.run_name = run_name
        self.tabs = QTabWidget(self)
        self.paths: list[Path] = []
        for path in paths:
            pixmap = QPixmap(str(path))
            if pixmap.isNull():
                continue
            label = QLabel()
            label.setPixmap(pixmap)
            label.setAlignment(Qt.AlignCenter)
            label.setToolTip(str(path))
            area = QScrollArea()
            area.setWidget(label)
            area.setWidgetResizable(True)
            self.tabs.addTab(area, plot_title(path, run_name))
            self.paths.append(path)
        buttons = QDialogButtonBox(QDialogButtonBox.Close)
        buttons.rejected.connect(self.hide)
        layout = QVBoxLayout(self)
        layout.addWidget(self.tabs)
        layout.addWidget(buttons)
        self.resize(900, 700)


def show_plots(run_name: str, paths: list[Path], parent=None, kind: str = "sweep") -> PlotsDialog | None:
    """Show the existing PNGs of ``paths``: a non-modal dialog (returned), or the system viewer (None).

    ``kind`` names the plots in the title: a sweep's, or a run's statistics (cluster profile, box plots).
    """
    existing = [Path(p) for p in paths if Path(p).is_file()]
    if settings.get(EXTERNAL_KEY, False, bool):
        for path in existing:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(path)))
        return None
    dialog = PlotsDialog(run_name, existing, parent, kind)
    dialog.show()
    return dialog
