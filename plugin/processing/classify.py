"""``urbanform:classify``: tiles classified from a few labelled points or polygons, or by a saved classifier.

The labels (any CRS; with their class field) are written to a temporary GeoPackage for the engine, which
learns the classes on the CNN features, measures the classifier by spatial cross-validation and gives every
tile a class and a probability per class. With a saved classifier instead, it applies that one.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from qgis.core import (QgsFeature, QgsProcessing, QgsProcessingException, QgsProcessingOutputFile,
                       QgsProcessingOutputRasterLayer, QgsProcessingUtils, QgsVectorFileWriter)

from ...engine.contract.tools import TOOLS
from ..requests.classify import ClassifyRequest
from . import params
from .base import EngineAlgorithm, forget_output, load_output_as
from .cluster import ClusterAlgorithm

OUTPUT, CLASS_RASTER, SCORES, CONFUSION, CLASSIFIER, MANIFEST = ("OUTPUT", "CLASS_RASTER", "SCORES", "CONFUSION",
                                                                 "CLASSIFIER", "MANIFEST")

CLASSIFY = TOOLS["classify"]
PARAMS = ("raster", "labels", "field", "model", "classifier", "folds", "finetune", "tile_size", "backbone", "device",
          "seed", "out")
OPTIONS = {"labels": {"layer_types": [QgsProcessing.TypeVectorPoint, QgsProcessing.TypeVectorPolygon]},
           "out": {"output": "vector", "layer_types": [QgsProcessing.TypeVectorPolygon], "title": "Classified tiles"}}
NOTES = {"raster": "A local raster file.",
         "labels": "Any CRS; the selected features only if so chosen. Give these (to train) or a saved classifier.",
         "model": "Give this (to apply) or labelled places.",
         "out": "An existing file is replaced."}

HELP = "\n".join([
    "Classifies every tile of a raster from a few labelled places: the tiles the labels lie on train a small "
    "classifier on the CNN features (transfer learning), scored by spatial cross-validation (whole blocks of "
    "tiles held out, no training tile next to a held-out one); optionally the CNN's last block is fine-tuned too, in "
    "each fold on its own training tiles. Or applies a classifier saved by an earlier run.",
    "Parameters:",
    *params.bullets(CLASSIFY, PARAMS, OPTIONS, NOTES),
    "Outputs:",
    "• Classified tiles: layer 'tiles' with class, prob and a probability per class (p_0, p_1, ...).",
    f"• Class raster: {params.output_name(CLASSIFY, 'tif')}, one pixel per tile.",
    f"• Cross-validation scores: {params.output_name(CLASSIFY, 'cv_csv')} (when trained).",
    f"• Confusion matrix: {params.output_name(CLASSIFY, 'confusion_csv')} (when trained).",
    f"• Saved classifier: {params.output_name(CLASSIFY, 'classifier')} (when trained).",
    f"• Run manifest: {params.output_name(CLASSIFY, 'manifest')}.",
])


def write_features(source, path: str, context) -> str:
    """The features of ``source`` with their attributes in a new GeoPackage at ``path``; returns ``path``."""
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName = "GPKG"
    writer = QgsVectorFileWriter.create(path, source.fields(), source.wkbType(), source.sourceCrs(),
                                        context.transformContext(), options)
    if writer.hasError() != QgsVectorFileWriter.NoError:
        raise QgsProcessingException(f"Cannot write the labels to {path}: {writer.errorMessage()}")
    for feature in source.getFeatures():
        copy = QgsFeature(feature)
        writer.addFeature(copy)
    del writer                             # closes the file
    return path


class ClassifyAlgorithm(EngineAlgorithm):
    """Processing front end of ``python -m engine classify``."""

    NAME = "classify"
    DISPLAY_NAME = "Classify tiles from a few labels"
    HELP_TEXT = HELP
    TOOL = CLASSIFY.name
    PARAMS = PARAMS
    OPTIONS = OPTIONS

    def initAlgorithm(self, config=None) -> None:  # noqa: N802 - QGIS API
        self.add_params(*PARAMS)
        self.addOutput(QgsProcessingOutputRasterLayer(CLASS_RASTER, "Class raster"))
        self.addOutput(QgsProcessingOutputFile(SCORES, "Cross-validation scores"))
        self.addOutput(QgsProcessingOutputFile(CONFUSION, "Confusion matrix"))
        self.addOutput(QgsProcessingOutputFile(CLASSIFIER, "Saved classifier"))
        self.addOutput(QgsProcessingOutputFile(MANIFEST, "Run manifest"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 - QGIS API
        raster = self.parameterAsRasterLayer(parameters, self.parameter_name("raster"), context)
        out = ClusterAlgorithm.output_path(self, parameters, context)
        value = lambda name: self.param_value(parameters, name, context)      # noqa: E731
        workdir = tempfile.mkdtemp(prefix="urbanform_classify_", dir=QgsProcessingUtils.tempFolder())
        try:
            source = self.parameterAsSource(parameters, self.parameter_name("labels"), context)
            labels = write_features(source, str(Path(workdir) / "labels.gpkg"), context) if source else None
            raster_file = self.local_raster(raster, parameters, context, feedback)     # a web layer: written now
            study = self.study_raster(parameters, context, raster_file, feedback)
            request = ClassifyRequest(raster=study, out=out, labels=labels,
                                      field=value("field") or None, model=value("model"),
                                      classifier=value("classifier"), folds=value("folds"), finetune=value("finetune"),
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
        files = {CLASS_RASTER: "tif", SCORES: "cv_csv", CONFUSION: "confusion_csv", CLASSIFIER: "classifier",
                 MANIFEST: "manifest"}
        return {OUTPUT: out, **{name: str(outputs[key]) for name, key in files.items() if key in outputs}}
