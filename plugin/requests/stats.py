"""The ``stats`` and ``export`` tools (a run's statistics, a run exported to Shapefile/GeoPackage/CSV) as requests.

Plain values: no Qt, no QGIS (tests/plugin/test_layout.py checks).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ...engine.contract.problems import BAD_CHOICE, EXISTS, NOT_FOLDER, NOT_FOUND, OUT_OF_RANGE, Problem, REQUIRED
from .common import layer_args, layer_problems, run_problems, stats_outputs, stats_plots


@dataclass
class StatsRequest:
    """``python -m engine stats``: urban-form statistics of a cluster run's tiles and clusters.

    ``run`` is the run's GeoPackage (layer ``tiles``); the layers are local files
    (the dock and the algorithm write other layers to temporary files first).
    The engine adds the statistic columns to ``tiles``, writes the ``clusters``
    layer (one row per cluster) and, next to the GeoPackage, RUN_stats.csv
    (eta-squared per statistic), RUN_profile.png and RUN_boxes.png.
    """

    run: str
    buildings: str | None = None
    roads: str | None = None
    population: str | None = None
    nir_band: int | None = None              # NDVI from the run's raster: its NIR band (1-based)
    red_band: int | None = None
    road_field: str = "highway"              # the attribute that says which roads are major
    overwrite: bool = False                  # statistics already in the run are replaced
    extra: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return Path(self.run).stem

    def problems(self) -> list[Problem]:
        out = run_problems(self.run)
        if not (self.buildings or self.roads or self.population or self.nir_band):
            out.append(Problem("buildings", REQUIRED, "Choose at least one of a building layer, a road layer, a "
                                                      "population raster or the NIR band."))
        out.extend(layer_problems(self.buildings, self.roads, self.population))
        for param, name, band in (("nir_band", "NIR", self.nir_band), ("red_band", "red", self.red_band)):
            if band is not None and int(band) < 1:
                out.append(Problem(param, OUT_OF_RANGE, f"The {name} band must be a band number from 1."))
        if self.roads and not (self.road_field or "").strip():
            out.append(Problem("road_field", REQUIRED,
                               "Give the road attribute that names the road class (e.g. highway)."))
        if not out and not self.overwrite and stats_outputs(self.run)["stats_csv"].exists():
            out.append(Problem("run", EXISTS,
                               f"{Path(self.run).name} has statistics already; allow overwriting to replace them."))
        return out

    def argv(self) -> list[str]:
        args = ["stats", self.run, *layer_args(self.buildings, self.roads, self.population)]
        if self.nir_band:
            args += ["--nir-band", str(int(self.nir_band))]
        if self.red_band:
            args += ["--red-band", str(int(self.red_band))]
        if self.roads and self.road_field.strip() != "highway":
            args += ["--road-field", self.road_field.strip()]
        args += ["--progress", "json"]
        if self.overwrite:
            args.append("--overwrite")
        return args + list(self.extra)

    def outputs(self) -> dict[str, Path]:
        """What the run rewrites or writes (the GeoPackage is replaced atomically)."""
        stem = str(Path(self.run).with_suffix(""))
        return {"gpkg": Path(self.run), "manifest": Path(stem + "_manifest.json"), **stats_outputs(self.run)}

    def plots(self) -> list[Path]:
        return stats_plots(self.run)


EXPORT_FORMATS = ("shp", "gpkg", "csv")


@dataclass
class ExportRequest:
    """``python -m engine export``: every layer of a run's GeoPackage as Shapefile, GeoPackage or CSV, one file each."""

    run: str
    out_dir: str
    format: str = "shp"                     # noqa: A003 - the engine's option name
    overwrite: bool = False
    extra: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return Path(self.run).stem

    def problems(self) -> list[Problem]:
        out = run_problems(self.run)
        if self.format not in EXPORT_FORMATS:
            out.append(Problem("format", BAD_CHOICE,
                               f"Format {self.format!r} is not available; use {', '.join(EXPORT_FORMATS)}."))
        if not self.out_dir:
            out.append(Problem("out", REQUIRED, "Choose an output folder."))
        elif Path(self.out_dir).exists() and not Path(self.out_dir).is_dir():
            out.append(Problem("out", NOT_FOLDER, f"The output folder {self.out_dir} is a file; choose a folder."))
        elif not Path(self.out_dir).parent.is_dir():
            out.append(Problem("out", NOT_FOUND, f"The folder {Path(self.out_dir).parent} does not exist."))
        return out

    def argv(self) -> list[str]:
        args = ["export", self.run, "--format", self.format, "--out", self.out_dir]     # no progress: it is quick
        if self.overwrite:
            args.append("--overwrite")
        return args + list(self.extra)

    def outputs(self) -> dict[str, Path]:
        """The output folder (the engine writes one file per layer in it, named after the run and the layer)."""
        return {"folder": Path(self.out_dir)}
