"""What the dock and the Processing algorithm ask the engine to do, as plain values.

A request is built from widgets or algorithm parameters; ``values()`` maps its
fields to the engine tool's parameters, and from there its checks
(``problems()``), its command line (``argv()``) and its files (``outputs()``)
are the contract's (``engine.contract.tools``), so the dock, Processing and the
engine agree on them. No Qt here.

This module: the ``cluster`` tool. One module per tool in this package; shared
helpers in ``common``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ...engine.contract import defaults
from ...engine.contract.outputs import tile_label
from ...engine.contract.params import LENGTH_UNITS, Tool, output_files, parse_length
from ...engine.contract.problems import BAD_CHOICE, Problem
from ...engine.contract.tools import TOOLS
from .common import command, contract_problems

CLUSTER: Tool = TOOLS["cluster"]
TILE_SIZE, TILE_UNIT = parse_length(CLUSTER.param("tile_size").default)       # 64, 'px'
DEEPCLUSTER = CLUSTER.param("epochs").applies_when[1]          # the method the training options apply to
OVERLAP = parse_length(CLUSTER.param("overlap").default)[0]


def unit_problem(unit: str, found: list[Problem], sized=("tile_size", "overlap")) -> list[Problem]:
    """``found`` with a tile size unit that is not one of the contract's units said once (``tile_size``,
    ``bad_choice``) instead of the bad format of every length written in it."""
    if unit in LENGTH_UNITS:
        return found
    problem = Problem("tile_size", BAD_CHOICE, f"The tile size unit {unit!r} is not one of "
                                               f"{', '.join(LENGTH_UNITS)}.")
    kept = [p for p in found if p.param not in sized]
    first = next((i for i, p in enumerate(found) if p.param in sized), len(kept))
    return kept[:first] + [problem] + kept[first:]


@dataclass
class ClusterRequest:
    raster: "str | list[str]"                                  # several rasters: one study (the first wins)
    out: str
    k: int = CLUSTER.param("k").default
    method: str = CLUSTER.param("method").default
    epochs: int = CLUSTER.param("epochs").default             # DeepCluster only
    lr: float | None = None                                   # DeepCluster only; None: the engine's "auto"
    tile_size: float = TILE_SIZE                              # in ``tile_unit``
    tile_unit: str = TILE_UNIT
    overlap: float = OVERLAP                                  # in ``tile_unit``
    backbone: str = defaults.DEFAULT_BACKBONE
    weights: str = defaults.DEFAULT_WEIGHTS
    device: str = CLUSTER.param("device").default
    seed: int = CLUSTER.param("seed").default
    extent: tuple[float, float, float, float] | None = None   # in the raster's CRS
    area: str | None = None                                   # a polygon file
    buildings: str | None = None                              # statistics after clustering (files; see StatsRequest)
    roads: str | None = None
    population: str | None = None
    overwrite: bool = False
    batch_size: int | None = None                             # None: the engine's choice
    dask: str | None = None                                   # 'local:N' or 'tcp://host:port' (None: one process)
    extra: list[str] = field(default_factory=list)

    TOOL = CLUSTER

    @property
    def with_stats(self) -> bool:
        """The run also computes urban-form statistics (the engine then writes the ``clusters`` layer and plots)."""
        return bool(self.buildings or self.roads or self.population)

    @property
    def tile_text(self) -> str:
        """'64px', '2.5m': the tile size as the engine reads it."""
        return tile_label(self.tile_size, self.tile_unit)

    @property
    def overlap_text(self) -> str:
        return tile_label(self.overlap, self.tile_unit)

    @property
    def name(self) -> str:
        """A short run name for the layer group: OUT's file stem."""
        return Path(self.out).stem

    def values(self) -> dict:
        """The ``cluster`` tool's parameters for this request."""
        return {"raster": self.raster, "out": self.out, "k": self.k, "method": self.method, "epochs": self.epochs,
                "lr": self.lr, "tile_size": self.tile_text, "overlap": self.overlap_text, "backbone": self.backbone,
                "weights": self.weights, "device": self.device, "seed": self.seed, "extent": self.extent,
                "area": self.area, "buildings": self.buildings, "roads": self.roads, "population": self.population,
                "batch_size": self.batch_size, "dask": self.dask or None, "overwrite": self.overwrite}

    def problems(self) -> list[Problem]:
        """What the engine would reject (parameter, code, message for the user); empty when runnable."""
        return unit_problem(self.tile_unit, contract_problems(CLUSTER, self.values()))

    def argv(self) -> list[str]:
        """Arguments after ``python -m engine``."""
        return command(CLUSTER, self.values(), self.extra)

    def outputs(self) -> dict[str, Path]:
        """The files a successful run writes (named after ``out``, as the engine names them)."""
        return output_files(CLUSTER, self.values())

    def plots(self) -> list[Path]:
        """The statistics plots (cluster profile, then box plots); none without statistics."""
        files = self.outputs()
        return [files[key] for key in ("profile", "boxes") if key in files]
