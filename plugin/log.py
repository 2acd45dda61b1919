"""Messages to QGIS's log panel, tab "Urban Form Mapper"."""
from __future__ import annotations

from qgis.core import Qgis, QgsMessageLog

TAG = "Urban Form Mapper"


def info(message: str) -> None:
    QgsMessageLog.logMessage(message, TAG, Qgis.Info)


def warning(message: str) -> None:
    QgsMessageLog.logMessage(message, TAG, Qgis.Warning)


def critical(message: str) -> None:
    QgsMessageLog.logMessage(message, TAG, Qgis.Critical)


LONG = 100          # characters: a longer message gets a "Details" button


def push(bar, text: str, level=Qgis.Info, duration: int = 8, title: str = TAG) -> None:
    """``text`` in QGIS's message bar, and whole in the log panel; a long message (which the bar cuts to a
    line or two) gets a "Details" button that opens the log panel on it."""
    long = len(text) > LONG or "\n" in text
    if long or bar is None:
        QgsMessageLog.logMessage(text, TAG, level if level != Qgis.Success else Qgis.Info)
    if bar is None:
        return
    bar.pushMessage(title, text, level=level, duration=duration)
    if not long:
        return
    item = bar.currentItem() if hasattr(bar, "currentItem") else None
    if item is None or item.text() != text or item.layout() is None:
        return
    from qgis.PyQt.QtWidgets import QPushButton

    button = QPushButton("Details", item)
    button.setToolTip("The whole message in the log panel (tab Urban Form Mapper)")
    button.clicked.connect(lambda: open_log())          # looked up at click time
    item.layout().addWidget(button)


def open_log() -> None:
    """Show QGIS's log panel (the messages are under the tab Urban Form Mapper)."""
    try:
        from qgis.utils import iface
    except ImportError:
        return
    if iface is not None and hasattr(iface, "openMessageLog"):
        iface.openMessageLog()
