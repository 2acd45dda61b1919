"""The ``train-seg`` tool (a building segmentation model trained on footprints) as a request.

Checks, command line and file names are the contract's (``engine.contract.tools.TRAIN_SEG``); the request adds
that the form's two training budgets (epochs, minutes) are not both given.

Plain values: no Qt, no QGIS (tests/plugin/test_layout.py checks).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ...engine.contract import defaults
from ...engine.contract.params import Tool, output_files
from ...engine.contract.problems import BAD_FORMAT, Problem
from ...engine.contract.progress import stage_fraction
from ...engine.contract.tools import TOOLS
from .common import command, contract_problems, default_output

TRAIN_SEG: Tool = TOOLS["train-seg"]


@dataclass
class TrainSegRequest:
    """``python -m engine train-seg``: a building U-Net trained from footprint polygons on ``raster``.

    ``buildings`` (and ``label_area``) are local files (the dock and the algorithm write other layers to
    temporary files first). At most one of ``epochs`` and ``minutes`` bounds the training. The engine writes
    the model, a checkpoint next to it (the latest epoch, for --resume) and a manifest (``outputs()``).
    """

    raster: "str | list[str]"                                  # several rasters: one study (the first wins)
    buildings: str | None
    out: str
    encoder: str = defaults.DEFAULT_SEG_ENCODER
    weights: str = defaults.DEFAULT_WEIGHTS    # or a file path
    chip: int | None = TRAIN_SEG.param("chip").default          # None: the engine's choice (fits the area)
    epochs: int | None = TRAIN_SEG.param("epochs").default      # None (and no minutes): the engine's choice
    minutes: float | None = None
    val_fraction: float = TRAIN_SEG.param("val_fraction").default
    chips_per_epoch: int | None = None         # None: the engine's choice
    label_area: str | None = None
    device: str = TRAIN_SEG.param("device").default
    seed: int = TRAIN_SEG.param("seed").default
    overwrite: bool = False
    extra: list[str] = field(default_factory=list)

    TOOL = TRAIN_SEG

    @property
    def name(self) -> str:
        return Path(self.out).stem

    def values(self) -> dict:
        return {"raster": self.raster, "buildings": self.buildings, "out": self.out, "encoder": self.encoder,
                "weights": self.weights, "chip": self.chip, "epochs": self.epochs, "minutes": self.minutes,
                "val_fraction": self.val_fraction, "chips_per_epoch": self.chips_per_epoch,
                "label_area": self.label_area, "device": self.device, "seed": self.seed, "overwrite": self.overwrite}

    def problems(self) -> list[Problem]:
        out = contract_problems(TRAIN_SEG, self.values())
        if self.epochs is not None and self.minutes is not None and "epochs" not in {p.param for p in out}:
            out.append(Problem("epochs", BAD_FORMAT, "Give either a number of epochs or a time budget in minutes, "
                                                     "not both."))
            order = TRAIN_SEG.names()
            out.sort(key=lambda p: order.index(p.param) if p.param in order else len(order))
        return out

    def argv(self) -> list[str]:
        return command(TRAIN_SEG, self.values(), self.extra)

    def outputs(self) -> dict[str, Path]:
        return output_files(TRAIN_SEG, self.values())

    def summary(self) -> str:
        """'best validation IoU 0.712 at epoch 4 of 5 (precision 0.81, recall 0.84)' from the run's manifest."""
        try:
            manifest = json.loads(self.outputs()["manifest"].read_text())
        except (OSError, ValueError):
            return "no manifest"
        best, epoch = manifest.get("val_iou"), manifest.get("best_epoch")
        history = {h.get("epoch"): h for h in manifest.get("history") or [] if isinstance(h, dict)}
        text = f"best validation IoU {best:.3f}" if isinstance(best, (int, float)) else "no validation IoU"
        if epoch is not None:
            text += f" at epoch {epoch} of {manifest.get('epochs_done', '?')}"
            rec = history.get(epoch) or {}
            if isinstance(rec.get("val_precision"), (int, float)) and isinstance(rec.get("val_recall"), (int, float)):
                text += f" (precision {rec['val_precision']:.2f}, recall {rec['val_recall']:.2f})"
        return text

    def progress(self):
        """``event -> percent or None``: epochs done of the epochs asked, or the time spent of the budget."""
        import time

        start: list[float] = []

        def percent(event: dict) -> float | None:
            stage = event.get("stage")
            if stage == "open":
                return 1.0
            if stage == "write":
                return 98.0 + 2.0 * stage_fraction(event)
            if stage != "train":
                return None
            if event.get("total"):
                return 3.0 + 95.0 * stage_fraction(event)
            start[:] = start or [time.monotonic()]          # --minutes: the engine gives no total
            return 3.0 + 95.0 * min(1.0, (time.monotonic() - start[0]) / (60.0 * float(self.minutes or 1)))

        return percent


def default_model_output(raster: str) -> str:
    """A free model file name next to the raster (or in the home folder if that is not writable)."""
    return default_output(raster, "buildings", ".pt")
