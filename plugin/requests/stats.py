"""The ``stats`` and ``export`` tools (a run's statistics, a run exported to Shapefile/GeoPackage/CSV) as requests.

Checks, command lines and file names are the contract's (``engine.contract.tools.STATS_TOOL`` and ``EXPORT``).
Plain values: no Qt, no QGIS (tests/plugin/test_layout.py checks).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ...engine.contract.params import Tool, output_files
from ...engine.contract.problems import EXISTS, Problem
from ...engine.contract.tools import TOOLS
from .common import command, contract_problems

STATS: Tool = TOOLS["stats"]
EXPORT: Tool = TOOLS["export"]


@dataclass
class StatsRequest:
    """``python -m engine stats``: urban-form statistics of a cluster run's tiles and clusters.

    ``run`` is the run's GeoPackage (layer ``tiles``); the layers are local files
    (the dock and the algorithm write other layers to temporary files first).
    The engine adds the statistic columns to ``tiles``, writes the ``clusters``
    layer (one row per cluster) and, next to the GeoPackage, the eta-squared
    table and the profile plots (``outputs()``).
    """

    run: str
    buildings: str | None = None
    roads: str | None = None
    population: str | None = None
    nir_band: int | None = None              # NDVI from the run's raster: its NIR band (1-based)
    red_band: int | None = None
    road_field: str = STATS.param("road_field").default      # the attribute that says which roads are major
    overwrite: bool = False                  # statistics already in the run are replaced
    dask: str | None = None                  # 'local:N' or 'tcp://host:port' (None: one process)
    extra: list[str] = field(default_factory=list)

    TOOL = STATS

    @property
    def name(self) -> str:
        return Path(self.run).stem

    def values(self) -> dict:
        return {"run": self.run, "buildings": self.buildings, "roads": self.roads, "population": self.population,
                "nir_band": self.nir_band, "red_band": self.red_band,
                "road_field": (self.road_field or "").strip() or None, "dask": self.dask or None,
                "overwrite": self.overwrite}

    def problems(self) -> list[Problem]:
        out = contract_problems(STATS, self.values())
        if not out and not self.overwrite and self.outputs()["stats_csv"].exists():
            out.append(Problem("run", EXISTS,
                               f"{Path(self.run).name} has statistics already; allow overwriting to replace them."))
        return out

    def argv(self) -> list[str]:
        return command(STATS, self.values(), self.extra)

    def outputs(self) -> dict[str, Path]:
        """What the run rewrites or writes (the GeoPackage is replaced atomically)."""
        return output_files(STATS, self.values())

    def plots(self) -> list[Path]:
        files = self.outputs()
        return [files[key] for key in ("profile", "boxes") if key in files]


@dataclass
class ExportRequest:
    """``python -m engine export``: every layer of a run's GeoPackage as Shapefile, GeoPackage or CSV, one file each."""

    run: str
    out_dir: str
    format: str = EXPORT.param("format").default        # noqa: A003 - the engine's option name
    overwrite: bool = False
    extra: list[str] = field(default_factory=list)

    TOOL = EXPORT

    @property
    def name(self) -> str:
        return Path(self.run).stem

    def values(self) -> dict:
        return {"run": self.run, "format": self.format, "out": self.out_dir, "overwrite": self.overwrite}

    def problems(self) -> list[Problem]:
        return contract_problems(EXPORT, self.values())

    def argv(self) -> list[str]:
        return command(EXPORT, self.values(), self.extra)     # no progress: it is quick

    def outputs(self) -> dict[str, Path]:
        """The output folder (the engine writes one file per layer in it, named after the run and the layer)."""
        return {"folder": Path(self.out_dir)}
