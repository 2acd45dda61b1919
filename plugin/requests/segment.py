"""The ``segment`` tool (building footprints from a trained model) as a request.

Plain values: no Qt, no QGIS (tests/plugin/test_layout.py checks).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ...engine.contract.problems import BAD_FORMAT, NOT_FOUND, OUT_OF_RANGE, Problem, REQUIRED
from .common import device_problems, output_problems, raster_problems, stage_share, unique_output_problem


@dataclass
class SegmentRequest:
    """``python -m engine segment``: every building of ``raster`` mapped by a model from train-seg.

    Writes OUT.gpkg (layer ``buildings``: area, orien), OUT_mask.tif (1 building, 0 not, 255 nodata), with
    ``probability`` OUT_prob.tif (0..1, nodata -1), and OUT_manifest.json.
    """

    raster: str
    model: str
    out: str
    overlap: int | None = None                # px; None: the engine's choice (a quarter of the chip)
    threshold: float = 0.5
    probability: bool = False
    min_area: float = 4.0
    simplify: float = 0.5
    regularize: bool = False
    resample: bool = False
    device: str = "auto"
    overwrite: bool = False
    extra: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return Path(self.out).stem

    def problems(self) -> list[Problem]:
        out = model_file_problems(self.model)
        out += raster_problems(self.raster)
        if self.overlap is not None and int(self.overlap) < 0:
            out.append(Problem("overlap", OUT_OF_RANGE, "The overlap must be 0 or more pixels (or automatic)."))
        if not 0 < float(self.threshold) < 1:
            out.append(Problem("threshold", OUT_OF_RANGE, "The threshold must be between 0 and 1 (e.g. 0.5)."))
        if float(self.min_area) < 0 or float(self.simplify) < 0:
            out.append(Problem("min_area" if float(self.min_area) < 0 else "simplify", OUT_OF_RANGE,
                               "The minimum area and the simplification tolerance must be 0 or more."))
        out.extend(device_problems(self.device))
        out += output_problems(self.out, self.overwrite)
        return out + unique_output_problem(self.outputs, self.overwrite, out)

    def argv(self) -> list[str]:
        args = ["segment", self.raster, "--model", self.model, "--out", self.out,
                "--threshold", repr(float(self.threshold)), "--min-area", repr(float(self.min_area)),
                "--simplify", repr(float(self.simplify)), "--device", self.device, "--progress", "json"]
        if self.overlap is not None:
            args += ["--overlap", str(int(self.overlap))]
        for flag, on in (("--probability", self.probability), ("--regularize", self.regularize),
                         ("--resample", self.resample), ("--overwrite", self.overwrite)):
            if on:
                args.append(flag)
        return args + list(self.extra)

    def outputs(self) -> dict[str, Path]:
        stem = str(Path(self.out).with_suffix(""))
        files = {"gpkg": Path(self.out), "mask": Path(stem + "_mask.tif"), "manifest": Path(stem + "_manifest.json")}
        if self.probability:
            files["prob"] = Path(stem + "_prob.tif")
        return files

    def progress(self):
        """``event -> percent or None``: the row blocks segmented, then writing."""
        def percent(event: dict) -> float | None:
            stage = event.get("stage")
            if stage == "segment":
                return 2.0 + 90.0 * stage_share(event)
            if stage == "write":
                return 92.0 + 8.0 * stage_share(event)
            return 1.0 if stage == "open" else None

        return percent


def model_file_problems(model: str) -> list[Problem]:
    if not model:
        return [Problem("model", REQUIRED, "Choose a model file (.pt, written by train-seg or the Buildings training).")]
    if not Path(model).is_file():
        return [Problem("model", NOT_FOUND, f"The model file {model} does not exist.")]
    if Path(model).suffix.lower() != ".pt":
        return [Problem("model", BAD_FORMAT, f"The model file {model} is not a .pt file written by train-seg.")]
    return []
