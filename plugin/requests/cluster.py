"""What the dock and the Processing algorithm ask the engine to do, as plain values.

A request is built from widgets or algorithm parameters and knows how to turn
itself into the engine's command line. ``problems()`` lists what the engine
would reject, so the UI can say so before anything runs. No Qt here.

This module: the ``cluster`` tool. One module per tool in this package; shared
helpers in ``common``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ...engine.contract import defaults
from ...engine.contract.limits import MAX_K, MIN_K, MIN_TILE_PX
from ...engine.contract.outputs import cluster_outputs
from ...engine.contract.problems import BAD_CHOICE, OUT_OF_RANGE, Problem
from .common import (METHODS, UNITS, deepcluster_problems, layer_args, layer_problems, method_args,
                     model_choice_problems, output_problems, raster_problems, stats_outputs, stats_plots,
                     unique_output_problem)


@dataclass
class ClusterRequest:
    raster: str
    out: str
    k: int = 8
    method: str = "kmeans"
    epochs: int = 5                                           # DeepCluster only
    lr: float | None = None                                   # DeepCluster only; None: the engine's "auto"
    tile_size: float = 64
    tile_unit: str = "px"
    overlap: float = 0
    backbone: str = defaults.DEFAULT_BACKBONE
    weights: str = defaults.DEFAULT_WEIGHTS
    device: str = "auto"
    seed: int = 0
    extent: tuple[float, float, float, float] | None = None   # in the raster's CRS
    area: str | None = None                                   # a polygon file
    buildings: str | None = None                              # statistics after clustering (files; see StatsRequest)
    roads: str | None = None
    population: str | None = None
    overwrite: bool = False
    extra: list[str] = field(default_factory=list)

    @property
    def with_stats(self) -> bool:
        """The run also computes urban-form statistics (the engine then writes the ``clusters`` layer and plots)."""
        return bool(self.buildings or self.roads or self.population)

    @property
    def tile_text(self) -> str:
        return f"{self.tile_size:g}{self.tile_unit}"

    @property
    def overlap_text(self) -> str:
        return f"{self.overlap:g}{self.tile_unit}"

    @property
    def name(self) -> str:
        """A short run name for the layer group: OUT's file stem."""
        return Path(self.out).stem

    def problems(self) -> list[Problem]:
        """What the engine would reject (parameter, code, message for the user); empty when runnable."""
        out = raster_problems(self.raster)
        if self.method not in METHODS:
            out.append(Problem("method", BAD_CHOICE,
                               f"Method {self.method!r} is not available; use {', '.join(METHODS)}."))
        if not MIN_K <= int(self.k) <= MAX_K:
            out.append(Problem("k", OUT_OF_RANGE, f"K must be between {MIN_K} and {MAX_K}."))
        if self.method == "deepcluster":
            out.extend(deepcluster_problems(self.epochs, self.lr))
        if self.tile_unit not in UNITS:
            out.append(Problem("tile_size", BAD_CHOICE, "The tile size unit must be px or m."))
        elif self.tile_size <= 0 or (self.tile_unit == "px" and self.tile_size != int(self.tile_size)):
            out.append(Problem("tile_size", OUT_OF_RANGE, "The tile size must be a positive whole number of pixels "
                                                          "or a positive number of metres."))
        elif self.tile_unit == "px" and self.tile_size < MIN_TILE_PX:
            out.append(Problem("tile_size", OUT_OF_RANGE, f"Tiles need at least {MIN_TILE_PX} px."))
        if not 0 <= self.overlap < self.tile_size:
            out.append(Problem("overlap", OUT_OF_RANGE, "The overlap must be at least 0 and smaller than the tile size."))
        out.extend(model_choice_problems(self.backbone, self.weights, self.device))
        out.extend(layer_problems(self.buildings, self.roads, self.population))
        out.extend(output_problems(self.out, self.overwrite))
        return out + unique_output_problem(self.outputs, self.overwrite, out)

    def argv(self) -> list[str]:
        """Arguments after ``python -m engine``."""
        args = ["cluster", self.raster, "--out", self.out, "--k", str(int(self.k)), "--tile-size", self.tile_text,
                "--overlap", self.overlap_text, "--backbone", self.backbone, "--weights", self.weights,
                "--device", self.device, "--seed", str(int(self.seed)), "--progress", "json"]
        if self.method != "kmeans":             # k-means is the engine's default (and its fast path)
            args += method_args(self.method, self.epochs, self.lr)
        if self.extent:
            args += ["--extent", ",".join(repr(float(v)) for v in self.extent)]
        if self.area:
            args += ["--area", self.area]
        args += layer_args(self.buildings, self.roads, self.population)
        if self.overwrite:
            args.append("--overwrite")
        return args + list(self.extra)

    def outputs(self) -> dict[str, Path]:
        """The files a successful run writes (named after ``out``, as the engine names them)."""
        files = cluster_outputs(self.out)
        if self.with_stats:
            files.update(stats_outputs(self.out))
        return files

    def plots(self) -> list[Path]:
        """The statistics plots (cluster profile, then box plots); none without statistics."""
        return stats_plots(self.out) if self.with_stats else []
