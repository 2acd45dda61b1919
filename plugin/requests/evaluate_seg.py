"""The ``evaluate-seg`` tool (a predicted mask scored against footprints) as a request.

Plain values: no Qt, no QGIS (tests/plugin/test_layout.py checks).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ...engine.contract.problems import NOT_FOUND, NOT_LOCAL, Problem, REQUIRED


SEG_METRICS = ("iou", "precision", "recall", "f1", "obj_f1")      # what the plugin shows of evaluate-seg
SEG_METRIC_LABELS = {"iou": "IoU", "precision": "precision", "recall": "recall", "f1": "F1", "obj_f1": "object F1",
                     "accuracy": "accuracy", "obj_precision": "object precision", "obj_recall": "object recall"}


@dataclass
class EvaluateSegRequest:
    """``python -m engine evaluate-seg``: pixel and object scores of predicted buildings against footprints.

    The engine prints one JSON object on stdout (iou, accuracy, precision, recall, f1, obj_precision,
    obj_recall, obj_f1, ...); the runner hands it over as the run's last event.
    """

    pred: str                                  # OUT_mask.tif or OUT.gpkg of a segment run
    truth: str | None
    area: str | None = None
    extra: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return Path(self.pred).stem

    def problems(self) -> list[Problem]:
        out = []
        if not self.pred:
            out.append(Problem("pred", REQUIRED,
                               "Choose the predicted buildings (OUT_mask.tif or OUT.gpkg of a segment run)."))
        elif not Path(self.pred).is_file():
            out.append(Problem("pred", NOT_FOUND, f"The predicted buildings {self.pred} do not exist."))
        if not self.truth:
            out.append(Problem("truth", REQUIRED,
                               "Choose the true building footprints (polygons) to evaluate against."))
        elif not Path(self.truth).is_file():
            out.append(Problem("truth", NOT_LOCAL, f"The footprint layer {self.truth} is not a local file."))
        if self.area and not Path(self.area).is_file():
            out.append(Problem("area", NOT_LOCAL, f"The area layer {self.area} is not a local file."))
        return out

    def argv(self) -> list[str]:
        args = ["evaluate-seg", "--pred", self.pred, "--truth", self.truth or ""]
        if self.area:
            args += ["--area", self.area]
        return args + list(self.extra)

    def outputs(self) -> dict[str, Path]:
        return {}                              # it writes nothing


def seg_scores_text(scores: dict) -> str:
    """'IoU 0.812 · precision 0.9 · recall 0.88 · F1 0.89 · object F1 0.7' from evaluate-seg's answer."""
    parts = []
    for key in SEG_METRICS:
        value = scores.get(key)
        parts.append(f"{SEG_METRIC_LABELS[key]} {value:.3f}" if isinstance(value, (int, float)) else
                     f"{SEG_METRIC_LABELS[key]} –")
    counts = ""
    if "n_pred" in scores and "n_truth" in scores:
        counts = f" ({scores['n_pred']} predicted, {scores['n_truth']} true buildings, {scores.get('n_matched', 0)} " \
                 "matched)"
    return " · ".join(parts) + counts
