"""The ``evaluate-seg`` tool (a predicted mask scored against footprints) as a request.

Checks and command line are the contract's (``engine.contract.tools.EVALUATE_SEG``).

Plain values: no Qt, no QGIS (tests/plugin/test_layout.py checks).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ...engine.contract.params import Tool
from ...engine.contract.problems import Problem
from ...engine.contract.tools import TOOLS
from .common import command, contract_problems

EVALUATE_SEG: Tool = TOOLS["evaluate-seg"]

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

    TOOL = EVALUATE_SEG

    @property
    def name(self) -> str:
        return Path(self.pred).stem

    def values(self) -> dict:
        return {"pred": self.pred, "truth": self.truth, "area": self.area}

    def problems(self) -> list[Problem]:
        return contract_problems(EVALUATE_SEG, self.values())

    def argv(self) -> list[str]:
        return command(EVALUATE_SEG, self.values(), self.extra)

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
