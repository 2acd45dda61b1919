"""The Processing provider ``urbanform``: one algorithm per engine tool.

Each algorithm lives in its own module under plugin/processing/ and is listed
in ``ALGORITHMS`` as ``"module.ClassName"``; the modules are imported when
QGIS asks the provider for its algorithms, not when the plugin loads.
"""
from __future__ import annotations

import importlib

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .paths import icon_path

ALGORITHMS: list[str] = [
    "cluster.ClusterAlgorithm",
    "deepcluster.DeepClusterAlgorithm",
    "sweep.SweepAlgorithm",
    "predict.PredictAlgorithm",
    "export.ExportShapefileAlgorithm",
    "statistics.StatisticsAlgorithm",
    "statistics.ExportAlgorithm",
    "segmentation.TrainSegmentationAlgorithm",
    "segmentation.SegmentAlgorithm",
    "segmentation.EvaluateSegmentationAlgorithm",
    "report.ReportAlgorithm",
    "change.ChangeAlgorithm",
    "similar.SimilarAlgorithm",
    "classify.ClassifyAlgorithm",
    "setupengine.SetupEngineAlgorithm",
]


def algorithm_classes() -> list[type]:
    """The classes named in ``ALGORITHMS``, imported from plugin/processing/."""
    classes = []
    for entry in ALGORITHMS:
        module_name, class_name = entry.rsplit(".", 1)
        module = importlib.import_module(f"{__package__}.processing.{module_name}")
        classes.append(getattr(module, class_name))
    return classes


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
        for algorithm in algorithm_classes():
            self.addAlgorithm(algorithm())

    # Every vector output of the engine is a GeoPackage (field names fit a Shapefile; see
    # urbanform:exportshapefile), so temporary outputs and the file dialogs use .gpkg.
    def defaultVectorFileExtension(self, hasGeometry: bool = True) -> str:  # noqa: N802,N803 - QGIS API
        return "gpkg"

    def supportedOutputVectorLayerExtensions(self) -> list[str]:  # noqa: N802 - QGIS API
        return ["gpkg"]
