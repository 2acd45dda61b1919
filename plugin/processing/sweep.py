"""``urbanform:sweep``: the engine's ``sweep`` tool, clusters for every K at every tile size.

The parameters become a :class:`~plugin.requests.SweepRequest`, the object the
dock builds in "Sensitivity sweep" mode. When run from the toolbox, each
``tiles_<size>`` layer is loaded styled on its largest K (the dock's K slider
restyles; here the layer's style can be changed to any ``k<K>`` column).
"""
from __future__ import annotations

from pathlib import Path

from qgis.core import (QgsProcessingContext, QgsProcessingLayerPostProcessorInterface, QgsProcessingOutputFile,
                       QgsProcessingParameterString, QgsVectorLayer)

from ...engine.contract.limits import MIN_TILE_PX
from ...engine.contract.tools import TOOLS
from ..layers.clusters import k_values, style_sweep_layer, sweep_layer_names
from ..requests import SweepRequest
from ..requests.sweep import TILE_SIZES as DEFAULT_SIZES
from ..requests.sweep import TILE_UNIT as DEFAULT_UNIT
from . import params
from .base import EngineAlgorithm, set_post_processor
from .cluster import local_raster_path

INPUT, K, TILE_SIZES, TILE_UNIT, METHOD, EPOCHS = "INPUT", "K", "TILE_SIZES", params.TILE_UNIT, "METHOD", "EPOCHS"
BACKBONE, WEIGHTS, WEIGHTS_FILE, DEVICE, SEED = "BACKBONE", params.WEIGHTS, params.WEIGHTS_FILE, "DEVICE", "SEED"
RESUME = "RESUME"
OUTPUT, METRICS, MANIFEST = "OUTPUT", "METRICS", "MANIFEST"

SWEEP = TOOLS["sweep"]
METHOD_LABELS = {"kmeans": "k-means", "deepcluster": "DeepCluster"}
PARAMS = ("raster", "k", "method", "epochs", "backbone", "device", "seed", "resume", "dask", "out")
OPTIONS = {"method": {"labels": METHOD_LABELS}, "resume": {"title": "Finish an interrupted sweep"},
           "out": {"title": "Sweep GeoPackage"}}
NOTES = {"k": "K larger than the number of valid tiles is skipped with a warning.",
         "epochs": "DeepCluster only.",
         "dask": "Optional, for large rasters: local:N runs N worker processes on this computer, "
                 "tcp://host:8786 a Dask scheduler whose workers see the raster and the feature cache.",
         "resume": "A cancelled or failed sweep keeps the tile sizes it finished; run again with the same "
                   "parameters and this option to compute only the missing ones.",
         "out": "An existing file is replaced."}


def output_name(key: str, tag: str = "64px") -> str:
    return params.output_name(SWEEP, key, tag=tag)


HELP = "\n".join([
    "Sensitivity of the clusters to K and to the tile size: clusters the tiles of the raster for every K of a "
    "list at every tile size of a list, with the cluster numbers made consistent across K (a colour means the "
    "same place on every map), and writes metrics and plots to judge which K and tile size to trust. With "
    "k-means the CNN features are computed once per tile size.",
    "Parameters:",
    *params.bullets(SWEEP, PARAMS[:2], OPTIONS, NOTES),
    f"• Tile sizes: comma-separated, e.g. {DEFAULT_SIZES}, in the Tile size unit (pixels, at least {MIN_TILE_PX}, or "
    "metres).",
    *params.bullets(SWEEP, ("method", "epochs"), OPTIONS, NOTES),
    "• CNN backbone, Weights, Weights file, Device and Random seed: as for Cluster raster tiles.",
    *params.bullets(SWEEP, ("resume", "dask", "out"), OPTIONS, NOTES),
    "Outputs:",
    "• Sweep GeoPackage: one layer per tile size (tiles_32px, tiles_64px, ...) with tile_id, row, col, "
    "valid_frac, pc1, pc2 and a column per K (k2 ... k12). Loaded into the project styled on the largest K.",
    f"• Metrics table: {output_name('metrics_csv')}, per tile size and K: silhouette, Calinski-Harabasz, "
    "Davies-Bouldin, NMI and ARI with the previous K, agreement across tile sizes.",
    f"• Run manifest: {output_name('manifest')} (complete or not, and what is missing after an interruption).",
    f"Plots are written next to them: {output_name('metrics_png')}, and {output_name('lineage')} (cluster lineage "
    f"across K) and {output_name('pca')} (PCA scatter) per tile size.",
])


class SweepAlgorithm(EngineAlgorithm):
    """Processing front end of ``python -m engine sweep``."""

    NAME = "sweep"
    PARAMETER_NAMES = {"tile_size": TILE_SIZES}
    DISPLAY_NAME = "Sensitivity sweep over K and tile size"
    HELP_TEXT = HELP
    TOOL = SWEEP.name
    PARAMS = PARAMS
    OPTIONS = OPTIONS

    def initAlgorithm(self, config=None) -> None:  # noqa: N802 - QGIS API
        self.add_params("raster", "k")
        self.addParameter(QgsProcessingParameterString(TILE_SIZES, "Tile sizes", DEFAULT_SIZES))
        self.addParameter(params.unit_parameter(DEFAULT_UNIT))
        self.add_params("method", "epochs", "backbone")
        for parameter in params.weights_parameters(SWEEP.param("weights")):
            self.addParameter(parameter)
        self.add_params("device", "seed", "resume", "dask", "out")
        self.addOutput(QgsProcessingOutputFile(METRICS, "Metrics table"))
        self.addOutput(QgsProcessingOutputFile(MANIFEST, "Run manifest"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 - QGIS API
        raster = self.parameterAsRasterLayer(parameters, INPUT, context)
        out = self.parameterAsFileOutput(parameters, OUTPUT, context)
        request = self.build_request(parameters, context, raster, out,
                                     self.local_raster(raster, parameters, context, feedback))
        outputs = self.run_request(request, feedback)
        if outputs is None:
            state = request.interrupted()
            if state and state["finished"]:
                feedback.pushInfo(f"The finished tile sizes are kept in {out} ({', '.join(state['finished'])}); "
                                  f"missing: {', '.join(state['missing'])}. Run again with 'Finish an interrupted "
                                  "sweep' to compute them.")
            return {}
        self.load_layers(context, request)
        return {OUTPUT: out, METRICS: str(outputs["metrics_csv"]), MANIFEST: str(outputs["manifest"])}

    def build_request(self, parameters, context, raster, out: str, raster_file: str | None = None) -> SweepRequest:
        value = lambda name: self.param_value(parameters, name, context)      # noqa: E731
        return SweepRequest(
            raster=self.study_raster(parameters, context, raster_file or local_raster_path(raster)), out=out,
            k_text=value("k"),
            tile_sizes=self.parameterAsString(parameters, TILE_SIZES, context),
            tile_unit=params.unit_value(self, parameters, context), method=value("method"), epochs=value("epochs"),
            backbone=value("backbone"), weights=params.weights_value(self, parameters, context),
            device=value("device"), seed=value("seed"), overwrite=True, resume=value("resume"),
            dask=value("dask") or None)

    @staticmethod
    def load_layers(context, request: SweepRequest) -> None:
        """Have Processing load each tiles_<size> layer when the run ends (only where it loads results)."""
        project = context.project()
        if project is None:
            return
        gpkg = request.outputs()["gpkg"]
        for layer_name in sweep_layer_names(Path(gpkg)):
            details = QgsProcessingContext.LayerDetails(f"{request.name} {layer_name}", project, layer_name)
            set_post_processor(details, SWEEP_STYLER)
            context.addLayerToLoadOnCompletion(f"{gpkg}|layername={layer_name}", details)


class SweepStyler(QgsProcessingLayerPostProcessorInterface):
    """Categorized on the largest K of the layer, in the engine's palette; never fails the run."""

    def postProcessLayer(self, layer, context, feedback) -> None:  # noqa: N802 - QGIS API
        try:
            if isinstance(layer, QgsVectorLayer) and k_values(layer):
                style_sweep_layer(layer, k_values(layer)[-1])
        except Exception as exc:  # noqa: BLE001 - styling is a nicety; the layer is loaded anyway
            if feedback is not None:
                feedback.pushInfo(f"The sweep layer keeps the default style ({exc}).")


SWEEP_STYLER = SweepStyler      # a factory: the layer details own (and delete) each post-processor
