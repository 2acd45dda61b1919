"""``urbanform:sweep``: the engine's ``sweep`` tool, clusters for every K at every tile size.

The parameters become a :class:`~plugin.requests.SweepRequest`, the object the
dock builds in "Sensitivity sweep" mode. When run from the toolbox, each
``tiles_<size>`` layer is loaded styled on its largest K (the dock's K slider
restyles; here the layer's style can be changed to any ``k<K>`` column).
"""
from __future__ import annotations

from pathlib import Path

from qgis.core import (QgsProcessingContext, QgsProcessingLayerPostProcessorInterface,
                       QgsProcessingOutputFile, QgsProcessingParameterBoolean, QgsProcessingParameterDefinition,
                       QgsProcessingParameterEnum, QgsProcessingParameterFile,
                       QgsProcessingParameterFileDestination, QgsProcessingParameterNumber,
                       QgsProcessingParameterRasterLayer, QgsProcessingParameterString, QgsVectorLayer)

from ...engine.contract.limits import MIN_TILE_PX
from ..layers.clusters import k_values, style_sweep_layer, sweep_layer_names
from ..requests import BACKBONES, DEVICES, MAX_EPOCHS, METHODS, UNITS, SweepRequest
from .base import EngineAlgorithm, set_post_processor
from .cluster import (DEFAULT_BACKBONE, DEFAULT_WEIGHTS, UNIT_LABELS, WEIGHT_CHOICES, WEIGHT_LABELS,
                      local_raster_path)

INPUT, K, TILE_SIZES, TILE_UNIT, METHOD, EPOCHS = "INPUT", "K", "TILE_SIZES", "TILE_UNIT", "METHOD", "EPOCHS"
BACKBONE, WEIGHTS, WEIGHTS_FILE, DEVICE, SEED = "BACKBONE", "WEIGHTS", "WEIGHTS_FILE", "DEVICE", "SEED"
RESUME = "RESUME"
OUTPUT, METRICS, MANIFEST = "OUTPUT", "METRICS", "MANIFEST"
METHOD_LABELS = ("k-means", "DeepCluster")               # same order as request.METHODS

HELP = "\n".join([
    "Sensitivity of the clusters to K and to the tile size: clusters the tiles of the raster for every K of a "
    "list at every tile size of a list, with the cluster numbers made consistent across K (a colour means the "
    "same place on every map), and writes metrics and plots to judge which K and tile size to trust. With "
    "k-means the CNN features are computed once per tile size.",
    "Parameters:",
    "• Raster layer: the image, a local file (GeoTIFF or any GDAL raster with a CRS).",
    "• K values: a range 2..12, a list 2,4,6 or both (2..6,8,12); K larger than the number of valid tiles is "
    "skipped with a warning.",
    f"• Tile sizes: comma-separated, e.g. 32,64,128, in the Tile size unit (pixels, at least {MIN_TILE_PX}, or "
    "metres).",
    "• Method: k-means, or DeepCluster (slower: the CNN is trained for each K).",
    "• Training epochs: DeepCluster only.",
    "• CNN backbone, Weights, Weights file, Device and Random seed: as for Cluster raster tiles.",
    "• Sweep GeoPackage: the output file (.gpkg); an existing file is replaced.",
    "• Finish an interrupted sweep (advanced): a cancelled or failed sweep keeps the tile sizes it finished; "
    "run again with the same parameters and this option to compute only the missing ones.",
    "Outputs:",
    "• Sweep GeoPackage: one layer per tile size (tiles_32px, tiles_64px, ...) with tile_id, row, col, "
    "valid_frac, pc1, pc2 and a column per K (k2 ... k12). Loaded into the project styled on the largest K.",
    "• Metrics table: OUT_metrics.csv, per tile size and K: silhouette, Calinski-Harabasz, Davies-Bouldin, NMI "
    "and ARI with the previous K, agreement across tile sizes.",
    "• Run manifest: OUT_manifest.json (complete or not, and what is missing after an interruption).",
    "Plots are written next to them: OUT_metrics.png, and OUT_lineage_64px.png (cluster lineage across K) and "
    "OUT_pca_64px.png (PCA scatter) per tile size.",
])


class SweepAlgorithm(EngineAlgorithm):
    """Processing front end of ``python -m engine sweep``."""

    NAME = "sweep"
    PARAMETER_NAMES = {"tile_size": TILE_SIZES}
    DISPLAY_NAME = "Sensitivity sweep over K and tile size"
    HELP_TEXT = HELP

    def initAlgorithm(self, config=None) -> None:  # noqa: N802 - QGIS API
        number = QgsProcessingParameterNumber
        self.addParameter(QgsProcessingParameterRasterLayer(INPUT, "Raster layer"))
        self.addParameter(QgsProcessingParameterString(K, "K values", "2..12"))
        self.addParameter(QgsProcessingParameterString(TILE_SIZES, "Tile sizes", "32,64,128"))
        self.addParameter(QgsProcessingParameterEnum(TILE_UNIT, "Tile size unit", list(UNIT_LABELS),
                                                     defaultValue=UNITS.index("px")))
        self.addParameter(QgsProcessingParameterEnum(METHOD, "Method", list(METHOD_LABELS), defaultValue=0))
        self.addParameter(number(EPOCHS, "Training epochs", number.Integer, 5, False, 1, MAX_EPOCHS))
        self.addParameter(QgsProcessingParameterEnum(BACKBONE, "CNN backbone", list(BACKBONES),
                                                     defaultValue=BACKBONES.index(DEFAULT_BACKBONE)))
        self.addParameter(QgsProcessingParameterEnum(WEIGHTS, "Weights", list(WEIGHT_LABELS),
                                                     defaultValue=DEFAULT_WEIGHTS))
        self.addParameter(QgsProcessingParameterFile(WEIGHTS_FILE, "Weights file (state dict; overrides Weights)",
                                                     optional=True))
        self.addParameter(QgsProcessingParameterEnum(DEVICE, "Device", list(DEVICES), defaultValue=0))
        self.addParameter(number(SEED, "Random seed", number.Integer, 0, False, 0))
        resume = QgsProcessingParameterBoolean(RESUME, "Finish an interrupted sweep", False)
        resume.setFlags(resume.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(resume)
        self.addParameter(QgsProcessingParameterFileDestination(OUTPUT, "Sweep GeoPackage", "GeoPackage (*.gpkg)"))
        self.addOutput(QgsProcessingOutputFile(METRICS, "Metrics table"))
        self.addOutput(QgsProcessingOutputFile(MANIFEST, "Run manifest"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 - QGIS API
        raster = self.parameterAsRasterLayer(parameters, INPUT, context)
        out = self.parameterAsFileOutput(parameters, OUTPUT, context)
        request = self.build_request(parameters, context, raster, out)
        problems = request.problems()
        if problems:
            raise self.problems_error(problems)
        outputs = request.outputs()
        if not self.run_engine_command(request.argv(), list(outputs.values()), feedback):
            state = request.interrupted()
            if state and state["finished"]:
                feedback.pushInfo(f"The finished tile sizes are kept in {out} ({', '.join(state['finished'])}); "
                                  f"missing: {', '.join(state['missing'])}. Run again with 'Finish an interrupted "
                                  "sweep' to compute them.")
            return {}
        self.load_layers(context, request)
        return {OUTPUT: out, METRICS: str(outputs["metrics_csv"]), MANIFEST: str(outputs["manifest"])}

    def build_request(self, parameters, context, raster, out: str) -> SweepRequest:
        weights_file = self.parameterAsFile(parameters, WEIGHTS_FILE, context)
        return SweepRequest(
            raster=local_raster_path(raster), out=out,
            k_text=self.parameterAsString(parameters, K, context),
            tile_sizes=self.parameterAsString(parameters, TILE_SIZES, context),
            tile_unit=UNITS[self.parameterAsEnum(parameters, TILE_UNIT, context)],
            method=METHODS[self.parameterAsEnum(parameters, METHOD, context)],
            epochs=self.parameterAsInt(parameters, EPOCHS, context),
            backbone=BACKBONES[self.parameterAsEnum(parameters, BACKBONE, context)],
            weights=weights_file or WEIGHT_CHOICES[self.parameterAsEnum(parameters, WEIGHTS, context)],
            device=DEVICES[self.parameterAsEnum(parameters, DEVICE, context)],
            seed=self.parameterAsInt(parameters, SEED, context), overwrite=True,
            resume=self.parameterAsBool(parameters, RESUME, context))

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
