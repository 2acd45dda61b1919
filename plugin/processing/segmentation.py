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
                       QgsProcessingOutputNumber, QgsProcessingOutputRasterLayer, QgsProcessingUtils, QgsRasterLayer,
                       QgsVectorLayer)

from ...engine.contract import defaults
from ...engine.contract.tools import TOOLS, WEIGHT_WORDS
from ..layers.buildings import style_buildings, style_mask
from ..requests import SEG_METRIC_LABELS, EvaluateSegRequest, SegmentRequest, TrainSegRequest, seg_scores_text
from ..runner.engine_process import EngineResult
from . import params
from .base import EngineAlgorithm, forget_output, load_output_as, set_post_processor
from .statistics import layer_file, vector_file

INPUT, BUILDINGS, LABEL_AREA, ENCODER, WEIGHTS, WEIGHTS_FILE = "INPUT", "BUILDINGS", "LABEL_AREA", "ENCODER", \
    params.WEIGHTS, params.WEIGHTS_FILE
CHIP, EPOCHS, MINUTES, VAL_FRACTION, DEVICE, SEED = "CHIP", "EPOCHS", "MINUTES", "VAL_FRACTION", "DEVICE", "SEED"
CHIPS_PER_EPOCH = "CHIPS_PER_EPOCH"
MODEL, OVERLAP, THRESHOLD, PROBABILITY, MIN_AREA, SIMPLIFY = "MODEL", "OVERLAP", "THRESHOLD", "PROBABILITY", \
    "MIN_AREA", "SIMPLIFY"
REGULARIZE, RESAMPLE, PRED, TRUTH, AREA = "REGULARIZE", "RESAMPLE", "PRED", "TRUTH", "AREA"
OUTPUT, MANIFEST, VAL_IOU, MASK, PROBABILITY_RASTER, BUILDING_COUNT = "OUTPUT", "MANIFEST", "VAL_IOU", "MASK", \
    "PROBABILITY_RASTER", "BUILDING_COUNT"
SCORE_OUTPUTS = {"IOU": "iou", "PRECISION": "precision", "RECALL": "recall", "F1": "f1", "OBJ_F1": "obj_f1",
                 "ACCURACY": "accuracy", "OBJ_PRECISION": "obj_precision", "OBJ_RECALL": "obj_recall"}

TRAIN_SEG, SEGMENT, EVALUATE_SEG = TOOLS["train-seg"], TOOLS["segment"], TOOLS["evaluate-seg"]
ENCODERS, WEIGHT_CHOICES = defaults.SEG_ENCODERS, WEIGHT_WORDS          # the ENCODER and WEIGHTS enums' order
DEFAULT_ENCODER = defaults.DEFAULT_SEG_ENCODER
WEIGHT_LABELS = {"none": "none (from scratch)"}
POLYGONS = [QgsProcessing.TypeVectorPolygon]

TRAIN_PARAMS = ("raster", "buildings", "label_area", "encoder", "chip", "epochs", "minutes", "val_fraction",
                "chips_per_epoch", "device", "seed", "out")
TRAIN_OPTIONS = {"buildings": {"layer_types": POLYGONS}, "label_area": {"layer_types": POLYGONS}}
TRAIN_NOTES = {"raster": "A local file.", "buildings": "Polygons; invalid geometries are repaired by the engine.",
               "minutes": "Give it or Epochs, not both.",
               "out": f"{params.output_name(TRAIN_SEG, 'checkpoint', 'MODEL.pt')} and "
                      f"{params.output_name(TRAIN_SEG, 'manifest', 'MODEL.pt')} are written next to it."}
SEGMENT_PARAMS = ("raster", "model", "overlap", "threshold", "probability", "tta", "min_area", "simplify", "regularize",
                  "resample", "device", "dask", "out")
SEGMENT_OPTIONS = {"probability": {"title": "Also write the probability raster"},
                   "tta": {"title": "Test-time flips (4x the model's time)"},
                   "regularize": {"title": "Square the outlines to right angles"},
                   "resample": {"title": "Resample to the model's resolution"},
                   "out": {"output": "vector", "layer_types": POLYGONS, "title": "Buildings"}}
SEGMENT_NOTES = {"raster": "A local raster with the bands and resolution of the model's raster.",
                 "resample": "Otherwise a raster of another pixel size is refused.",
                 "out": "An existing file is replaced."}
EVALUATE_PARAMS = ("pred", "truth", "area")
EVALUATE_OPTIONS = {"truth": {"layer_types": POLYGONS}, "area": {"layer_types": POLYGONS}}
EVALUATE_NOTES = {"pred": "A mask is scored in pixels, a buildings layer in m².",
                  "area": "Without it, true footprints outside the predicted raster count as missed when a buildings "
                          "layer is scored."}


def segment_name(key: str) -> str:
    return params.output_name(SEGMENT, key)


TRAIN_HELP = "\n".join([
    "Trains a building segmentation model (a U-Net on a CNN encoder) from mapped building footprints, for example "
    "OpenStreetMap buildings on part of the raster. The footprints are rasterised onto the raster's grid; "
    "training chips come from the labelled area only (the footprints' extent, or the labelled-area polygons), "
    "and validation chips from separate blocks of it. The best epoch by validation IoU is kept.",
    "Parameters:",
    *params.bullets(TRAIN_SEG, TRAIN_PARAMS[:4], TRAIN_OPTIONS, TRAIN_NOTES),
    f"• Weights: {', '.join({**params.WEIGHT_LABELS, **WEIGHT_LABELS}.get(w, w) for w in WEIGHT_WORDS)}; "
    f"ImageNet weights for {', '.join(defaults.OFFLINE_BACKBONES)} come from the package that ships them, for the "
    "others from the local torch cache; nothing is downloaded.",
    "• Weights file (optional): a state dict for the encoder; overrides Weights.",
    *params.bullets(TRAIN_SEG, TRAIN_PARAMS[4:], TRAIN_OPTIONS, TRAIN_NOTES),
    "Outputs:",
    f"• Model file; Training manifest: {params.output_name(TRAIN_SEG, 'manifest', 'MODEL.pt')} with per-epoch "
    "validation IoU, precision and recall; Best validation IoU: a number.",
])

SEGMENT_HELP = "\n".join([
    "Maps every building of a raster with a model from Train a building segmentation model: sliding windows with "
    "overlap and smooth blending (no seams), streamed block by block; the mask is turned into footprint "
    "polygons (small specks and holes removed, simplified, optionally squared).",
    "Parameters:",
    *params.bullets(SEGMENT, SEGMENT_PARAMS, SEGMENT_OPTIONS, SEGMENT_NOTES),
    "Outputs:",
    "• Buildings: layer 'buildings' with area (m²) and orien (degrees), loaded with outlines.",
    f"• Building mask: {segment_name('mask')} (1 building, 0 not, 255 nodata). Building probability: "
    f"{segment_name('prob')}, when asked. Run manifest: {segment_name('manifest')}.",
])

EVALUATE_HELP = "\n".join([
    "Scores predicted buildings against true footprints, per pixel and per building (a predicted and a true "
    "building match at IoU >= 0.5).",
    "Parameters:",
    *params.bullets(EVALUATE_SEG, EVALUATE_PARAMS, EVALUATE_OPTIONS, EVALUATE_NOTES),
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
    TOOL = TRAIN_SEG.name
    PARAMS = TRAIN_PARAMS
    OPTIONS = TRAIN_OPTIONS

    def initAlgorithm(self, config=None) -> None:  # noqa: N802 - QGIS API
        self.add_params(*TRAIN_PARAMS[:4])
        for parameter in params.weights_parameters(TRAIN_SEG.param("weights"), WEIGHT_LABELS):
            self.addParameter(parameter)
        self.add_params(*TRAIN_PARAMS[4:])
        self.addOutput(QgsProcessingOutputFile(MANIFEST, "Training manifest"))
        self.addOutput(QgsProcessingOutputNumber(VAL_IOU, "Best validation IoU"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 - QGIS API
        out = self.parameterAsFileOutput(parameters, OUTPUT, context)
        value = lambda name: self.param_value(parameters, name, context)      # noqa: E731
        workdir = tempfile.mkdtemp(prefix="urbanform_train_", dir=QgsProcessingUtils.tempFolder())
        try:
            request = TrainSegRequest(
                raster=self.study_raster(parameters, context, self.local_raster(
                    self.parameterAsRasterLayer(parameters, INPUT, context), parameters, context, feedback), feedback),
                out=out,
                buildings=self.layer_file(parameters, BUILDINGS, context, workdir),
                label_area=self.layer_file(parameters, LABEL_AREA, context, workdir),
                encoder=value("encoder"), weights=params.weights_value(self, parameters, context),
                chip=value("chip"), epochs=value("epochs"), minutes=value("minutes"),
                val_fraction=value("val_fraction"), chips_per_epoch=value("chips_per_epoch"),
                device=value("device"), seed=value("seed"), overwrite=True)
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
    TOOL = SEGMENT.name
    PARAMS = SEGMENT_PARAMS
    OPTIONS = SEGMENT_OPTIONS

    def initAlgorithm(self, config=None) -> None:  # noqa: N802 - QGIS API
        self.add_params(*SEGMENT_PARAMS)
        self.addOutput(QgsProcessingOutputRasterLayer(MASK, "Building mask"))
        self.addOutput(QgsProcessingOutputRasterLayer(PROBABILITY_RASTER, "Building probability"))
        self.addOutput(QgsProcessingOutputFile(MANIFEST, "Run manifest"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 - QGIS API
        out = self.parameterAsOutputLayer(parameters, OUTPUT, context)
        value = lambda name: self.param_value(parameters, name, context)      # noqa: E731
        request = SegmentRequest(
            raster=self.study_raster(parameters, context, self.local_raster(
                self.parameterAsRasterLayer(parameters, INPUT, context), parameters, context, feedback), feedback),
            model=value("model") or "", out=out, overlap=value("overlap"), threshold=value("threshold"),
            probability=value("probability"), tta=value("tta"), min_area=value("min_area"), simplify=value("simplify"),
            regularize=value("regularize"), resample=value("resample"), device=value("device"),
            dask=value("dask") or None, overwrite=True)
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
    TOOL = EVALUATE_SEG.name
    PARAMS = EVALUATE_PARAMS
    OPTIONS = EVALUATE_OPTIONS

    def initAlgorithm(self, config=None) -> None:  # noqa: N802 - QGIS API
        self.add_params(*EVALUATE_PARAMS)
        for name, key in SCORE_OUTPUTS.items():
            self.addOutput(QgsProcessingOutputNumber(name, SEG_METRIC_LABELS[key]))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 - QGIS API
        workdir = tempfile.mkdtemp(prefix="urbanform_eval_", dir=QgsProcessingUtils.tempFolder())
        try:
            request = EvaluateSegRequest(pred=self.param_value(parameters, "pred", context) or "",
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
