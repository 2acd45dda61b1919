"""``urbanform:predict``: assign the tiles of a raster to the clusters of a saved model (``OUT_model.pt``).

Another city or another date mapped to the same urban-form types: the engine
refuses a raster whose bands or resolution make that meaningless (or resamples
it on request). The result reads and styles like a cluster run's.
"""
from __future__ import annotations

from qgis.core import QgsProcessing, QgsProcessingOutputFile, QgsProcessingOutputRasterLayer

from ...engine.contract.tools import TOOLS
from ..requests import PredictRequest
from . import params
from .base import EngineAlgorithm, forget_output, load_output_as
from .cluster import ClusterAlgorithm
from .styling import TILES_STYLER

MODEL, INPUT, RESAMPLE = "MODEL", "INPUT", "RESAMPLE"
OUTPUT, CLUSTER_RASTER, MANIFEST = "OUTPUT", "CLUSTER_RASTER", "MANIFEST"

PREDICT = TOOLS["predict"]
PARAMS = ("model", "raster", "resample", "dask", "out")
OPTIONS = {"resample": {"title": "Resample to the model's resolution"},
           "out": {"output": "vector", "layer_types": [QgsProcessing.TypeVectorPolygon], "title": "Clustered tiles"}}
NOTES = {"raster": "A local raster file with the band count of the model's raster.",
         "resample": "Otherwise a raster whose pixel size differs from the model's (beyond a small tolerance) is "
                     "refused.",
         "out": "An existing file is replaced."}

HELP = "\n".join([
    "Assigns the tiles of a raster to the clusters of a model saved by a cluster run (k-means or DeepCluster): "
    "the same CNN, PCA and cluster centres, so cluster 3 here is the urban-form type of cluster 3 there. The "
    "tiles are cut as in the original run (same tile size in metres, or in pixels at the same resolution).",
    "Parameters:",
    *params.bullets(PREDICT, PARAMS, OPTIONS, NOTES),
    "Outputs:",
    "• Clustered tiles: layer 'tiles' as for Cluster raster tiles, loaded styled by cluster.",
    f"• Cluster raster: {params.output_name(PREDICT, 'tif')}, one pixel per tile, with the model's colours.",
    f"• Run manifest: {params.output_name(PREDICT, 'manifest')}.",
])


class PredictAlgorithm(EngineAlgorithm):
    """Processing front end of ``python -m engine predict``."""

    NAME = "predict"
    DISPLAY_NAME = "Assign tiles to a saved cluster model"
    HELP_TEXT = HELP
    TOOL = PREDICT.name
    PARAMS = PARAMS
    OPTIONS = OPTIONS

    def initAlgorithm(self, config=None) -> None:  # noqa: N802 - QGIS API
        self.add_params(*PARAMS)
        self.addOutput(QgsProcessingOutputRasterLayer(CLUSTER_RASTER, "Cluster raster"))
        self.addOutput(QgsProcessingOutputFile(MANIFEST, "Run manifest"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 - QGIS API
        raster = self.parameterAsRasterLayer(parameters, INPUT, context)
        out = ClusterAlgorithm.output_path(self, parameters, context)
        request = PredictRequest(model=self.param_value(parameters, "model", context) or "",
                                 raster=self.study_raster(parameters, context, self.local_raster(
                                     raster, parameters, context, feedback), feedback), out=out,
                                 resample=self.param_value(parameters, "resample", context),
                                 dask=self.param_value(parameters, "dask", context) or None, overwrite=True)
        outputs = self.run_request(request, feedback)
        if outputs is None:
            forget_output(context, out)
            return {}
        load_output_as(context, out, f"{out}|layername=tiles", TILES_STYLER)
        return {OUTPUT: out, CLUSTER_RASTER: str(outputs["tif"]), MANIFEST: str(outputs["manifest"])}
