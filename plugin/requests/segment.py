"""The ``segment`` tool (building footprints from a trained model) as a request.

Checks, command line and file names are the contract's (``engine.contract.tools.SEGMENT``).
Plain values: no Qt, no QGIS (tests/plugin/test_layout.py checks).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ...engine.contract.params import Tool, output_files
from ...engine.contract.problems import Problem
from ...engine.contract.progress import stage_fraction
from ...engine.contract.tools import TOOLS
from .common import command, contract_problems

SEGMENT: Tool = TOOLS["segment"]


@dataclass
class SegmentRequest:
    """``python -m engine segment``: every building of ``raster`` mapped by a model from train-seg.

    Writes OUT.gpkg (layer ``buildings``: area, orien), a building mask (1 building, 0 not, 255 nodata), with
    ``probability`` a probability raster (0..1, nodata -1), and a manifest (``outputs()``).
    """

    raster: "str | list[str]"                                  # several rasters: one study (the first wins)
    model: str
    out: str
    overlap: int | None = SEGMENT.param("overlap").default    # px; None: the engine's choice (a quarter of the chip)
    threshold: float | None = SEGMENT.param("threshold").default   # None: the model's own
    probability: bool = SEGMENT.param("probability").default
    tta: bool = SEGMENT.param("tta").default
    min_area: float = SEGMENT.param("min_area").default
    simplify: float = SEGMENT.param("simplify").default
    regularize: bool = SEGMENT.param("regularize").default
    resample: bool = SEGMENT.param("resample").default
    device: str = SEGMENT.param("device").default
    overwrite: bool = False
    dask: str | None = None                  # 'local:N' or 'tcp://host:port' (None: one process)
    extra: list[str] = field(default_factory=list)

    TOOL = SEGMENT

    @property
    def name(self) -> str:
        return Path(self.out).stem

    def values(self) -> dict:
        return {"raster": self.raster, "model": self.model, "out": self.out, "overlap": self.overlap,
                "threshold": self.threshold, "probability": self.probability, "tta": self.tta,
                "min_area": self.min_area, "simplify": self.simplify, "regularize": self.regularize,
                "resample": self.resample,
                "device": self.device, "dask": self.dask or None, "overwrite": self.overwrite}

    def problems(self) -> list[Problem]:
        return contract_problems(SEGMENT, self.values())

    def argv(self) -> list[str]:
        return command(SEGMENT, self.values(), self.extra)

    def outputs(self) -> dict[str, Path]:
        return output_files(SEGMENT, self.values())

    def progress(self):
        """``event -> percent or None``: the row blocks segmented, then writing."""
        def percent(event: dict) -> float | None:
            stage = event.get("stage")
            if stage == "segment":
                return 2.0 + 90.0 * stage_fraction(event)
            if stage == "write":
                return 92.0 + 8.0 * stage_fraction(event)
            return 1.0 if stage == "open" else None

        return percent
