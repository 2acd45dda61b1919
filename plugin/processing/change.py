"""``urbanform:change``: two dates of one place assigned to one saved cluster model, tile by tile.

The tiles of both dates go into the model's clusters on the first date's grid (the second date is warped onto
it); each tile gets both clusters, whether it changed, and a change score. The tiles load styled by the score,
with the tiles that changed cluster outlined (the engine's OUT_change.qml).
"""
from __future__ import annotations

import shutil
import tempfile

from qgis.core import QgsProcessing, QgsProcessingOutputFile, QgsProcessingParameterExtent, QgsProcessingUtils

from ...engine.contract.tools import TOOLS
from ..requests.change import ChangeRequest
from . import params
from .base import EngineAlgorithm, forget_output, load_output_as
from .cluster import EXTENT, POLYGONS, ClusterAlgorithm
from .styling import qml_styler

OUTPUT, TRANSITIONS, HEATMAP, ALLUVIAL, MANIFEST = "OUTPUT", "TRANSITIONS", "HEATMAP", "ALLUVIAL", "MANIFEST"

CHANGE = TOOLS["change"]
# every declared parameter of the tool (overwrite: Processing replaces its outputs; the extent is QGIS's own
# parameter, in any CRS)
PARAMS = ("model", "raster_before", "raster_after", "resample", "res_tolerance", "area", "device", "precision",
          "batch_size", "out")
OPTIONS = {"resample": {"title": "Resample to the model's resolution"}, "area": {"layer_types": POLYGONS},
           "out": {"output": "vector", "layer_types": [QgsProcessing.TypeVectorPolygon], "title": "Change tiles"}}
NOTES = {"raster_before": "A local raster file with the band count of the model's raster.",
         "raster_after": "A local raster file; another CRS or resolution is warped onto the first date's grid.",
         "area": "Any CRS; the selected features only if so chosen.",
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
        self.add_params(*PARAMS[:5])
        self.addParameter(QgsProcessingParameterExtent(EXTENT, "Extent (only tiles centred inside)", optional=True))
        self.add_params(*PARAMS[5:])
        self.addOutput(QgsProcessingOutputFile(TRANSITIONS, "Transitions"))
        self.addOutput(QgsProcessingOutputFile(HEATMAP, "Transition heatmap"))
        self.addOutput(QgsProcessingOutputFile(ALLUVIAL, "Alluvial plot"))
        self.addOutput(QgsProcessingOutputFile(MANIFEST, "Run manifest"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 - QGIS API
        before = self.parameterAsRasterLayer(parameters, self.parameter_name("raster_before"), context)
        after = self.parameterAsRasterLayer(parameters, self.parameter_name("raster_after"), context)
        out = ClusterAlgorithm.output_path(self, parameters, context)
        value = lambda name: self.param_value(parameters, name, context)      # noqa: E731
        workdir = tempfile.mkdtemp(prefix="urbanform_change_", dir=QgsProcessingUtils.tempFolder())
        try:
            before_file = self.local_raster(before, parameters, context, feedback)     # a web layer: written now
            after_file = self.local_raster(after, parameters, context, feedback)
            request = ChangeRequest(model=value("model") or "", raster_before=before_file, raster_after=after_file,
                                    out=out, resample=value("resample"), res_tolerance=value("res_tolerance"),
                                    extent=ClusterAlgorithm.extent_in_raster_crs(self, parameters, context, before,
                                                                                 before_file),
                                    area=ClusterAlgorithm.area_file(self, parameters, context, workdir),
                                    device=value("device"), precision=value("precision"),
                                    batch_size=value("batch_size"), overwrite=True)
            outputs = self.run_request(request, feedback)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        if outputs is None:
            forget_output(context, out)
            return {}
        load_output_as(context, out, f"{out}|layername=tiles", qml_styler(outputs["style"]))
        return {OUTPUT: out, TRANSITIONS: str(outputs["transitions_csv"]), HEATMAP: str(outputs["heatmap"]),
                ALLUVIAL: str(outputs["alluvial"]), MANIFEST: str(outputs["manifest"])}
