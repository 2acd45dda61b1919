"""The ``sweep`` tool (several K and tile sizes in one run) as a request, with its K and size parsers.

The checks, the command line and the file names are the contract's (``engine.contract.tools.SWEEP``); the
request adds its form's own: tile sizes written as numbers in one unit, and an empty K or tile size field.

Plain values: no Qt, no QGIS (tests/plugin/test_layout.py checks).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from ...engine.contract import defaults
from ...engine.contract.limits import K_HINT, parse_k_values
from ...engine.contract.outputs import sweep_layer_name
from ...engine.contract.params import Tool, output_files, parse_length, parse_value
from ...engine.contract.problems import REQUIRED, Problem
from ...engine.contract.tools import TOOLS
from .cluster import unit_problem
from .common import command, contract_problems

SWEEP: Tool = TOOLS["sweep"]
NUMBER = re.compile(r"[0-9]*\.?[0-9]+")


def _default_sizes() -> tuple[str, str]:
    """('32,64,128', 'px'): the contract's default tile sizes as the form shows them (numbers, one unit)."""
    lengths = [parse_length(label) for label in parse_value(SWEEP.param("tile_size"), SWEEP.param("tile_size").default)]
    return ",".join(f"{value:g}" for value, _unit in lengths), lengths[0][1]


TILE_SIZES, TILE_UNIT = _default_sizes()


@dataclass
class SweepRequest:
    """``python -m engine sweep``: cluster for every K of ``k_text`` at every tile size of ``tile_sizes``."""

    raster: "str | list[str]"                                  # several rasters: one study (the first wins)
    out: str
    k_text: str = SWEEP.param("k").default
    tile_sizes: str = TILE_SIZES            # numbers in ``tile_unit``, comma-separated (or lengths: '64px,20m')
    tile_unit: str = TILE_UNIT
    method: str = SWEEP.param("method").default
    epochs: int = SWEEP.param("epochs").default
    lr: float | None = None
    backbone: str = defaults.DEFAULT_BACKBONE
    weights: str = defaults.DEFAULT_WEIGHTS
    device: str = SWEEP.param("device").default
    seed: int = SWEEP.param("seed").default
    overwrite: bool = False
    resume: bool = False                    # finish an interrupted sweep in ``out`` (its missing tile sizes)
    dask: str | None = None                  # 'local:N' or 'tcp://host:port' (None: one process)
    buildings: str | None = None            # statistics on every tile-size layer (files; see StatsRequest)
    roads: str | None = None
    population: str | None = None
    extra: list[str] = field(default_factory=list)

    TOOL = SWEEP

    @property
    def name(self) -> str:
        return Path(self.out).stem

    def interrupted(self) -> dict | None:
        """{'finished': [...], 'missing': [...]} when ``out`` holds an interrupted sweep, else None.

        The engine keeps the finished tile sizes of a sweep that was cancelled or
        failed, and says in the manifest which layers are missing; ``--resume``
        does only those.
        """
        try:
            manifest = json.loads(self.outputs()["manifest"].read_text())
        except (OSError, ValueError, KeyError):
            return None
        if not isinstance(manifest, dict) or manifest.get("tool") != "sweep" or manifest.get("complete", True):
            return None
        return {"finished": sorted(manifest.get("layers") or {}), "missing": list(manifest.get("missing") or [])}

    def ks(self) -> list[int]:
        """The K values, sorted (ValueError with a message for the user when the text is not a K list)."""
        return parse_k(self.k_text)

    def tile_text(self) -> str:
        """'64px,128px': the tile sizes as the engine reads them (a bare number is in ``tile_unit``); '' for none."""
        tokens = [t.strip() for t in (self.tile_sizes or "").split(",")]
        if not any(tokens):
            return ""
        return ",".join(t + self.tile_unit if NUMBER.fullmatch(t) else t for t in tokens)

    def sizes(self) -> list[float]:
        return parse_sizes(self.tile_sizes, self.tile_unit)

    def tile_labels(self) -> list[str]:
        """'64px', '20m': the engine's tile size texts, which also name the layers (``tiles_64px``)."""
        try:
            return parse_value(SWEEP.param("tile_size"), self.tile_text())
        except ValueError:
            return []

    def layer_names(self) -> list[str]:
        """The sweep's layers, as the engine names them (``tiles_64px``, ``tiles_2_5m``)."""
        return [sweep_layer_name(label) for label in self.tile_labels()]

    def values(self) -> dict:
        """The ``sweep`` tool's parameters for this request (``--resume`` rather than ``--overwrite``)."""
        return {"raster": self.raster, "out": self.out, "k": (self.k_text or "").replace(" ", ""),
                "tile_size": self.tile_text(), "method": self.method, "epochs": self.epochs, "lr": self.lr,
                "backbone": self.backbone, "weights": self.weights, "device": self.device, "seed": self.seed,
                "resume": self.resume, "buildings": self.buildings, "roads": self.roads,
                "population": self.population, "dask": self.dask or None,
                "overwrite": self.overwrite and not self.resume}

    def problems(self) -> list[Problem]:
        values = {**self.values(), "overwrite": self.overwrite or self.resume}    # resume writes over the sweep
        out = unit_problem(self.tile_unit, contract_problems(SWEEP, values), sized=("tile_size",))
        if not (self.k_text or "").strip():
            out.append(Problem("k", REQUIRED, f"Give the K values: {K_HINT}"))
        if not self.tile_text():
            out.append(Problem("tile_size", REQUIRED, "Give at least one tile size, e.g. "
                                                      f"{TILE_SIZES} ({TILE_UNIT})."))
        order = SWEEP.names()
        return sorted(out, key=lambda p: order.index(p.param) if p.param in order else len(order))

    def argv(self) -> list[str]:
        return command(SWEEP, self.values(), self.extra)

    def outputs(self) -> dict[str, Path]:
        return output_files(SWEEP, self.values(), sizes=self.tile_labels())

    def plots(self) -> list[Path]:
        """The sweep's PNG plots: metrics against K, then lineage and PCA scatter for each tile size in turn."""
        files = self.outputs()
        keys = ["metrics_png", *(f"{kind}_{label}" for label in self.tile_labels() for kind in ("lineage", "pca")),
                "stats_eta_png"]
        return [files[key] for key in keys if key in files]


def parse_k(text: str) -> list[int]:
    """'2..12', '2,4,6' or '2..6,8,12' -> sorted K values; ValueError naming the problem.

    The engine's parser (``engine.contract.limits.parse_k_values``): the same text gets the same answer.
    """
    return parse_k_values(text)


def parse_sizes(text: str, unit: str) -> list[float]:
    """'32,64,128' (optionally '32px,64px') -> sizes in ``unit``; ValueError naming the problem (the contract's
    parser of tile sizes: the same minimum, the same words)."""
    labels = SweepRequest(raster="", out="", tile_sizes=text, tile_unit=unit)
    lengths = [parse_length(label) for label in parse_value(SWEEP.param("tile_size"), labels.tile_text())]
    return [value for value, _unit in lengths]
