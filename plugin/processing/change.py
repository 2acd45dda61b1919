"""``urbanform:change``: two dates of one place assigned to one saved cluster model, tile by tile.

The tiles of both dates go into the model's clusters on the first date's grid (the second date is warped onto
it); each tile gets both clusters, whether it changed, and a change score. The tiles load styled by the score,
with the tiles that changed cluster outlined (the engine's OUT_change.qml).
"""
from __future__ import annotations

from qgis.core import QgsProcessing, QgsProcessingOutputFile

from ...engine.contract.tools import TOOLS
from ..requests.change import ChangeRequest
from . import params
from .base import EngineAlgorithm, forget_output, load_output_as
from .cluster import ClusterAlgorithm
from .styling import qml_styler

OUTPUT, TRANSITIONS, HEATMAP, ALLUVIAL, MANIFEST = "OUTPUT", "TRANSITIONS", "HEATMAP", "ALLUVIAL", "MANIFEST"

CHANGE = TOOLS["change"]
PARAMS = ("model", "raster_before", "raster_after", "resample", "out")
OPTIONS = {"resample": {"title": "Resample to the model's resolution"},
           "out": {"output": "vector", "layer_types": [QgsProcessing.TypeVectorPolygon], "title": "Change tiles"}}
NOTES = {"raster_before": "A local raster file with the band count of the model's raster.",
         "raster_after": "A local raster file; another CRS or resolution is warped onto the first date's grid.",
         "out": "An existing file is replaced."}

HELP = "\n".join([
    "Maps urban change between two dates with a cluster model saved by a cluster run: both images are cut on "
    "one tile grid and every tile of each date goes into the model's clusters, so the tiles that changed type "
    "show, and a continuous change score (the distance between the tile's two feature vectors in the model's "
    "space) also shows change within a type.",
    "Parameters:",
    *params.bullets(CHANGE, PARAMS, OPTIONS, NOTES),
    "Outputs:",
    "• Change tiles: layer 'tiles' with clust_a, clust_b, changed and chg_score, loaded styled by the score.",
    f"• Transitions: {params.output_name(CHANGE, 'transitions_csv')}, tiles from each cluster to each cluster.",
    f"• Transition heatmap: {params.output_name(CHANGE, 'heatmap')}.",
    f"• Alluvial plot: {params.output_name(CHANGE, 'alluvial')}.",
    f"• Run manifest: {params.output_name(CHANGE, 'manifest')}.",
])


class ChangeAlgorithm(EngineAlgorithm):
    """Processing front end of ``python -m engine change``."""

    NAME = "change"
    DISPLAY_NAME = "Urban change between two dates"
    HELP_TEXT = HELP
    TOOL = CHANGE.name
    PARAMS = PARAMS
    OPTIONS = OPTIONS

    def initAlgorithm(self, config=None) -> None:  # noqa: N802 - QGIS API
        self.add_params(*PARAMS)
        self.addOutput(QgsProcessingOutputFile(TRANSITIONS, "Transitions"))
        self.addOutput(QgsProcessingOutputFile(HEATMAP, "Transition heatmap"))
        self.addOutput(QgsProcessingOutputFile(ALLUVIAL, "Alluvial plot"))
        self.addOutput(QgsProcessingOutputFile(MANIFEST, "Run manifest"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 - QGIS API
        before = self.parameterAsRasterLayer(parameters, self.parameter_name("raster_before"), context)
        after = self.parameterAsRasterLayer(parameters, self.parameter_name("raster_after"), context)
        out = ClusterAlgorithm.output_path(self, parameters, context)
        request = ChangeRequest(model=self.param_value(parameters, "model", context) or "",
                                raster_before=self.local_raster(before, parameters, context, feedback),
                                raster_after=self.local_raster(after, parameters, context, feedback),
                                out=out, resample=self.param_value(parameters, "resample", context), overwrite=True)
        outputs = self.run_request(request, feedback)
        if outputs is None:
            forget_output(context, out)
            return {}
        load_output_as(context, out, f"{out}|layername=tiles", qml_styler(outputs["style"]))
        return {OUTPUT: out, TRANSITIONS: str(outputs["transitions_csv"]), HEATMAP: str(outputs["heatmap"]),
                ALLUVIAL: str(outputs["alluvial"]), MANIFEST: str(outputs["manifest"])}
