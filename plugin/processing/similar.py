"""``urbanform:similar``: the tiles of a raster that look like a few query tiles or places.

The query is a layer of points or polygons (any CRS; written to a temporary GeoPackage for the engine) or tile
ids of the raster's grid. Every tile gets its cosine similarity to the query; the tiles load with the
similarity, and the similarity map loads as a raster.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from qgis.core import (QgsProcessing, QgsProcessingOutputFile, QgsProcessingOutputRasterLayer,
                       QgsProcessingUtils)

from ...engine.contract.tools import TOOLS
from ..requests.similar import SimilarRequest
from . import params
from .base import EngineAlgorithm, forget_output, load_output_as
from .cluster import ClusterAlgorithm, write_polygons

OUTPUT, SIMILARITY, TOP, MANIFEST = "OUTPUT", "SIMILARITY", "TOP", "MANIFEST"

SIMILAR = TOOLS["similar"]
PARAMS = ("raster", "query", "query_tiles", "top", "tile_size", "backbone", "device", "seed", "out")
OPTIONS = {"query": {"layer_types": [QgsProcessing.TypeVectorPoint, QgsProcessing.TypeVectorPolygon]},
           "out": {"output": "vector", "layer_types": [QgsProcessing.TypeVectorPolygon], "title": "Similar tiles"}}
NOTES = {"raster": "A local raster file.",
         "query": "Any CRS; the selected features only if so chosen. Give this or the query tile ids.",
         "query_tiles": "Give these or the query places.",
         "out": "An existing file is replaced."}

HELP = "\n".join([
    "Finds the places that look like a few examples: every tile of the raster is described by the CNN (features "
    "reused from the cache of an earlier run on the same raster and tiling) and scored by the cosine similarity "
    "of its features to the mean of the query tiles' (features centred on the raster's mean tile).",
    "Parameters:",
    *params.bullets(SIMILAR, PARAMS, OPTIONS, NOTES),
    "Outputs:",
    "• Similar tiles: layer 'tiles' with similarity, rank and query.",
    f"• Similarity raster: {params.output_name(SIMILAR, 'tif')}, one pixel per tile.",
    f"• Top tiles: {params.output_name(SIMILAR, 'top_csv')}.",
    f"• Run manifest: {params.output_name(SIMILAR, 'manifest')}.",
])


class SimilarAlgorithm(EngineAlgorithm):
    """Processing front end of ``python -m engine similar``."""

    NAME = "similar"
    DISPLAY_NAME = "Find similar places"
    HELP_TEXT = HELP
    TOOL = SIMILAR.name
    PARAMS = PARAMS
    OPTIONS = OPTIONS

    def initAlgorithm(self, config=None) -> None:  # noqa: N802 - QGIS API
        self.add_params(*PARAMS)
        self.addOutput(QgsProcessingOutputRasterLayer(SIMILARITY, "Similarity raster"))
        self.addOutput(QgsProcessingOutputFile(TOP, "Top tiles"))
        self.addOutput(QgsProcessingOutputFile(MANIFEST, "Run manifest"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 - QGIS API
        raster = self.parameterAsRasterLayer(parameters, self.parameter_name("raster"), context)
        out = ClusterAlgorithm.output_path(self, parameters, context)
        value = lambda name: self.param_value(parameters, name, context)      # noqa: E731
        workdir = tempfile.mkdtemp(prefix="urbanform_similar_", dir=QgsProcessingUtils.tempFolder())
        try:
            source = self.parameterAsSource(parameters, self.parameter_name("query"), context)
            query = write_polygons(source, str(Path(workdir) / "query.gpkg"), context) if source else None
            raster_file = self.local_raster(raster, parameters, context, feedback)     # a web layer: written now
            study = self.study_raster(parameters, context, raster_file, feedback)
            request = SimilarRequest(raster=study, out=out, query=query,
                                     query_tiles=value("query_tiles") or None, top=value("top"),
                                     tile_size=value("tile_size"), backbone=value("backbone"),
                                     device=value("device"), seed=value("seed"), overwrite=True)
            outputs = self.run_request(request, feedback)
            finished = outputs is not None
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        if not finished:
            forget_output(context, out)
            return {}
        load_output_as(context, out, f"{out}|layername=tiles")
        return {OUTPUT: out, SIMILARITY: str(outputs["tif"]), TOP: str(outputs["top_csv"]),
                MANIFEST: str(outputs["manifest"])}
