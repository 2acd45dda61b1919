"""Style the tiles layer Processing loads after a cluster run, as the dock does.

Processing adds the output layer to the project on the main thread, then calls
the layer's post-processor. The colours come from the run's cluster GeoTIFF
(named after the GeoPackage), so the styler needs no state of its own; each load
gets a new one (base.set_post_processor), since QGIS deletes it after use.
"""
from __future__ import annotations

from pathlib import Path

from qgis.core import QgsProcessingLayerPostProcessorInterface, QgsProviderRegistry, QgsRasterLayer, QgsVectorLayer

from ..layers.clusters import cluster_values, style_cluster_raster, style_tiles
from ..requests import ClusterRequest


def cluster_raster_of(tiles: QgsVectorLayer) -> Path:
    """The cluster GeoTIFF written with the GeoPackage that ``tiles`` comes from."""
    gpkg = QgsProviderRegistry.instance().decodeUri("ogr", tiles.source()).get("path") or tiles.source()
    return ClusterRequest(raster="", out=gpkg).outputs()["tif"]


def style_tiles_like_raster(tiles: QgsVectorLayer) -> bool:
    """Categorized colours on ``cluster`` from the cluster GeoTIFF's colour table; False if there is no GeoTIFF."""
    raster = QgsRasterLayer(str(cluster_raster_of(tiles)), "clusters")
    if not raster.isValid():
        return False
    k = max(cluster_values(tiles), default=0) + 1
    style_tiles(tiles, style_cluster_raster(raster, k))
    tiles.triggerRepaint()
    return True


class TilesStyler(QgsProcessingLayerPostProcessorInterface):
    """Post-processor for a loaded ``tiles`` layer; never fails the run."""

    def postProcessLayer(self, layer, context, feedback) -> None:  # noqa: N802 - QGIS API
        try:
            if isinstance(layer, QgsVectorLayer) and style_tiles_like_raster(layer):
                return
            reason = "no cluster GeoTIFF next to it"
        except Exception as exc:  # noqa: BLE001 - styling is a nicety; the layer is loaded anyway
            reason = str(exc)
        if feedback is not None:
            feedback.pushInfo(f"The tiles layer keeps the default style ({reason}).")


TILES_STYLER = TilesStyler      # a factory: the layer details own (and delete) each post-processor


class QmlStyler(QgsProcessingLayerPostProcessorInterface):
    """Post-processor that gives a loaded layer the QGIS style the engine wrote next to it (a change run's
    OUT_change.qml); never fails the run."""

    def __init__(self, qml: "str | Path"):
        super().__init__()
        self.qml = str(qml)

    def postProcessLayer(self, layer, context, feedback) -> None:  # noqa: N802 - QGIS API
        message, ok = layer.loadNamedStyle(self.qml)
        if ok:
            layer.triggerRepaint()
        elif feedback is not None:
            feedback.pushInfo(f"The layer keeps the default style ({message}).")


def qml_styler(qml: "str | Path"):
    """A factory of :class:`QmlStyler` for ``qml`` (the layer details own, and delete, each post-processor)."""
    return lambda: QmlStyler(qml)
