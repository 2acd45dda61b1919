"""The plugin's settings in QgsSettings under /urbanform/."""
from __future__ import annotations

from typing import Any

from qgis.core import QgsSettings

PREFIX = "urbanform"


def get(key: str, default: Any = None, type_: type | None = None) -> Any:
    settings = QgsSettings()
    full = f"{PREFIX}/{key}"
    if type_ is None:
        return settings.value(full, default)
    return settings.value(full, default, type=type_)


def set(key: str, value: Any) -> None:  # noqa: A001 - mirrors QgsSettings.setValue
    QgsSettings().setValue(f"{PREFIX}/{key}", value)


def remove(key: str) -> None:
    QgsSettings().remove(f"{PREFIX}/{key}")
