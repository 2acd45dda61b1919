"""The ``sweep`` tool (several K and tile sizes in one run) as a request, with its K and size parsers.

Plain values: no Qt, no QGIS (tests/plugin/test_layout.py checks).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ...engine.contract import defaults
from ...engine.contract.limits import MIN_TILE_PX, parse_k_values
from ...engine.contract.outputs import sweep_layer_name, sweep_outputs, tile_label
from ...engine.contract.problems import BAD_CHOICE, BAD_FORMAT, Problem
from .common import (METHODS, UNITS, deepcluster_problems, layer_args, layer_problems, method_args,
                     model_choice_problems, output_problems, raster_problems, unique_output_problem)


@dataclass
class SweepRequest:
    """``python -m engine sweep``: cluster for every K of ``k_text`` at every tile size of ``tile_sizes``."""

    raster: str
    out: str
    k_text: str = "2..12"
    tile_sizes: str = "32,64,128"           # numbers in ``tile_unit``, comma-separated
    tile_unit: str = "px"
    method: str = "kmeans"
    epochs: int = 5
    lr: float | None = None
    backbone: str = defaults.DEFAULT_BACKBONE
    weights: str = defaults.DEFAULT_WEIGHTS
    device: str = "auto"
    seed: int = 0
    overwrite: bool = False
    resume: bool = False                    # finish an interrupted sweep in ``out`` (its missing tile sizes)
    buildings: str | None = None            # statistics on every tile-size layer (files; see StatsRequest)
    roads: str | None = None
    population: str | None = None
    extra: list[str] = field(default_factory=list)

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
        except (OSError, ValueError):
            return None
        if not isinstance(manifest, dict) or manifest.get("tool") != "sweep" or manifest.get("complete", True):
            return None
        return {"finished": sorted(manifest.get("layers") or {}), "missing": list(manifest.get("missing") or [])}

    def ks(self) -> list[int]:
        """The K values, sorted (ValueError with a message for the user when the text is not a K list)."""
        return parse_k(self.k_text)

    def sizes(self) -> list[float]:
        return parse_sizes(self.tile_sizes, self.tile_unit)

    def tile_labels(self) -> list[str]:
        """'64px', '20m': the engine's tile size texts, which also name the layers (``tiles_64px``)."""
        try:
            return [tile_label(s, self.tile_unit) for s in self.sizes()]
        except ValueError:
            return []

    def layer_names(self) -> list[str]:
        """The sweep's layers, as the engine names them (``tiles_64px``, ``tiles_2_5m``)."""
        return [sweep_layer_name(label) for label in self.tile_labels()]

    def problems(self) -> list[Problem]:
        out = raster_problems(self.raster)
        if self.method not in METHODS:
            out.append(Problem("method", BAD_CHOICE,
                               f"Method {self.method!r} is not available; use {', '.join(METHODS)}."))
        elif self.method == "deepcluster":
            out.extend(deepcluster_problems(self.epochs, self.lr))
        try:
            self.ks()
        except ValueError as exc:
            out.append(Problem("k", BAD_FORMAT, str(exc)))
        if self.tile_unit not in UNITS:
            out.append(Problem("tile_size", BAD_CHOICE, "The tile size unit must be px or m."))
        else:
            try:
                self.sizes()
            except ValueError as exc:
                out.append(Problem("tile_size", BAD_FORMAT, str(exc)))
        out.extend(model_choice_problems(self.backbone, self.weights, self.device))
        out.extend(layer_problems(self.buildings, self.roads, self.population))
        out.extend(output_problems(self.out, self.overwrite or self.resume))
        return out + unique_output_problem(self.outputs, self.overwrite or self.resume, out)

    def argv(self) -> list[str]:
        args = ["sweep", self.raster, "--out", self.out, "--k", self.k_text.replace(" ", ""),
                "--tile-size", ",".join(self.tile_labels()), "--backbone", self.backbone, "--weights", self.weights,
                "--seed", str(int(self.seed)), "--progress", "json"]
        args += method_args(self.method, self.epochs, self.lr)
        args += layer_args(self.buildings, self.roads, self.population)
        if self.device != "auto":
            args += ["--device", self.device]
        if self.resume:
            args.append("--resume")
        elif self.overwrite:
            args.append("--overwrite")
        return args + list(self.extra)

    def outputs(self) -> dict[str, Path]:
        stem = str(Path(self.out).with_suffix(""))
        files = sweep_outputs(self.out, self.tile_labels())
        if self.buildings or self.roads or self.population:
            files["stats_eta_csv"] = Path(stem + "_stats_eta.csv")
            files["stats_eta_png"] = Path(stem + "_stats_eta.png")
        return files

    def plots(self) -> list[Path]:
        """The sweep's PNG plots: metrics against K, then lineage and PCA scatter per tile size."""
        return [p for p in self.outputs().values() if p.suffix == ".png"]


def parse_k(text: str) -> list[int]:
    """'2..12', '2,4,6' or '2..6,8,12' -> sorted K values; ValueError naming the problem.

    The engine's parser (``engine.contract.limits.parse_k_values``): the same text gets the same answer.
    """
    return parse_k_values(text)


def parse_sizes(text: str, unit: str) -> list[float]:
    """'32,64,128' (optionally '32px,64px') -> sizes in ``unit``; ValueError naming the problem."""
    sizes = []
    for part in (p.strip() for p in (text or "").split(",")):
        if not part:
            continue
        number = part[: -len(unit)] if unit and part.endswith(unit) else part
        try:
            size = float(number)
        except ValueError:
            raise ValueError(f"Tile size {part!r} is not a number of {unit}; write e.g. 32,64,128.") from None
        if size <= 0 or (unit == "px" and size != int(size)):
            raise ValueError(f"Tile size {part!r} must be a positive whole number of pixels or a positive "
                             "number of metres.")
        if unit == "px" and size < MIN_TILE_PX:
            raise ValueError(f"Tile size {part!r}: tiles need at least {MIN_TILE_PX} px.")
        if size not in sizes:
            sizes.append(size)
    if not sizes:
        raise ValueError("Give at least one tile size, e.g. 32,64,128.")
    return sizes
