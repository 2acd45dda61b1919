"""``urbanform:predict``: assign the tiles of a raster to the clusters of a saved model (``OUT_model.pt``).

Another city or another date mapped to the same urban-form types: the engine
refuses a raster whose bands or resolution make that meaningless (or resamples
it on request). The result reads and styles like a cluster run's.
"""
from __future__ import annotations

from qgis.core import (QgsProcessing, QgsProcessingOutputFile, QgsProcessingOutputRasterLayer,
                       QgsProcessingParameterBoolean, QgsProcessingParameterFile, QgsProcessingParameterRasterLayer,
                       QgsProcessingParameterVectorDestination)

from ..requests import PredictRequest
from .base import EngineAlgorithm, forget_output, load_output_as
from .cluster import ClusterAlgorithm, local_raster_path
from .styling import TILES_STYLER

MODEL, INPUT, RESAMPLE = "MODEL", "INPUT", "RESAMPLE"
OUTPUT, CLUSTER_RASTER, MANIFEST = "OUTPUT", "CLUSTER_RASTER", "MANIFEST"

HELP = "\n".join([
    "Assigns the tiles of a raster to the clusters of a model saved by a cluster run (k-means or DeepCluster): "
    "the same CNN, PCA and cluster centres, so cluster 3 here is the urban-form type of cluster 3 there. The "
    "tiles are cut as in the original run (same tile size in metres, or in pixels at the same resolution).",
    "Parameters:",
    "• Cluster model: the OUT_model.pt file written next to a cluster run's GeoPackage.",
    "• Raster layer: a local raster file with the band count of the model's raster.",
    "• Resample to the model's resolution: otherwise a raster whose pixel size differs from the model's (beyond "
    "a small tolerance) is refused.",
    "• Clustered tiles: the output GeoPackage (.gpkg); an existing file is replaced.",
    "Outputs:",
    "• Clustered tiles: layer 'tiles' as for Cluster raster tiles, loaded styled by cluster.",
    "• Cluster raster: OUT_clusters.tif, one pixel per tile, with the model's colours.",
    "• Run manifest: OUT_manifest.json.",
])


class PredictAlgorithm(EngineAlgorithm):
    """Processing front end of ``python -m engine predict``."""

    NAME = "predict"
    DISPLAY_NAME = "Assign tiles to a saved cluster model"
    HELP_TEXT = HELP

    def initAlgorithm(self, config=None) -> None:  # noqa: N802 - QGIS API
        self.addParameter(QgsProcessingParameterFile(MODEL, "Cluster model", extension="pt"))
        self.addParameter(QgsProcessingParameterRasterLayer(INPUT, "Raster layer"))
        self.addParameter(QgsProcessingParameterBoolean(RESAMPLE, "Resample to the model's resolution", False))
        self.addParameter(QgsProcessingParameterVectorDestination(OUTPUT, "Clustered tiles",
                                                                  QgsProcessing.TypeVectorPolygon))
        self.addOutput(QgsProcessingOutputRasterLayer(CLUSTER_RASTER, "Cluster raster"))
        self.addOutput(QgsProcessingOutputFile(MANIFEST, "Run manifest"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 - QGIS API
        raster = self.parameterAsRasterLayer(parameters, INPUT, context)
        out = ClusterAlgorithm.output_path(self, parameters, context)
        request = PredictRequest(model=self.parameterAsFile(parameters, MODEL, context),
                                 raster=local_raster_path(raster), out=out,
                                 resample=self.parameterAsBool(parameters, RESAMPLE, context), overwrite=True)
        problems = request.problems()
        if problems:
            raise self.problems_error(problems)
        outputs = request.outputs()
        if not self.run_engine_command(request.argv(), list(outputs.values()), feedback):
            forget_output(context, out)
            return {}
        load_output_as(context, out, f"{out}|layername=tiles", TILES_STYLER)
        return {OUTPUT: out, CLUSTER_RASTER: str(outputs["tif"]), MANIFEST: str(outputs["manifest"])}
