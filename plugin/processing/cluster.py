"""``urbanform:cluster``: cluster the tiles of a raster by CNN features (the engine's ``cluster`` tool).

The parameters become a :class:`~plugin.requests.ClusterRequest`, the same
object the dock builds, so both check the same problems before any work and
run the same command line.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from qgis.core import (QgsFeature, QgsFields, QgsProcessing, QgsProcessingException, QgsProcessingOutputFile,
                       QgsProcessingOutputRasterLayer, QgsProcessingParameterDefinition, QgsProcessingParameterEnum,
                       QgsProcessingParameterExtent, QgsProcessingParameterFeatureSource,
                       QgsProcessingParameterFile, QgsProcessingParameterNumber, QgsProcessingParameterRasterLayer,
                       QgsProcessingParameterVectorDestination, QgsProcessingUtils, QgsVectorFileWriter)

from ...engine.contract import defaults
from ...engine.contract.limits import MAX_K, MIN_K, MIN_TILE_PX
from ..requests import BACKBONES, DEVICES, UNITS, ClusterRequest
from .base import EngineAlgorithm, forget_output, load_output_as
from .styling import TILES_STYLER

INPUT, K, TILE_SIZE, TILE_UNIT, OVERLAP = "INPUT", "K", "TILE_SIZE", "TILE_UNIT", "OVERLAP"
BACKBONE, WEIGHTS, WEIGHTS_FILE, DEVICE, SEED = "BACKBONE", "WEIGHTS", "WEIGHTS_FILE", "DEVICE", "SEED"
EXTENT, AREA, BATCH_SIZE = "EXTENT", "AREA", "BATCH_SIZE"
OUTPUT, CLUSTER_RASTER, MANIFEST = "OUTPUT", "CLUSTER_RASTER", "MANIFEST"

UNIT_LABELS = ("pixels (px)", "metres on the ground (m)")           # same order as request.UNITS
WEIGHT_CHOICES = ("imagenet", "none")
WEIGHT_LABELS = ("ImageNet (pretrained)", "none (random weights)")   # same order as WEIGHT_CHOICES
DEFAULT_BACKBONE = defaults.DEFAULT_BACKBONE
DEFAULT_WEIGHTS = WEIGHT_CHOICES.index(defaults.DEFAULT_WEIGHTS)

# One paragraph per line: the algorithm dialog shows each line as a paragraph, qgis_process prints them as is.
HELP = "\n".join([
    "Cuts a raster into square tiles, computes a CNN feature vector for each tile (on the GPU when there is "
    "one) and groups the tiles into K clusters of similar urban form with k-means. The work runs in the Urban "
    "Form Mapper engine, a separate Python with PyTorch; QGIS stays responsive and Cancel stops it without "
    "leaving files behind.",
    "Parameters:",
    "• Raster layer: the image, a local file (GeoTIFF or any GDAL raster with a CRS). Web and in-memory layers "
    "must first be saved to a GeoTIFF (right-click > Export > Save As).",
    f"• Number of clusters (K): {MIN_K} to {MAX_K}, and at most the number of valid tiles.",
    f"• Tile size and Tile size unit: the side of a tile in pixels (at least {MIN_TILE_PX}) or in metres on the "
    "ground (geographic and Web Mercator rasters are then warped on the fly to the local UTM zone).",
    "• Overlap between tiles: in the same unit, smaller than the tile size.",
    f"• CNN backbone: the network that describes each tile: {', '.join(BACKBONES)} (default {DEFAULT_BACKBONE}).",
    f"• Weights: ImageNet (pretrained; for {', '.join(defaults.OFFLINE_BACKBONES)} from the package that ships "
    "them, for the others from the local torch cache; nothing is downloaded) or none (random weights).",
    "• Weights file (optional): a PyTorch state-dict file for the backbone; overrides Weights.",
    "• Device: auto (a GPU if there is one), cpu, cuda or mps.",
    "• Random seed: the same inputs and seed give the same clusters.",
    "• Extent (optional): only tiles whose centre lies in this rectangle (any CRS).",
    "• Area (optional): only tiles whose centre lies in these polygons (any CRS; the selected features only if "
    "so chosen).",
    "• Tiles per batch (advanced): 0 chooses about 1 Mpx per batch on a CPU and 16 Mpx on a GPU; lower it if "
    "the GPU runs out of memory.",
    "• Clustered tiles: the output GeoPackage (.gpkg); an existing file is replaced.",
    "Outputs:",
    "• Clustered tiles: the GeoPackage, layer 'tiles': one polygon per tile in the raster's CRS with tile_id, "
    "row, col, cluster, clust_dist (distance to the cluster centre), pc1, pc2 (first principal components) and "
    "valid_frac (share of valid pixels). Loaded into the project styled by cluster.",
    "• Cluster raster: OUT_clusters.tif, one pixel per tile, with a colour table (255 = skipped tile).",
    "• Run manifest: OUT_manifest.json with the parameters, versions, device, timings and cluster sizes.",
    "A quicklook (OUT_quicklook.png) and the fitted model (OUT_model.pt, for urbanform:predict) are written next "
    "to them.",
])


class ClusterAlgorithm(EngineAlgorithm):
    """Processing front end of ``python -m engine cluster``."""

    NAME = "cluster"
    DISPLAY_NAME = "Cluster raster tiles"
    HELP_TEXT = HELP

    # -- parameters -----------------------------------------------------------------------------
    def initAlgorithm(self, config=None) -> None:  # noqa: N802 - QGIS API
        number = QgsProcessingParameterNumber
        self.addParameter(QgsProcessingParameterRasterLayer(INPUT, "Raster layer"))
        self.addParameter(number(K, "Number of clusters (K)", number.Integer, 8, False, MIN_K, MAX_K))
        self.addParameter(number(TILE_SIZE, "Tile size", number.Double, 64, False, 1))
        self.addParameter(QgsProcessingParameterEnum(TILE_UNIT, "Tile size unit", list(UNIT_LABELS),
                                                     defaultValue=UNITS.index("px")))
        self.addParameter(number(OVERLAP, "Overlap between tiles (same unit)", number.Double, 0, False, 0))
        self.addParameter(QgsProcessingParameterEnum(BACKBONE, "CNN backbone", list(BACKBONES),
                                                     defaultValue=BACKBONES.index(DEFAULT_BACKBONE)))
        self.addParameter(QgsProcessingParameterEnum(WEIGHTS, "Weights", list(WEIGHT_LABELS),
                                                     defaultValue=DEFAULT_WEIGHTS))
        self.addParameter(QgsProcessingParameterFile(WEIGHTS_FILE, "Weights file (state dict; overrides Weights)",
                                                     optional=True))
        self.addParameter(QgsProcessingParameterEnum(DEVICE, "Device", list(DEVICES), defaultValue=0))
        self.addParameter(number(SEED, "Random seed", number.Integer, 0, False, 0))
        self.addParameter(QgsProcessingParameterExtent(EXTENT, "Extent (only tiles centred inside)", optional=True))
        self.addParameter(QgsProcessingParameterFeatureSource(AREA, "Area (only tiles centred in these polygons)",
                                                              [QgsProcessing.TypeVectorPolygon], optional=True))
        batch = number(BATCH_SIZE, "Tiles per batch (0 = automatic)", number.Integer, 0, False, 0)
        batch.setFlags(batch.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        self.addParameter(batch)
        self.addParameter(QgsProcessingParameterVectorDestination(OUTPUT, "Clustered tiles",
                                                                  QgsProcessing.TypeVectorPolygon))
        self.addOutput(QgsProcessingOutputRasterLayer(CLUSTER_RASTER, "Cluster raster"))
        self.addOutput(QgsProcessingOutputFile(MANIFEST, "Run manifest"))

    # -- run ----------------------------------------------------------------------------------------
    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 - QGIS API
        raster = self.parameterAsRasterLayer(parameters, INPUT, context)
        out = self.output_path(parameters, context)
        workdir = tempfile.mkdtemp(prefix="urbanform_run_", dir=QgsProcessingUtils.tempFolder())
        try:
            area = self.area_file(parameters, context, workdir)
            request = self.build_request(parameters, context, raster, out, area)
            problems = request.problems()
            if problems:
                raise self.problems_error(problems)
            outputs = request.outputs()
            finished = self.run_engine_command(request.argv(), list(outputs.values()), feedback)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        if not finished:
            forget_output(context, out)
            return {}
        load_output_as(context, out, f"{out}|layername=tiles", TILES_STYLER)
        return {OUTPUT: out, CLUSTER_RASTER: str(outputs["tif"]), MANIFEST: str(outputs["manifest"])}

    def build_request(self, parameters, context, raster, out: str, area: str | None) -> ClusterRequest:
        """The engine request for these parameters (not yet checked)."""
        weights_file = self.parameterAsFile(parameters, WEIGHTS_FILE, context)
        batch_size = self.parameterAsInt(parameters, BATCH_SIZE, context)
        return ClusterRequest(
            raster=local_raster_path(raster), out=out,
            k=self.parameterAsInt(parameters, K, context),
            tile_size=self.parameterAsDouble(parameters, TILE_SIZE, context),
            tile_unit=UNITS[self.parameterAsEnum(parameters, TILE_UNIT, context)],
            overlap=self.parameterAsDouble(parameters, OVERLAP, context),
            backbone=BACKBONES[self.parameterAsEnum(parameters, BACKBONE, context)],
            weights=weights_file or WEIGHT_CHOICES[self.parameterAsEnum(parameters, WEIGHTS, context)],
            device=DEVICES[self.parameterAsEnum(parameters, DEVICE, context)],
            seed=self.parameterAsInt(parameters, SEED, context),
            extent=self.extent_in_raster_crs(parameters, context, raster),
            area=area, overwrite=True,          # Processing replaces its destination files
            extra=["--batch-size", str(batch_size)] if batch_size > 0 else [])

    def output_path(self, parameters, context) -> str:
        """The GeoPackage to write (QGIS gives a .gpkg for a temporary output: the provider's default)."""
        out = self.parameterAsOutputLayer(parameters, OUTPUT, context)
        if Path(out).suffix.lower() != ".gpkg":
            raise QgsProcessingException(f"The output {out} must be a GeoPackage: give a file name ending in .gpkg.")
        return out

    def extent_in_raster_crs(self, parameters, context, raster) -> tuple[float, float, float, float] | None:
        """The EXTENT parameter as (xmin, ymin, xmax, ymax) in the raster's CRS, or None when not given."""
        rect = self.parameterAsExtent(parameters, EXTENT, context, raster.crs())
        if rect.isNull():
            return None
        if rect.isEmpty():
            raise QgsProcessingException("The extent is empty; draw a rectangle or leave it unset.")
        return rect.xMinimum(), rect.yMinimum(), rect.xMaximum(), rect.yMaximum()

    def area_file(self, parameters, context, folder: str) -> str | None:
        """The AREA polygons written to a GeoPackage in ``folder`` (removed after the run), or None."""
        source = self.parameterAsSource(parameters, AREA, context)
        if source is None:
            return None
        return write_polygons(source, str(Path(folder) / "area.gpkg"), context)


def local_raster_path(raster) -> str:
    """The file behind a raster layer, or an exception telling the user to save it as a GeoTIFF."""
    if raster is None:
        raise QgsProcessingException("Choose a raster layer (INPUT).")
    path = raster.source()
    if raster.providerType() != "gdal" or not Path(path).is_file():
        raise QgsProcessingException(
            f"The raster layer {raster.name()!r} ({path}) is not a local file. Save it to a GeoTIFF first "
            "(right-click the layer > Export > Save As…) and run the algorithm on that file.")
    return path


def write_polygons(source, path: str, context) -> str:
    """The geometries of ``source`` (no attributes) in a new GeoPackage at ``path``; returns ``path``."""
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    writer = QgsVectorFileWriter.create(path, QgsFields(), source.wkbType(), source.sourceCrs(),
                                        context.transformContext(), options)
    if writer.hasError() != QgsVectorFileWriter.NoError:
        raise QgsProcessingException(f"Cannot write the area polygons to {path}: {writer.errorMessage()}")
    for feature in source.getFeatures():
        if feature.hasGeometry():
            polygon = QgsFeature()
            polygon.setGeometry(feature.geometry())
            writer.addFeature(polygon)
    del writer                             # closes the file
    return path
