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
