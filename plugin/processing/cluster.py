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
                       QgsProcessingOutputRasterLayer, QgsProcessingParameterExtent, QgsProcessingParameterNumber,
                       QgsProcessingUtils, QgsVectorFileWriter)

from ...engine.contract import defaults
from ...engine.contract.limits import MIN_TILE_PX
from ...engine.contract.tools import TOOLS, WEIGHT_WORDS
from ..requests import ClusterRequest
from . import params
from .base import EngineAlgorithm, forget_output, load_output_as, local_raster_path  # noqa: F401 - re-exported
from .styling import TILES_STYLER

INPUT, K, TILE_SIZE, TILE_UNIT, OVERLAP = "INPUT", "K", "TILE_SIZE", params.TILE_UNIT, "OVERLAP"
BACKBONE, WEIGHTS, WEIGHTS_FILE, DEVICE, SEED = "BACKBONE", params.WEIGHTS, params.WEIGHTS_FILE, "DEVICE", "SEED"
EXTENT, AREA, BATCH_SIZE = "EXTENT", "AREA", "BATCH_SIZE"
OUTPUT, CLUSTER_RASTER, MANIFEST = "OUTPUT", "CLUSTER_RASTER", "MANIFEST"

CLUSTER = TOOLS["cluster"]
BACKBONES, WEIGHT_CHOICES = defaults.BACKBONES, WEIGHT_WORDS      # the BACKBONE and WEIGHTS enums' order
DEFAULT_BACKBONE = defaults.DEFAULT_BACKBONE
TILE_DEFAULT, UNIT_DEFAULT = params.length_default(CLUSTER.param("tile_size"))          # 64, 'px'
POLYGONS = [QgsProcessing.TypeVectorPolygon]

# the declared parameters this algorithm exposes, and how (params.definition)
PARAMS = ("raster", "k", "backbone", "device", "seed", "area", "batch_size", "dask", "out")
OPTIONS = {"area": {"layer_types": POLYGONS},
           "out": {"output": "vector", "layer_types": POLYGONS, "title": "Clustered tiles"}}
NOTES = {"raster": "A local file, or a web map layer (XYZ, WMS, WMTS), first written to a GeoTIFF (see Ground "
                   "resolution for web map layers); in-memory layers must first be saved to a GeoTIFF (right-click "
                   "> Export > Save As).",
         "area": "Any CRS; the selected features only if so chosen.",
         "batch_size": "Lower it if the GPU runs out of memory.",
         "dask": "Optional, for large rasters: local:N runs N worker processes on this computer, tcp://host:8786 a "
                 "Dask scheduler whose workers see the raster and the feature cache. With DeepCluster the workers "
                 "compute each epoch's features; the training runs on this computer.",
         "out": "An existing file is replaced."}


def output_name(key: str) -> str:
    """OUT_clusters.tif, OUT_manifest.json ...: the declared name of a cluster run's output."""
    return params.output_name(CLUSTER, key)


# One paragraph per line: the algorithm dialog shows each line as a paragraph, qgis_process prints them as is.
HELP = "\n".join([
    "Cuts a raster into square tiles, computes a CNN feature vector for each tile (on the GPU when there is "
    "one) and groups the tiles into K clusters of similar urban form with k-means. The work runs in the Urban "
    "Form Mapper engine, a separate Python with PyTorch; QGIS stays responsive and Cancel stops it without "
    "leaving files behind.",
    "Parameters:",
    *params.bullets(CLUSTER, PARAMS[:2], OPTIONS, NOTES),
    f"• Tile size and Tile size unit: the side of a tile in pixels (at least {MIN_TILE_PX}) or in metres on the "
    "ground (geographic and Web Mercator rasters are then warped on the fly to the local UTM zone); default "
    f"{CLUSTER.param('tile_size').default}.",
    "• Overlap between tiles: in the same unit, smaller than the tile size.",
    *params.bullets(CLUSTER, ("backbone",), OPTIONS, NOTES),
    f"• Weights: {', '.join(params.WEIGHT_LABELS.get(w, w) for w in WEIGHT_WORDS)}; ImageNet weights for "
    f"{', '.join(defaults.OFFLINE_BACKBONES)} come from the package that ships them, for the others from the "
    "local torch cache; nothing is downloaded.",
    "• Weights file (optional): a PyTorch state-dict file for the backbone; overrides Weights.",
    *params.bullets(CLUSTER, ("device", "seed"), OPTIONS, NOTES),
    "• Extent (optional): only tiles whose centre lies in this rectangle (any CRS).",
    *params.bullets(CLUSTER, PARAMS[5:], OPTIONS, NOTES),
    "Outputs:",
    "• Clustered tiles: the GeoPackage, layer 'tiles': one polygon per tile in the raster's CRS with tile_id, "
    "row, col, cluster, clust_dist (distance to the cluster centre), pc1, pc2 (first principal components) and "
    "valid_frac (share of valid pixels). Loaded into the project styled by cluster.",
    f"• Cluster raster: {output_name('tif')}, one pixel per tile, with a colour table.",
    f"• Run manifest: {output_name('manifest')} with the parameters, versions, device, timings and cluster sizes.",
    f"A quicklook ({output_name('quicklook')}) and the fitted model ({output_name('model')}, for "
    "urbanform:predict) are written next to them.",
])


class ClusterAlgorithm(EngineAlgorithm):
    """Processing front end of ``python -m engine cluster``."""

    NAME = "cluster"
    DISPLAY_NAME = "Cluster raster tiles"
    HELP_TEXT = HELP
    TOOL = CLUSTER.name
    PARAMS = PARAMS
    OPTIONS = OPTIONS

    # -- parameters -----------------------------------------------------------------------------
    def initAlgorithm(self, config=None) -> None:  # noqa: N802 - QGIS API
        number = QgsProcessingParameterNumber
        self.add_params("raster", "k")
        self.addParameter(number(TILE_SIZE, "Tile size", number.Double, TILE_DEFAULT, False, 0))
        self.addParameter(params.unit_parameter(UNIT_DEFAULT))
        self.addParameter(number(OVERLAP, "Overlap between tiles (same unit)", number.Double,
                                 params.length_default(CLUSTER.param("overlap"))[0], False, 0))
        self.add_params("backbone")
        for parameter in params.weights_parameters(CLUSTER.param("weights")):
            self.addParameter(parameter)
        self.add_params("device", "seed")
        self.addParameter(QgsProcessingParameterExtent(EXTENT, "Extent (only tiles centred inside)", optional=True))
        self.add_params("area", "batch_size", *(["dask"] if "dask" in self.PARAMS else []), "out")
        self.addOutput(QgsProcessingOutputRasterLayer(CLUSTER_RASTER, "Cluster raster"))
        self.addOutput(QgsProcessingOutputFile(MANIFEST, "Run manifest"))

    # -- run ----------------------------------------------------------------------------------------
    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 - QGIS API
        raster = self.parameterAsRasterLayer(parameters, INPUT, context)
        out = self.output_path(parameters, context)
        workdir = tempfile.mkdtemp(prefix="urbanform_run_", dir=QgsProcessingUtils.tempFolder())
        try:
            area = self.area_file(parameters, context, workdir)
            raster_file = self.local_raster(raster, parameters, context, feedback)      # a web layer: written now
            request = self.build_request(parameters, context, raster, out, area, raster_file)
            outputs = self.run_request(request, feedback)
            finished = outputs is not None
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        if not finished:
            forget_output(context, out)
            return {}
        load_output_as(context, out, f"{out}|layername=tiles", TILES_STYLER)
        tif = Path(outputs["tif"])          # (none from a run over several places far apart: one grid each)
        return {OUTPUT: out, CLUSTER_RASTER: str(tif) if tif.is_file() else None, MANIFEST: str(outputs["manifest"])}

    def build_request(self, parameters, context, raster, out: str, area: str | None,
                      raster_file: str | None = None) -> ClusterRequest:
        """The engine request for these parameters (not yet checked); ``raster_file``: the raster's file when it was
        written from a web map layer."""
        value = lambda name: self.param_value(parameters, name, context)      # noqa: E731
        return ClusterRequest(
            raster=self.study_raster(parameters, context, raster_file or local_raster_path(raster)), out=out,
            k=value("k"),
            tile_size=self.parameterAsDouble(parameters, TILE_SIZE, context),
            tile_unit=params.unit_value(self, parameters, context),
            overlap=self.parameterAsDouble(parameters, OVERLAP, context),
            backbone=value("backbone"), weights=params.weights_value(self, parameters, context),
            device=value("device"), seed=value("seed"),
            extent=self.extent_in_raster_crs(parameters, context, raster, raster_file),
            area=area, batch_size=value("batch_size"), dask=value("dask") if "dask" in self.PARAMS else None,
            overwrite=True)      # Processing replaces its destination files

    def output_path(self, parameters, context) -> str:
        """The GeoPackage to write (QGIS gives a .gpkg for a temporary output: the provider's default; the request
        refuses another suffix, as the tool declares)."""
        return self.parameterAsOutputLayer(parameters, OUTPUT, context)

    def extent_in_raster_crs(self, parameters, context, raster, raster_file: str | None = None
                             ) -> tuple[float, float, float, float] | None:
        """The EXTENT parameter as (xmin, ymin, xmax, ymax) in the raster's CRS (that of ``raster_file``, written
        from a web map layer, when given: a geographic layer is written in UTM), or None when not given."""
        crs = file_crs(raster_file) if raster_file else raster.crs()
        rect = self.parameterAsExtent(parameters, EXTENT, context, crs)
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


def file_crs(path: str):
    """The CRS of a raster file."""
    from qgis.core import QgsRasterLayer

    layer = QgsRasterLayer(path, "crs", "gdal")
    crs = layer.crs()
    del layer
    return crs


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
