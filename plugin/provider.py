"""The Processing provider ``urbanform``: one algorithm per engine tool.

Algorithms are added by the issues that add engine tools; each lives in its
own module under plugin/ and is listed in ``ALGORITHMS``.
"""
from __future__ import annotations

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .paths import icon_path

ALGORITHMS: list = []


class UrbanFormProvider(QgsProcessingProvider):
    def id(self) -> str:  # noqa: A003 - QGIS API
        return "urbanform"

    def name(self) -> str:
        return "Urban Form Mapper"

    def longName(self) -> str:  # noqa: N802 - QGIS API
        return "Urban Form Mapper (tile clustering and building segmentation)"

    def icon(self) -> QIcon:
        return QIcon(str(icon_path()))

    def loadAlgorithms(self) -> None:  # noqa: N802 - QGIS API
        for algorithm in ALGORITHMS:
            self.addAlgorithm(algorithm())
