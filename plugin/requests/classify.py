"""The ``classify`` tool (tiles classified from a few labels, or by a saved classifier) as a request.

Checks, command line and file names are the contract's (``engine.contract.tools.CLASSIFY``).
Plain values: no Qt, no QGIS (tests/plugin/test_layout.py checks).
"""
from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as default
from pathlib import Path

from ...engine.contract.params import Tool, output_files
from ...engine.contract.problems import Problem
from ...engine.contract.tools import TOOLS
from .common import command, contract_problems

CLASSIFY: Tool = TOOLS["classify"]


@dataclass
class ClassifyRequest:
    """``python -m engine classify``: train on ``labels`` (their ``field``) or apply a saved ``model``."""

    raster: "str | list[str]"                                  # several rasters: one study (the first wins)
    out: str
    labels: str | None = None
    field: str | None = None          # noqa: A003 - the engine's option name
    model: str | None = None
    classifier: str = CLASSIFY.param("classifier").default
    folds: int = CLASSIFY.param("folds").default
    finetune: bool = CLASSIFY.param("finetune").default
    tile_size: str = CLASSIFY.param("tile_size").default
    backbone: str = CLASSIFY.param("backbone").default
    device: str = CLASSIFY.param("device").default
    seed: int = CLASSIFY.param("seed").default
    overwrite: bool = False
    extra: list[str] = default(default_factory=list)        # (``field`` is the engine's option name here)

    TOOL = CLASSIFY

    @property
    def name(self) -> str:
        return Path(self.out).stem

    def values(self) -> dict:
        return {"raster": self.raster, "out": self.out, "labels": self.labels, "field": self.field,
                "model": self.model, "classifier": self.classifier, "folds": self.folds, "finetune": self.finetune,
                "tile_size": self.tile_size,
                "backbone": self.backbone, "device": self.device, "seed": self.seed, "overwrite": self.overwrite}

    def problems(self) -> list[Problem]:
        return contract_problems(CLASSIFY, self.values())

    def argv(self) -> list[str]:
        return command(CLASSIFY, self.values(), self.extra)

    def outputs(self) -> dict[str, Path]:
        return output_files(CLASSIFY, self.values())
