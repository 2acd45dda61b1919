"""``urbanform:statistics`` and ``urbanform:export``: the engine's ``stats`` and ``export`` tools.

Statistics take a cluster run's GeoPackage and optional building, road and
population layers; layers that are not plain local files (memory layers,
database tables, selected features only, web rasters) are written to a
temporary GeoPackage or GeoTIFF for the engine and removed after the run.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from qgis.core import (
    QgsFeature,
    QgsFeatureRequest,
    QgsProcessing,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeatureSource,
    QgsProcessingFeatureSourceDefinition,
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingOutputFile,
    QgsProcessingOutputVectorLayer,
    QgsProcessingUtils,
    QgsProject,
    QgsProviderRegistry,
    QgsVectorFileWriter,
)

from ...engine.contract.tools import TOOLS
from ..layers.clusters import arrange_clusters_layer
from ..requests import ExportRequest, StatsRequest
from ..ui.stats_inputs import local_file, write_layer
from . import params
from .base import EngineAlgorithm, set_post_processor
from .styling import style_tiles_like_raster

RUN, BUILDINGS, ROADS, POPULATION, NIR_BAND, ROAD_FIELD = "RUN", "BUILDINGS", "ROADS", "POPULATION", "NIR_BAND", \
    "ROAD_FIELD"
OVERWRITE, OUTPUT, CLUSTERS, STATS_CSV, PROFILE, BOXES = "OVERWRITE", "OUTPUT", "CLUSTERS", "STATS_CSV", "PROFILE", \
    "BOXES"
FORMAT = "FORMAT"
VECTORS = {BUILDINGS: "buildings", ROADS: "roads"}

STATS, EXPORT = TOOLS["stats"], TOOLS["export"]
PARAMS = ("run", "buildings", "roads", "population", "nir_band", "road_field", "overwrite", "dask")
OPTIONS = {"buildings": {"layer_types": [QgsProcessing.TypeVectorPolygon]},
           "roads": {"layer_types": [QgsProcessing.TypeVectorLine]},
           "road_field": {"title": "Road class attribute"}, "overwrite": {"title": "Replace existing statistics"}}
NOTES = {"run": "Written by Cluster raster tiles (or the dock).",
         "buildings": "Layers that are not local files (memory layers, databases, selected features only) are "
                      "written to a temporary GeoPackage for the run.",
         "road_field": "Without it major-road distance is left out.",
         "overwrite": "Otherwise a run that has statistics already is refused."}
EXPORT_PARAMS = ("run", "format", "out")
FORMAT_LABELS = {"shp": "ESRI Shapefile (.shp)", "gpkg": "GeoPackage (.gpkg)", "csv": "CSV table, no geometry (.csv)"}
EXPORT_OPTIONS = {"format": {"labels": FORMAT_LABELS}}


def stats_name(key: str) -> str:
    return params.output_name(STATS, key, out="RUN.gpkg")


HELP = "\n".join([
    "Urban-form statistics of a cluster run, per tile and per cluster, in ground metres (the layers are projected "
    "to the local UTM zone): building count, area, coverage, mean size and orientation; road length, distance to "
    "the nearest road and to the nearest major road; people per km². The engine adds the columns to the run's "
    "'tiles' layer, writes a 'clusters' layer (tile count and mean, standard deviation and median of each "
    "statistic per cluster) and says how much of each statistic the clusters explain (eta-squared).",
    "Parameters:",
    *params.bullets(STATS, PARAMS, OPTIONS, NOTES),
    "Outputs:",
    "• Run with statistics: the run's GeoPackage, rewritten; its 'tiles' layer is loaded styled by cluster.",
    "• Clusters: the 'clusters' layer (one row per cluster), loaded as a table.",
    f"• Eta-squared table: {stats_name('stats_csv')}, the share of each statistic's variance explained by the "
    "clusters.",
    f"• Cluster profile plot: {stats_name('profile')}; Box plots: {stats_name('boxes')}.",
])

EXPORT_HELP = "\n".join([
    "Writes every layer of a run's GeoPackage (tiles, clusters) as its own file in a folder, for other GIS and "
    "statistics tools. Shapefiles come with a .prj (the CRS) and a .cpg (UTF-8); field names are kept as they "
    "are (the engine's names fit the 10-character limit). CSV files hold the attributes without geometry.",
    "Parameters:",
    *params.bullets(EXPORT, EXPORT_PARAMS, EXPORT_OPTIONS,
                    {"run": "With or without statistics.", "out": "Files of the same names are replaced."}),
])


def vector_file(alg, parameters, name: str, context) -> str:
    """Main thread: the file behind a vector parameter when the engine can read it as is, else ''."""
    definition = parameters.get(name)
    if isinstance(definition, QgsProcessingFeatureSourceDefinition) and definition.selectedFeaturesOnly:
        return ""
    layer = alg.parameterAsVectorLayer(parameters, name, context)
    return local_file(layer) if layer is not None else ""


def write_source(source, path: str, context) -> str:
    """The features of a Processing feature source (attributes included) in a new GeoPackage; returns ``path``.

    Invalid geometries are copied as they are (no Processing validity check): the engine repairs them with
    make_valid and says so, and OSM footprints often have a few.
    """
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    writer = QgsVectorFileWriter.create(path, source.fields(), source.wkbType(), source.sourceCrs(),
                                        context.transformContext(), options)
    if writer.hasError() != QgsVectorFileWriter.NoError:
        raise QgsProcessingException(f"Cannot write a temporary copy of the layer to {path}: {writer.errorMessage()}")
    for feature in source.getFeatures(QgsFeatureRequest(), QgsProcessingFeatureSource.FlagSkipGeometryValidityChecks):
        writer.addFeature(QgsFeature(feature))
    del writer                             # closes the file
    return path


def layer_file(alg, parameters, name: str, context, workdir: str) -> str | None:
    """The file the engine reads for vector parameter ``name`` of ``alg``: the local file found on the main
    thread (``alg.files``, from prepareAlgorithm), else a copy of the features in ``workdir``; None if not given."""
    if alg.files.get(name):
        return alg.files[name]
    source = alg.parameterAsSource(parameters, name, context)
    if source is None:
        return None
    return write_source(source, str(Path(workdir) / f"{name.lower()}.gpkg"), context)


class StatisticsAlgorithm(EngineAlgorithm):
    """Processing front end of ``python -m engine stats``."""

    files: dict = {}            # parameter -> local file, found on the main thread (prepareAlgorithm)
    raster = None               # a population raster that is not a local file: a clone, written in the run

    NAME = "statistics"
    DISPLAY_NAME = "Urban-form statistics of a cluster run"
    HELP_TEXT = HELP
    TOOL = STATS.name
    PARAMS = PARAMS
    OPTIONS = OPTIONS

    def initAlgorithm(self, config=None) -> None:  # noqa: N802 - QGIS API
        self.add_params(*PARAMS)
        self.addOutput(QgsProcessingOutputVectorLayer(OUTPUT, "Run with statistics", QgsProcessing.TypeVectorPolygon))
        self.addOutput(QgsProcessingOutputVectorLayer(CLUSTERS, "Clusters", QgsProcessing.TypeVector))
        self.addOutput(QgsProcessingOutputFile(STATS_CSV, "Eta-squared table"))
        self.addOutput(QgsProcessingOutputFile(PROFILE, "Cluster profile plot"))
        self.addOutput(QgsProcessingOutputFile(BOXES, "Box plots"))

    def prepareAlgorithm(self, parameters, context, feedback) -> bool:  # noqa: N802 - QGIS API
        """Main thread: which layers are local files; a copy of a population raster that is not."""
        self.files = {name: vector_file(self, parameters, name, context) for name in VECTORS}
        raster = self.parameterAsRasterLayer(parameters, POPULATION, context)
        self.files[POPULATION] = local_file(raster) if raster is not None else ""
        self.raster = raster.clone() if raster is not None and not self.files[POPULATION] else None
        return True

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 - QGIS API
        workdir = tempfile.mkdtemp(prefix="urbanform_stats_", dir=QgsProcessingUtils.tempFolder())
        try:
            layers = {field: self.layer_file(parameters, name, context, workdir) for name, field in VECTORS.items()}
            layers["population"] = self.population_file(workdir)
            value = lambda name: self.param_value(parameters, name, context)      # noqa: E731
            request = StatsRequest(run=value("run") or "", **layers, nir_band=value("nir_band"),
                                   road_field=value("road_field"), overwrite=value("overwrite"),
                                   dask=value("dask") or None)
            outputs = self.run_request(request, feedback)
            finished = outputs is not None
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        if not finished:
            return {}
        gpkg = request.run
        self.load(context, f"{gpkg}|layername=tiles", f"{request.name} tiles", lambda: ReloadedLayer(styled=True))
        self.load(context, f"{gpkg}|layername=clusters", f"{request.name} clusters", ReloadedLayer)
        return {OUTPUT: f"{gpkg}|layername=tiles", CLUSTERS: f"{gpkg}|layername=clusters",
                STATS_CSV: str(outputs["stats_csv"]), PROFILE: str(outputs["profile"]), BOXES: str(outputs["boxes"])}

    def postProcessAlgorithm(self, context, feedback):  # noqa: N802 - QGIS API
        self.raster = None                   # release the copy on the main thread
        return {}

    def layer_file(self, parameters, name: str, context, workdir: str) -> str | None:
        return layer_file(self, parameters, name, context, workdir)

    def population_file(self, workdir: str) -> str | None:
        if self.files.get(POPULATION):
            return self.files[POPULATION]
        if self.raster is None:
            return None
        path = str(Path(workdir) / "population.tif")
        error = write_layer(self.raster, path)
        if error:
            raise QgsProcessingException(f"Cannot write a temporary copy of the population raster: {error}")
        return path

    @staticmethod
    def load(context, uri: str, name: str, post_processor) -> None:
        """Have Processing load ``uri`` when the run ends (only where it loads results); ``post_processor`` is a
        factory (see base.set_post_processor)."""
        project = context.project()
        if project is None:
            return
        details = QgsProcessingContext.LayerDetails(name, project, name)
        set_post_processor(details, post_processor)
        context.addLayerToLoadOnCompletion(uri, details)


class ReloadedLayer(QgsProcessingLayerPostProcessorInterface):
    """Main thread, after the run: re-read the rewritten GeoPackage (Processing hands over the project's own layer
    when one already shows it), then style the tiles by cluster; never fails the run."""

    def __init__(self, styled: bool = False):
        super().__init__()
        self.styled = styled

    def postProcessLayer(self, layer, context, feedback) -> None:  # noqa: N802 - QGIS API
        try:
            layer.dataProvider().reloadData()
            layer.updateFields()
            layer.triggerRepaint()
            if self.styled and not style_tiles_like_raster(layer) and feedback is not None:
                feedback.pushInfo(f"{layer.name()} keeps the default style (no cluster GeoTIFF next to it).")
            # the clusters layer (whichever of the two Processing loads last): styled like the tiles, right
            # below them and unchecked, so it never hides the tiles the legend describes
            gpkg = QgsProviderRegistry.instance().decodeUri("ogr", layer.source()).get("path")
            if gpkg:
                arrange_clusters_layer(gpkg, context.project() or QgsProject.instance())
        except Exception as exc:  # noqa: BLE001 - the layer is loaded anyway
            if feedback is not None:
                feedback.pushInfo(f"{layer.name()} could not be re-read or styled ({exc}).")


class ExportAlgorithm(EngineAlgorithm):
    """Processing front end of ``python -m engine export``."""

    NAME = "export"
    DISPLAY_NAME = "Export a run (Shapefile, GeoPackage or CSV)"
    HELP_TEXT = EXPORT_HELP
    TOOL = EXPORT.name
    PARAMS = EXPORT_PARAMS
    OPTIONS = EXPORT_OPTIONS

    def initAlgorithm(self, config=None) -> None:  # noqa: N802 - QGIS API
        self.add_params(*EXPORT_PARAMS)

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 - QGIS API
        out_dir = self.parameterAsString(parameters, OUTPUT, context)
        request = ExportRequest(run=self.param_value(parameters, "run", context) or "", out_dir=out_dir,
                                format=self.param_value(parameters, "format", context), overwrite=True)
        problems = request.problems()
        if problems:
            raise self.problems_error(problems)
        Path(out_dir).mkdir(exist_ok=True)
        if not self.run_engine_command(request.argv(), [], feedback):
            return {}
        return {OUTPUT: out_dir}

