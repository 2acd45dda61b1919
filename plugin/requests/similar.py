"""The ``similar`` tool (tiles like a few query tiles or places) as a request.

Checks, command line and file names are the contract's (``engine.contract.tools.SIMILAR``).
Plain values: no Qt, no QGIS (tests/plugin/test_layout.py checks).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ...engine.contract.params import Tool, output_files
from ...engine.contract.problems import Problem
from ...engine.contract.tools import TOOLS
from .common import command, contract_problems

SIMILAR: Tool = TOOLS["similar"]


@dataclass
class SimilarRequest:
    """``python -m engine similar``: every tile of ``raster`` scored by its likeness to the query."""

    raster: "str | list[str]"                                  # several rasters: one study (the first wins)
    out: str
    query: str | None = None            # a vector file of points or polygons
    query_tiles: str | None = None      # or tile ids, '12,40'
    top: int = SIMILAR.param("top").default
    tile_size: str = SIMILAR.param("tile_size").default
    backbone: str = SIMILAR.param("backbone").default
    device: str = SIMILAR.param("device").default
    seed: int = SIMILAR.param("seed").default
    overwrite: bool = False
    extra: list[str] = field(default_factory=list)

    TOOL = SIMILAR

    @property
    def name(self) -> str:
        return Path(self.out).stem

    def values(self) -> dict:
        return {"raster": self.raster, "out": self.out, "query": self.query, "query_tiles": self.query_tiles,
                "top": self.top, "tile_size": self.tile_size, "backbone": self.backbone, "device": self.device,
                "seed": self.seed, "overwrite": self.overwrite}

    def problems(self) -> list[Problem]:
        return contract_problems(SIMILAR, self.values())

    def argv(self) -> list[str]:
        return command(SIMILAR, self.values(), self.extra)

    def outputs(self) -> dict[str, Path]:
        return output_files(SIMILAR, self.values())
