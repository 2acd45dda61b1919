"""``urbanform:trainsegmentation``, ``urbanform:segment`` and ``urbanform:evaluatesegmentation``: the engine's
``train-seg``, ``segment`` and ``evaluate-seg`` tools.

The parameters become the requests the dock's Buildings mode builds (``TrainSegRequest``, ``SegmentRequest``,
``EvaluateSegRequest``), so both check the same problems before any work and run the same command lines.
Footprint and area layers that are not plain local files (memory layers, database tables, selected features
only) are written to a temporary GeoPackage for the run and removed afterwards, as for the statistics.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from qgis.core import (QgsProcessing, QgsProcessingContext, QgsProcessingException,
                       QgsProcessingLayerPostProcessorInterface, QgsProcessingOutputFile,
                       QgsProcessingOutputNumber, QgsProcessingOutputRasterLayer, QgsProcessingParameterBoolean,
                       QgsProcessingParameterDefinition, QgsProcessingParameterEnum,
                       QgsProcessingParameterFeatureSource, QgsProcessingParameterFile,
                       QgsProcessingParameterFileDestination, QgsProcessingParameterNumber,
                       QgsProcessingParameterRasterLayer, QgsProcessingParameterVectorDestination,
                       QgsProcessingUtils, QgsRasterLayer, QgsVectorLayer)

from ...engine.contract import defaults
from ..layers.buildings import style_buildings, style_mask
from ..requests import (DEVICES, SEG_ENCODERS, SEG_METRIC_LABELS, EvaluateSegRequest, SegmentRequest,
                        TrainSegRequest, seg_scores_text)
from ..runner.engine_process import EngineResult
from .base import EngineAlgorithm, forget_output, load_output_as, set_post_processor
from .cluster import local_raster_path
from .statistics import layer_file, vector_file

INPUT, BUILDINGS, LABEL_AREA, ENCODER, WEIGHTS, WEIGHTS_FILE = "INPUT", "BUILDINGS", "LABEL_AREA", "ENCODER", \
    "WEIGHTS", "WEIGHTS_FILE"
CHIP, EPOCHS, MINUTES, VAL_FRACTION, DEVICE, SEED = "CHIP", "EPOCHS", "MINUTES", "VAL_FRACTION", "DEVICE", "SEED"
CHIPS_PER_EPOCH = "CHIPS_PER_EPOCH"
MODEL, OVERLAP, THRESHOLD, PROBABILITY, MIN_AREA, SIMPLIFY = "MODEL", "OVERLAP", "THRESHOLD", "PROBABILITY", \
    "MIN_AREA", "SIMPLIFY"
REGULARIZE, RESAMPLE, PRED, TRUTH, AREA = "REGULARIZE", "RESAMPLE", "PRED", "TRUTH", "AREA"
OUTPUT, MANIFEST, VAL_IOU, MASK, PROBABILITY_RASTER, BUILDING_COUNT = "OUTPUT", "MANIFEST", "VAL_IOU", "MASK", \
    "PROBABILITY_RASTER", "BUILDING_COUNT"
SCORE_OUTPUTS = {"IOU": "iou", "PRECISION": "precision", "RECALL": "recall", "F1": "f1", "OBJ_F1": "obj_f1",
                 "ACCURACY": "accuracy", "OBJ_PRECISION": "obj_precision", "OBJ_RECALL": "obj_recall"}

ENCODERS = SEG_ENCODERS
DEFAULT_ENCODER = defaults.DEFAULT_SEG_ENCODER
WEIGHT_CHOICES = ("imagenet", "none")
DEFAULT_WEIGHTS = WEIGHT_CHOICES.index(defaults.DEFAULT_WEIGHTS)
WEIGHT_LABELS = ("ImageNet (pretrained)", "none (from scratch)")      # same order as WEIGHT_CHOICES

TRAIN_HELP = "\n".join([
    "Trains a building segmentation model (a U-Net on a CNN encoder) from mapped building footprints, for example "
    "OpenStreetMap buildings on part of the raster. The footprints are rasterised onto the raster's grid; "
    "training chips come from the labelled area only (the footprints' extent, or the labelled-area polygons), "
    "and validation chips from separate blocks of it. The best epoch by validation IoU is kept.",
    "Parameters:",
    "• Raster layer: the image, a local file.",
    "• Building footprints: polygons, any CRS (invalid geometries are repaired by the engine).",
    "• Labelled area (optional): polygons where every building is mapped.",
    f"• Encoder: {', '.join(ENCODERS)} (default {DEFAULT_ENCODER}).",
    f"• Weights: ImageNet (for {', '.join(defaults.OFFLINE_BACKBONES)} from the package that ships them, for the "
    "others from the local torch cache; nothing is downloaded) or none.",
    "• Weights file (optional): a state dict for the encoder; overrides Weights.",
    "• Chip size: a multiple of 32 px.",
    "• Epochs; or Time budget in minutes (more than 0 replaces Epochs).",
    "• Share of blocks held out for validation (advanced): default 0.2.",
    "• Chips per epoch (advanced): training chips between two validations and checkpoints (0: the engine's "
    "choice).",
    "• Device: auto (a GPU if there is one), cpu, cuda or mps. Random seed: the same inputs and seed give the same "
    "model.",
    "• Model file: the .pt to write; MODEL_checkpoint.pt and MODEL_manifest.json are written next to it.",
    "Outputs:",
    "• Model file; Training manifest: MODEL_manifest.json with per-epoch validation IoU, precision and recall; "
    "Best validation IoU: a number.",
])

SEGMENT_HELP = "\n".join([
    "Maps every building of a raster with a model from Train a building segmentation model: sliding windows with "
    "overlap and smooth blending (no seams), streamed block by block; the mask is turned into footprint "
    "polygons (small specks and holes removed, simplified, optionally squared).",
    "Parameters:",
    "• Raster layer: a local raster with the bands and resolution of the model's raster.",
    "• Model file: the .pt written by training.",
    "• Overlap between windows: pixels shared by neighbouring windows, at most half the chip (-1: a quarter).",
    "• Threshold: the building probability above which a pixel is a building.",
    "• Also write the probability raster: OUT_prob.tif, 0..1.",
    "• Minimum building and hole area (advanced), in m²; Simplification tolerance (advanced), in m.",
    "• Square the outlines to right angles.",
    "• Resample to the model's resolution: otherwise a raster of another pixel size is refused.",
    "• Device: auto (a GPU if there is one), cpu, cuda or mps.",
    "• Buildings: the output GeoPackage (.gpkg); an existing file is replaced.",
    "Outputs:",
    "• Buildings: layer 'buildings' with area (m²) and orien (degrees), loaded with outlines.",
    "• Building mask: OUT_mask.tif (1 building, 0 not, 255 nodata). Building probability: OUT_prob.tif, when "
    "asked. Run manifest: OUT_manifest.json.",
])

EVALUATE_HELP = "\n".join([
    "Scores predicted buildings against true footprints, per pixel and per building (a predicted and a true "
    "building match at IoU >= 0.5).",
    "Parameters:",
    "• Predicted buildings: OUT_mask.tif (scored in pixels) or OUT.gpkg (scored in m²) of a segment run.",
    "• True footprints: polygons, any CRS.",
    "• Area (optional): score only inside these polygons; without it, true footprints outside the predicted "
    "raster count as missed when a buildings layer is scored.",
    "Outputs (numbers, also logged): IoU, precision, recall, F1, accuracy (pixels or m²); object precision, "
    "object recall, object F1 (buildings).",
])


class SegmentationAlgorithm(EngineAlgorithm):
    """What the three share: footprint layers as files, and an engine run that keeps its result."""

    files: dict = {}            # parameter -> local file, found on the main thread (prepareAlgorithm)
    VECTOR_PARAMETERS: tuple = ()

    def prepareAlgorithm(self, parameters, context, feedback) -> bool:  # noqa: N802 - QGIS API
        """Main thread: which vector layers are local files the engine can read as they are."""
        self.files = {name: vector_file(self, parameters, name, context) for name in self.VECTOR_PARAMETERS}
        return True

    def layer_file(self, parameters, name: str, context, workdir: str) -> str | None:
        return layer_file(self, parameters, name, context, workdir)

    def run_request(self, request, feedback) -> EngineResult | None:
        """Run ``request`` (checked first) with its own progress map; None when cancelled, an exception on failure."""
        problems = request.problems()
        if problems:
            raise self.problems_error(problems)
        result = self.engine_result(request.argv(), list(request.outputs().values()), feedback,
                                    request.progress() if hasattr(request, "progress") else None)
        if result is not None:
            feedback.setProgress(100)
        return result


class TrainSegmentationAlgorithm(SegmentationAlgorithm):
    """Processing front end of ``python -m engine train-seg``."""

    NAME = "trainsegmentation"
    DISPLAY_NAME = "Train a building segmentation model"
    HELP_TEXT = TRAIN_HELP
    VECTOR_PARAMETERS = (BUILDINGS, LABEL_AREA)

    def initAlgorithm(self, config=None) -> None:  # noqa: N802 - QGIS API
        number = QgsProcessingParameterNumber
        polygons = [QgsProcessing.TypeVectorPolygon]
        self.addParameter(QgsProcessingParameterRasterLayer(INPUT, "Raster layer"))
        self.addParameter(QgsProcessingParameterFeatureSource(BUILDINGS, "Building footprints", polygons))
        self.addParameter(QgsProcessingParameterFeatureSource(LABEL_AREA, "Labelled area (default: the "
                                                              "footprints' extent)", polygons, optional=True))
        self.addParameter(QgsProcessingParameterEnum(ENCODER, "Encoder", list(ENCODERS),
                                                     defaultValue=ENCODERS.index(DEFAULT_ENCODER)))
        self.addParameter(QgsProcessingParameterEnum(WEIGHTS, "Weights", list(WEIGHT_LABELS),
                                                     defaultValue=DEFAULT_WEIGHTS))
        self.addParameter(QgsProcessingParameterFile(WEIGHTS_FILE, "Weights file (state dict; overrides Weights)",
                                                     optional=True))
        self.addParameter(number(CHIP, "Chip size (px, a multiple of 32)", number.Integer, 256, False, 32, 2048))
        self.addParameter(number(EPOCHS, "Epochs", number.Integer, 10, False, 1, 200))
        self.addParameter(number(MINUTES, "Time budget in minutes (0: train for Epochs)", number.Double, 0, False, 0))
        fraction = number(VAL_FRACTION, "Share of blocks held out for validation", number.Double, 0.2, False, 0.01,
                          0.9)
        per_epoch = number(CHIPS_PER_EPOCH, "Chips per epoch (0: the engine's choice)", number.Integer, 0, False, 0)
        for parameter in (fraction, per_epoch):
            parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(parameter)
        self.addParameter(QgsProcessingParameterEnum(DEVICE, "Device", list(DEVICES), defaultValue=0))
        self.addParameter(number(SEED, "Random seed", number.Integer, 0, False, 0))
        self.addParameter(QgsProcessingParameterFileDestination(OUTPUT, "Model file", "PyTorch model (*.pt)"))
        self.addOutput(QgsProcessingOutputFile(MANIFEST, "Training manifest"))
        self.addOutput(QgsProcessingOutputNumber(VAL_IOU, "Best validation IoU"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 - QGIS API
        out = self.parameterAsFileOutput(parameters, OUTPUT, context)
        if Path(out).suffix.lower() != ".pt":
            raise QgsProcessingException(f"The model file {out} must end in .pt.")
        minutes = self.parameterAsDouble(parameters, MINUTES, context)
        workdir = tempfile.mkdtemp(prefix="urbanform_train_", dir=QgsProcessingUtils.tempFolder())
        try:
            weights_file = self.parameterAsFile(parameters, WEIGHTS_FILE, context)
            request = TrainSegRequest(
                raster=local_raster_path(self.parameterAsRasterLayer(parameters, INPUT, context)), out=out,
                buildings=self.layer_file(parameters, BUILDINGS, context, workdir),
                label_area=self.layer_file(parameters, LABEL_AREA, context, workdir),
                encoder=ENCODERS[self.parameterAsEnum(parameters, ENCODER, context)],
                weights=weights_file or WEIGHT_CHOICES[self.parameterAsEnum(parameters, WEIGHTS, context)],
                chip=self.parameterAsInt(parameters, CHIP, context),
                epochs=None if minutes > 0 else self.parameterAsInt(parameters, EPOCHS, context),
                minutes=minutes if minutes > 0 else None,
                val_fraction=self.parameterAsDouble(parameters, VAL_FRACTION, context),
                chips_per_epoch=self.parameterAsInt(parameters, CHIPS_PER_EPOCH, context) or None,
                device=DEVICES[self.parameterAsEnum(parameters, DEVICE, context)],
                seed=self.parameterAsInt(parameters, SEED, context), overwrite=True)
            result = self.run_request(request, feedback)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        outputs = request.outputs()
        if result is None:
            outputs["checkpoint"].unlink(missing_ok=True)      # the engine keeps it for --resume; nothing here
            return {}
        feedback.pushInfo(f"{request.name}: {request.summary()}")
        return {OUTPUT: out, MANIFEST: str(outputs["manifest"]), VAL_IOU: read_val_iou(outputs["manifest"])}


class SegmentAlgorithm(SegmentationAlgorithm):
    """Processing front end of ``python -m engine segment``."""

    NAME = "segment"
    DISPLAY_NAME = "Map buildings with a segmentation model"
    HELP_TEXT = SEGMENT_HELP

    def initAlgorithm(self, config=None) -> None:  # noqa: N802 - QGIS API
        number = QgsProcessingParameterNumber
        self.addParameter(QgsProcessingParameterRasterLayer(INPUT, "Raster layer"))
        self.addParameter(QgsProcessingParameterFile(MODEL, "Model file", extension="pt"))
        self.addParameter(number(OVERLAP, "Overlap between windows (px; -1: a quarter of the chip)", number.Integer,
                                 -1, False, -1))
        self.addParameter(number(THRESHOLD, "Threshold (building probability)", number.Double, 0.5, False, 0.01,
                                 0.99))
        self.addParameter(QgsProcessingParameterBoolean(PROBABILITY, "Also write the probability raster", False))
        for name, label, default in ((MIN_AREA, "Minimum building and hole area (m²)", 4.0),
                                     (SIMPLIFY, "Simplification tolerance (m)", 0.5)):
            parameter = number(name, label, number.Double, default, False, 0)
            parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(parameter)
        self.addParameter(QgsProcessingParameterBoolean(REGULARIZE, "Square the outlines to right angles", False))
        self.addParameter(QgsProcessingParameterBoolean(RESAMPLE, "Resample to the model's resolution", False))
        self.addParameter(QgsProcessingParameterEnum(DEVICE, "Device", list(DEVICES), defaultValue=0))
        self.addParameter(QgsProcessingParameterVectorDestination(OUTPUT, "Buildings", QgsProcessing.TypeVectorPolygon))
        self.addOutput(QgsProcessingOutputRasterLayer(MASK, "Building mask"))
        self.addOutput(QgsProcessingOutputRasterLayer(PROBABILITY_RASTER, "Building probability"))
        self.addOutput(QgsProcessingOutputFile(MANIFEST, "Run manifest"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 - QGIS API
        out = self.parameterAsOutputLayer(parameters, OUTPUT, context)
        if Path(out).suffix.lower() != ".gpkg":
            raise QgsProcessingException(f"The output {out} must be a GeoPackage: give a file name ending in .gpkg.")
        overlap = self.parameterAsInt(parameters, OVERLAP, context)
        request = SegmentRequest(
            raster=local_raster_path(self.parameterAsRasterLayer(parameters, INPUT, context)),
            model=self.parameterAsFile(parameters, MODEL, context), out=out,
            overlap=None if overlap < 0 else overlap,
            threshold=self.parameterAsDouble(parameters, THRESHOLD, context),
            probability=self.parameterAsBool(parameters, PROBABILITY, context),
            min_area=self.parameterAsDouble(parameters, MIN_AREA, context),
            simplify=self.parameterAsDouble(parameters, SIMPLIFY, context),
            regularize=self.parameterAsBool(parameters, REGULARIZE, context),
            resample=self.parameterAsBool(parameters, RESAMPLE, context),
            device=DEVICES[self.parameterAsEnum(parameters, DEVICE, context)], overwrite=True)
        if self.run_request(request, feedback) is None:
            forget_output(context, out)
            return {}
        outputs = request.outputs()
        if out in context.layersToLoadOnCompletion() and context.project() is not None:
            details = QgsProcessingContext.LayerDetails(f"{request.name} building mask", context.project(), MASK)
            set_post_processor(details, mask_styler)
            context.addLayerToLoadOnCompletion(str(outputs["mask"]), details)
        load_output_as(context, out, f"{out}|layername=buildings", buildings_styler)
        return {OUTPUT: out, MASK: str(outputs["mask"]), MANIFEST: str(outputs["manifest"]),
                PROBABILITY_RASTER: str(outputs["prob"]) if "prob" in outputs else None}


class EvaluateSegmentationAlgorithm(SegmentationAlgorithm):
    """Processing front end of ``python -m engine evaluate-seg``."""

    NAME = "evaluatesegmentation"
    DISPLAY_NAME = "Evaluate mapped buildings against footprints"
    HELP_TEXT = EVALUATE_HELP
    VECTOR_PARAMETERS = (TRUTH, AREA)

    def initAlgorithm(self, config=None) -> None:  # noqa: N802 - QGIS API
        polygons = [QgsProcessing.TypeVectorPolygon]
        self.addParameter(QgsProcessingParameterFile(PRED, "Predicted buildings (OUT_mask.tif or OUT.gpkg)"))
        self.addParameter(QgsProcessingParameterFeatureSource(TRUTH, "True footprints", polygons))
        self.addParameter(QgsProcessingParameterFeatureSource(AREA, "Area (score only inside)", polygons,
                                                              optional=True))
        for name, key in SCORE_OUTPUTS.items():
            self.addOutput(QgsProcessingOutputNumber(name, SEG_METRIC_LABELS[key]))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 - QGIS API
        workdir = tempfile.mkdtemp(prefix="urbanform_eval_", dir=QgsProcessingUtils.tempFolder())
        try:
            request = EvaluateSegRequest(pred=self.parameterAsFile(parameters, PRED, context),
                                         truth=self.layer_file(parameters, TRUTH, context, workdir),
                                         area=self.layer_file(parameters, AREA, context, workdir))
            result = self.run_request(request, feedback)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        if result is None:
            return {}
        scores = result.last_event
        if not isinstance(scores, dict) or "iou" not in scores:
            raise QgsProcessingException("The engine printed no scores.")
        feedback.pushInfo(f"{Path(request.pred).name}: {seg_scores_text(scores)}")
        return {name: float(scores[key]) if scores.get(key) is not None else None
                for name, key in SCORE_OUTPUTS.items()}


def read_val_iou(manifest) -> float | None:
    import json

    try:
        value = json.loads(Path(manifest).read_text()).get("val_iou")
    except (OSError, ValueError, AttributeError):
        return None
    return float(value) if isinstance(value, (int, float)) else None


class SegmentStyler(QgsProcessingLayerPostProcessorInterface):
    """Styles a loaded segment output with ``style`` (seg_layers) when it is a ``kind`` layer; never fails the run."""

    def __init__(self, style, kind, noun: str):
        super().__init__()
        self.style, self.kind, self.noun = style, kind, noun

    def postProcessLayer(self, layer, context, feedback) -> None:  # noqa: N802 - QGIS API
        if isinstance(layer, self.kind):
            try:
                self.style(layer)
            except Exception as exc:  # noqa: BLE001 - styling is a nicety
                if feedback is not None:
                    feedback.pushInfo(f"The {self.noun} keeps the default style ({exc}).")


def buildings_styler() -> SegmentStyler:
    """A post-processor giving a loaded ``buildings`` layer outlines."""
    return SegmentStyler(style_buildings, QgsVectorLayer, "buildings layer")


def mask_styler() -> SegmentStyler:
    """A post-processor showing a loaded mask's building pixels semi-transparent, the rest transparent."""
    return SegmentStyler(style_mask, QgsRasterLayer, "mask")
