"""The optional statistics layers of a run: building polygons, road lines, a population raster.

The engine reads files. A layer that is a plain local file (a GeoJSON, a
Shapefile, a one-layer GeoPackage, a GeoTIFF) is passed as is; any other layer
(a memory layer, a database table, one layer of a multi-layer GeoPackage, a
filtered layer, a web raster) is written to a temporary GeoPackage or GeoTIFF
before the run and removed afterwards. Used by the dock (the three pickers)
and by the Processing algorithms; no engine imports here.
"""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from qgis.core import (
    QgsMapLayerProxyModel,
    QgsProject,
    QgsProviderRegistry,
    QgsRasterFileWriter,
    QgsRasterLayer,
    QgsRasterPipe,
    QgsVectorFileWriter,
    QgsVectorLayer,
)

from .. import settings

# (dock attribute, request field, layer filter, tooltip)
PICKERS = (
    ("buildingsCombo", "buildings", QgsMapLayerProxyModel.PolygonLayer,
     "Building footprints (polygons): count, area, coverage, mean size and orientation per tile"),
    ("roadsCombo", "roads", QgsMapLayerProxyModel.LineLayer,
     "Roads (lines): length per tile, distance to the nearest road and (with a highway attribute) major road"),
    ("populationCombo", "population", QgsMapLayerProxyModel.RasterLayer,
     "Population counts per cell (WorldPop style): people per km² per tile"),
)
KEY = "dock/stats_"


def init_pickers(dock) -> None:
    """Filters, an empty first entry (no layer) and nothing chosen."""
    for attr, _field, filters, tip in PICKERS:
        combo = getattr(dock, attr)
        combo.setFilters(filters)
        combo.setAllowEmptyLayer(True)
        combo.setLayer(None)
        combo.setToolTip(tip + " (optional)")


def signals(dock) -> list:
    return [getattr(dock, attr).layerChanged for attr, *_ in PICKERS]


def layers(dock) -> dict:
    """request field -> the chosen layer (None when empty)."""
    return {field: getattr(dock, attr).currentLayer() for attr, field, *_ in PICKERS}


def local_file(layer) -> str:
    """The file behind ``layer`` when the engine can read it as it is, else ''."""
    if isinstance(layer, QgsRasterLayer):
        source = layer.source()
        return source if layer.providerType() == "gdal" and Path(source).is_file() else ""
    if not isinstance(layer, QgsVectorLayer) or layer.providerType() != "ogr" or layer.subsetString():
        return ""
    parts = QgsProviderRegistry.instance().decodeUri("ogr", layer.source())
    path = parts.get("path") or ""
    if not path or not Path(path).is_file():
        return ""
    if parts.get("layerName") or parts.get("layerId") not in (None, 0, "0"):
        if len(layer.dataProvider().subLayers()) > 1:
            return ""                                   # the engine would read the file's first layer
    return path


def temp_path(layer, folder: str | Path | None = None) -> str:
    """Where a layer that is not a plain file is written for the run (.gpkg or .tif)."""
    suffix = ".tif" if isinstance(layer, QgsRasterLayer) else ".gpkg"
    name = re.sub(r"\W+", "_", layer.id())
    folder = Path(folder) if folder else Path(tempfile.gettempdir()) / "urbanform-stats"
    return str(folder / f"{os.getpid()}_{name}{suffix}")


def paths(dock) -> dict:
    """request field -> the file the engine reads (planned temporary files included); no I/O beyond a stat."""
    return {field: (local_file(layer) or temp_path(layer)) if layer is not None else None
            for field, layer in layers(dock).items()}


def write_layer(layer, path: str, transform_context=None) -> str | None:
    """Write ``layer`` to ``path`` (GeoPackage or GeoTIFF); None when done, else the error message."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    context = transform_context or QgsProject.instance().transformContext()
    if isinstance(layer, QgsRasterLayer):
        provider = layer.dataProvider()
        pipe = QgsRasterPipe()
        if not pipe.set(provider.clone()):
            return "its data cannot be read"
        writer = QgsRasterFileWriter(path)
        writer.setOutputFormat("GTiff")
        error = writer.writeRaster(pipe, provider.xSize(), provider.ySize(), provider.extent(), provider.crs(),
                                   context)
        return None if error == QgsRasterFileWriter.NoError else f"GDAL error {int(error)}"
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    options.layerName = re.sub(r"\W+", "_", layer.name()) or "layer"
    options.actionOnExistingFile = QgsVectorFileWriter.CreateOrOverwriteFile
    error, message, *_ = QgsVectorFileWriter.writeAsVectorFormatV3(layer, path, context, options)
    return None if error == QgsVectorFileWriter.NoError else (message or f"error {int(error)}")


class TempLayers:
    """The temporary files written for one run; ``write`` before it, ``remove`` after it (success or not)."""

    def __init__(self):
        self.files: list[str] = []

    def write(self, chosen: dict, planned: dict) -> str | None:
        """Write each chosen layer whose planned path is not its own file; None, or the message naming the layer."""
        for field, layer in chosen.items():
            if layer is None or planned.get(field) == local_file(layer):
                continue
            error = write_layer(layer, planned[field])
            self.files.append(planned[field])
            if error:
                return f"The layer {layer.name()!r} could not be written to a temporary file for the run: {error}"
        return None

    def remove(self) -> None:
        for path in self.files:
            for extra in ("", "-wal", "-shm", ".aux.xml"):
                try:
                    os.remove(path + extra)
                except OSError:
                    pass
        self.files = []


# -- settings ---------------------------------------------------------------------------------------
def save(dock) -> None:
    """Remember the chosen layers by source (and the empty choice)."""
    for field, layer in layers(dock).items():
        settings.set(KEY + field, layer.source() if layer is not None else "")


def restore(dock) -> None:
    """Choose again the project layers with the remembered sources (layers not in the project stay empty)."""
    project_layers = list(QgsProject.instance().mapLayers().values())
    for attr, field, *_ in PICKERS:
        source = settings.get(KEY + field, "", str)
        combo = getattr(dock, attr)
        for layer in project_layers if source else []:
            if layer.source() == source:
                combo.setLayer(layer)
                if combo.currentLayer() is not None:        # the filter accepted it
                    break
