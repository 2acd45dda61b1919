"""The ``predict`` tool (a saved cluster model applied to another raster) as a request.

Plain values: no Qt, no QGIS (tests/plugin/test_layout.py checks).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ...engine.contract.problems import BAD_FORMAT, NOT_FOUND, Problem, REQUIRED
from .cluster import ClusterRequest
from .common import output_problems, raster_problems, unique_output_problem


@dataclass
class PredictRequest:
    """``python -m engine predict``: assign the tiles of ``raster`` to the clusters of a saved model."""

    model: str
    raster: str
    out: str
    resample: bool = False
    overwrite: bool = False
    extra: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return Path(self.out).stem

    def problems(self) -> list[Problem]:
        out = []
        if not self.model:
            out.append(Problem("model", REQUIRED, "Choose a model file (OUT_model.pt, written by a cluster run)."))
        elif not Path(self.model).is_file():
            out.append(Problem("model", NOT_FOUND, f"The model file {self.model} does not exist."))
        elif Path(self.model).suffix.lower() != ".pt":
            out.append(Problem("model", BAD_FORMAT,
                               f"The model file {self.model} is not a .pt file written by a cluster run."))
        out += raster_problems(self.raster)
        out += output_problems(self.out, self.overwrite)
        return out + unique_output_problem(self.outputs, self.overwrite, out)

    def argv(self) -> list[str]:
        args = ["predict", self.model, self.raster, "--out", self.out, "--progress", "json"]
        if self.resample:
            args.append("--resample")
        if self.overwrite:
            args.append("--overwrite")
        return args + list(self.extra)

    def outputs(self) -> dict[str, Path]:
        outputs = ClusterRequest(raster=self.raster, out=self.out).outputs()
        del outputs["model"]
        return outputs
