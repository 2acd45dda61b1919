"""``urbanform:exportshapefile``: write any vector layer as an ESRI Shapefile, losing nothing.

Pure QGIS, no engine. The Shapefile keeps the layer's CRS (.prj) and is
encoded in UTF-8 (.cpg). A dBASE field name holds at most 10 characters; the
engine's outputs respect that, and a layer with a longer name is refused
(naming the field) rather than silently truncated.
"""
from __future__ import annotations

from pathlib import Path

from qgis.core import (QgsProcessing, QgsProcessingException, QgsProcessingParameterFileDestination,
                       QgsProcessingParameterVectorLayer, QgsVectorFileWriter)

from .base import UrbanFormAlgorithm

INPUT, OUTPUT = "INPUT", "OUTPUT"
MAX_FIELD_NAME = 10

HELP = "\n".join([
    "Writes a vector layer (for example the 'tiles' of a cluster run) as an ESRI Shapefile: .shp, .shx, .dbf, "
    "a .prj with the layer's CRS and a .cpg declaring UTF-8 text. An existing Shapefile of that name is replaced.",
    "• Vector layer: any vector layer or table. Field names must have at most 10 characters (the dBASE limit); "
    "a longer one is refused, naming the field, so that nothing is silently renamed.",
    "• Shapefile: the .shp file to write.",
])


class ExportShapefileAlgorithm(UrbanFormAlgorithm):
    """Export a layer to Shapefile with its CRS and UTF-8 encoding."""

    layer = None          # the copy taken in prepareAlgorithm, for this run only

    NAME = "exportshapefile"
    DISPLAY_NAME = "Export layer to Shapefile"
    HELP_TEXT = HELP

    def initAlgorithm(self, config=None) -> None:  # noqa: N802 - QGIS API
        self.addParameter(QgsProcessingParameterVectorLayer(INPUT, "Vector layer", [QgsProcessing.TypeVector]))
        self.addParameter(QgsProcessingParameterFileDestination(OUTPUT, "Shapefile", "ESRI Shapefile (*.shp)"))

    def prepareAlgorithm(self, parameters, context, feedback) -> bool:  # noqa: N802 - QGIS API
        """On the main thread: take a copy of the layer, to be read on the worker thread.

        (The pattern of QGIS's own Package Layers: a project layer belongs to the
        main thread, its clone can be read anywhere.)
        """
        layer = self.parameterAsVectorLayer(parameters, INPUT, context)
        if layer is None:
            raise QgsProcessingException("Choose a vector layer (INPUT).")
        self.layer = layer.clone()
        return True

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 - QGIS API
        check_field_names(self.layer)        # here, not in prepare: Processing passes this message on as is
        path = self.parameterAsFileOutput(parameters, OUTPUT, context)
        if Path(path).suffix.lower() != ".shp":
            raise QgsProcessingException(f"The output {path} must be a Shapefile name ending in .shp.")
        if not write_shapefile(self.layer, path, context, feedback):
            return {}
        return {OUTPUT: path}

    def postProcessAlgorithm(self, context, feedback):  # noqa: N802 - QGIS API
        self.layer = None                    # release the copy on the main thread
        return {}


def check_field_names(layer) -> None:
    """Refuse a layer with a field name longer than a Shapefile allows (10 bytes in UTF-8), naming the field."""
    too_long = [f.name() for f in layer.fields() if len(f.name().encode("utf-8")) > MAX_FIELD_NAME]
    if not too_long:
        return
    first, others = too_long[0], too_long[1:]
    also = f" (also too long: {', '.join(others)})" if others else ""
    raise QgsProcessingException(
        f"The field {first!r} of layer {layer.name()!r} is too long for a Shapefile, which allows at most "
        f"{MAX_FIELD_NAME} characters (bytes in UTF-8){also}. Rename it (Layer Properties > Fields) or keep the "
        "GeoPackage.")


def write_shapefile(layer, path: str, context, feedback) -> bool:
    """``layer`` as ESRI Shapefile at ``path``, in its own CRS, UTF-8.

    Returns False if cancelled; raises with the writer's message on failure. Either
    way no partial Shapefile is left behind.
    """
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "ESRI Shapefile"
    options.fileEncoding = "UTF-8"
    options.actionOnExistingFile = QgsVectorFileWriter.CreateOrOverwriteFile
    options.feedback = feedback
    error, message, _, _ = QgsVectorFileWriter.writeAsVectorFormatV3(layer, path, context.transformContext(), options)
    cancelled = feedback is not None and feedback.isCanceled()
    if cancelled or error != QgsVectorFileWriter.NoError:
        QgsVectorFileWriter.deleteShapeFile(path)
    if not cancelled and error != QgsVectorFileWriter.NoError:
        raise QgsProcessingException(f"Cannot write {path}: {message}")
    return not cancelled
