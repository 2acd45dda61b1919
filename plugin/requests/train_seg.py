"""The ``train-seg`` tool (a building segmentation model trained on footprints) as a request.

Plain values: no Qt, no QGIS (tests/plugin/test_layout.py checks).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ...engine.contract import defaults
from ...engine.contract.problems import (BAD_CHOICE, BAD_FORMAT, EXISTS, NOT_FOUND, NOT_LOCAL, NOT_WRITABLE,
                                         OUT_OF_RANGE, Problem, REQUIRED)
from .common import MAX_EPOCHS, WEIGHTS, device_problems, raster_problems, stage_share, unique_output_problem


# -- building segmentation ----------------------------------------------------------------------------
SEG_ENCODERS = defaults.SEG_ENCODERS


@dataclass
class TrainSegRequest:
    """``python -m engine train-seg``: a building U-Net trained from footprint polygons on ``raster``.

    ``buildings`` (and ``label_area``) are local files (the dock and the algorithm write other layers to
    temporary files first). Exactly one of ``epochs`` and ``minutes`` bounds the training. The engine writes
    MODEL.pt, MODEL_checkpoint.pt (the latest epoch, for --resume) and MODEL_manifest.json.
    """

    raster: str
    buildings: str | None
    out: str
    encoder: str = defaults.DEFAULT_SEG_ENCODER
    weights: str = defaults.DEFAULT_WEIGHTS    # or a file path
    chip: int = 256
    epochs: int | None = 10
    minutes: float | None = None
    val_fraction: float = 0.2
    chips_per_epoch: int | None = None         # None: the engine's choice
    label_area: str | None = None
    device: str = "auto"
    seed: int = 0
    overwrite: bool = False
    extra: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return Path(self.out).stem

    def problems(self) -> list[Problem]:
        out = raster_problems(self.raster)
        if self.chips_per_epoch is not None and int(self.chips_per_epoch) < 2:
            out.append(Problem("chips_per_epoch", OUT_OF_RANGE,
                               "An epoch needs at least 2 chips (or the engine's choice)."))
        if not self.buildings:
            out.append(Problem("buildings", REQUIRED, "Choose a building footprint layer (polygons) to train from."))
        elif not Path(self.buildings).is_file():
            out.append(Problem("buildings", NOT_LOCAL,
                               f"The building footprint layer {self.buildings} is not a local file."))
        if self.label_area and not Path(self.label_area).is_file():
            out.append(Problem("label_area", NOT_LOCAL,
                               f"The labelled-area layer {self.label_area} is not a local file."))
        if self.encoder not in SEG_ENCODERS:
            out.append(Problem("encoder", BAD_CHOICE,
                               f"Unknown encoder {self.encoder!r}; use {', '.join(SEG_ENCODERS)}."))
        if self.weights not in WEIGHTS and not Path(self.weights).is_file():
            out.append(Problem("weights", NOT_FOUND, f"The weights file {self.weights} does not exist."))
        if int(self.chip) < 32 or int(self.chip) % 32:
            out.append(Problem("chip", OUT_OF_RANGE, "The chip size must be a multiple of 32 px (e.g. 128, 256, 512)."))
        if (self.epochs is None) == (self.minutes is None):
            out.append(Problem("epochs", REQUIRED, "Give either a number of epochs or a time budget in minutes."))
        elif self.epochs is not None and not 1 <= int(self.epochs) <= MAX_EPOCHS:
            out.append(Problem("epochs", OUT_OF_RANGE, f"Training needs between 1 and {MAX_EPOCHS} epochs."))
        elif self.minutes is not None and not float(self.minutes) > 0:
            out.append(Problem("minutes", OUT_OF_RANGE, "The time budget must be more than 0 minutes."))
        if not 0 < float(self.val_fraction) < 1:
            out.append(Problem("val_fraction", OUT_OF_RANGE,
                               "The validation share must be between 0 and 1 (e.g. 0.2)."))
        out.extend(device_problems(self.device))
        output = model_output_problems(self.out, self.overwrite)
        return out + (output or unique_output_problem(self.outputs, self.overwrite, out))

    def argv(self) -> list[str]:
        args = ["train-seg", self.raster, "--buildings", self.buildings or "", "--out", self.out,
                "--encoder", self.encoder, "--weights", self.weights, "--chip", str(int(self.chip)),
                "--val-fraction", repr(float(self.val_fraction)), "--seed", str(int(self.seed)),
                "--device", self.device, "--progress", "json"]
        if self.minutes is not None:
            args += ["--minutes", repr(float(self.minutes))]
        else:
            args += ["--epochs", str(int(self.epochs))]
        if self.chips_per_epoch:
            args += ["--chips-per-epoch", str(int(self.chips_per_epoch))]
        if self.label_area:
            args += ["--label-area", self.label_area]
        if self.overwrite:
            args.append("--overwrite")
        return args + list(self.extra)

    def outputs(self) -> dict[str, Path]:
        stem = str(Path(self.out).with_suffix(""))
        return {"model": Path(self.out), "checkpoint": Path(stem + "_checkpoint.pt"),
                "manifest": Path(stem + "_manifest.json")}

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
                return 98.0 + 2.0 * stage_share(event)
            if stage != "train":
                return None
            if event.get("total"):
                return 3.0 + 95.0 * stage_share(event)
            start[:] = start or [time.monotonic()]          # --minutes: the engine gives no total
            return 3.0 + 95.0 * min(1.0, (time.monotonic() - start[0]) / (60.0 * float(self.minutes or 1)))

        return percent


def model_output_problems(out: str, overwrite: bool) -> list[Problem]:
    """The model file to write: a .pt in a writable folder, not replacing a file unless allowed."""
    if not out:
        return [Problem("out", REQUIRED, "Choose the model file to write (.pt).")]
    path = Path(out)
    if path.suffix.lower() != ".pt":
        return [Problem("out", BAD_FORMAT, "The model file must end in .pt.")]
    if not path.parent.is_dir():
        return [Problem("out", NOT_FOUND, f"The output folder {path.parent} does not exist.")]
    if not os.access(path.parent, os.W_OK):
        return [Problem("out", NOT_WRITABLE, f"The output folder {path.parent} is not writable; choose another.")]
    if path.exists() and not overwrite:
        return [Problem("out", EXISTS, f"{path.name} already exists.")]
    return []


def default_model_output(raster: str) -> str:
    """A free model file name next to the raster (or in the home folder if that is not writable)."""
    base = Path(raster).with_suffix("") if raster else Path.home() / "urbanform"
    folder = base.parent if os.access(base.parent, os.W_OK) else Path.home()
    for i in range(1, 1000):
        candidate = folder / f"{base.name}_buildings{'' if i == 1 else i}.pt"
        if not candidate.exists():
            return str(candidate)
    return str(folder / f"{base.name}_buildings.pt")
