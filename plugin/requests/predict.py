"""The ``predict`` tool (a saved cluster model applied to another raster) as a request.

Checks, command line and file names are the contract's (``engine.contract.tools.PREDICT``).
Plain values: no Qt, no QGIS (tests/plugin/test_layout.py checks).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ...engine.contract.params import Tool, output_files
from ...engine.contract.problems import Problem
from ...engine.contract.tools import TOOLS
from .common import command, contract_problems

PREDICT: Tool = TOOLS["predict"]


@dataclass
class PredictRequest:
    """``python -m engine predict``: assign the tiles of ``raster`` to the clusters of a saved model."""

    model: str
    raster: "str | list[str]"                                  # several rasters: one study (the first wins)
    out: str
    resample: bool = False
    overwrite: bool = False
    dask: str | None = None                  # 'local:N' or 'tcp://host:port' (None: one process)
    extra: list[str] = field(default_factory=list)

    TOOL = PREDICT

    @property
    def name(self) -> str:
        return Path(self.out).stem

    def values(self) -> dict:
        return {"model": self.model, "raster": self.raster, "out": self.out, "resample": self.resample,
                "dask": self.dask or None, "overwrite": self.overwrite}

    def problems(self) -> list[Problem]:
        return contract_problems(PREDICT, self.values())

    def argv(self) -> list[str]:
        return command(PREDICT, self.values(), self.extra)

    def outputs(self) -> dict[str, Path]:
        return output_files(PREDICT, self.values())
