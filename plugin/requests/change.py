"""The ``change`` tool (two dates on one saved cluster model) as a request.

Checks, command line and file names are the contract's (``engine.contract.tools.CHANGE``).
Plain values: no Qt, no QGIS (tests/plugin/test_layout.py checks).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ...engine.contract.params import Tool, output_files
from ...engine.contract.problems import Problem
from ...engine.contract.tools import TOOLS
from .common import command, contract_problems

CHANGE: Tool = TOOLS["change"]


@dataclass
class ChangeRequest:
    """``python -m engine change``: the tiles of ``raster_before`` and ``raster_after`` in one model's clusters."""

    model: str
    raster_before: str
    raster_after: str
    out: str
    resample: bool = False
    res_tolerance: float = CHANGE.param("res_tolerance").default
    extent: tuple[float, float, float, float] | None = None   # in the first date's CRS
    area: str | None = None                                   # a polygon file
    device: str = CHANGE.param("device").default
    precision: str = CHANGE.param("precision").default
    batch_size: int | None = None                             # None: the engine's choice
    overwrite: bool = False
    extra: list[str] = field(default_factory=list)

    TOOL = CHANGE

    @property
    def name(self) -> str:
        return Path(self.out).stem

    def values(self) -> dict:
        return {"model": self.model, "raster_before": self.raster_before, "raster_after": self.raster_after,
                "out": self.out, "resample": self.resample, "res_tolerance": self.res_tolerance,
                "extent": self.extent, "area": self.area, "device": self.device, "precision": self.precision,
                "batch_size": self.batch_size, "overwrite": self.overwrite}

    def problems(self) -> list[Problem]:
        return contract_problems(CHANGE, self.values())

    def argv(self) -> list[str]:
        return command(CHANGE, self.values(), self.extra)

    def outputs(self) -> dict[str, Path]:
        return output_files(CHANGE, self.values())
