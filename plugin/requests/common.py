"""Shared pieces of the requests: choices, problem checks and argument helpers used by more than one tool.

Plain values: no Qt, no QGIS (tests/plugin/test_layout.py checks).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ...engine.contract import defaults
from ...engine.contract.problems import (BAD_CHOICE, BAD_FORMAT, EXISTS, NOT_FOUND, NOT_LOCAL, NOT_WRITABLE,
                                         OUT_OF_RANGE, Problem, REQUIRED)


METHODS = ("kmeans", "deepcluster")
MAX_EPOCHS = 200
BACKBONES = defaults.BACKBONES
WEIGHTS = ("imagenet", "none")              # or a file path
DEVICES = ("auto", "cpu", "cuda", "mps")
UNITS = ("px", "m")


def raster_problems(raster: str) -> list[Problem]:
    if not raster:
        return [Problem("raster", REQUIRED, "Choose a raster layer.")]
    if not Path(raster).is_file():
        return [Problem("raster", NOT_LOCAL, f"The raster {raster} is not a local file; save it to a GeoTIFF first "
                                             "(right-click the layer > Export > Save As…).")]
    return []


def model_choice_problems(backbone: str, weights: str, device: str) -> list[Problem]:
    """The backbone, the weights (a choice or a file) and the device of a clustering run."""
    out = []
    if backbone not in BACKBONES:
        out.append(Problem("backbone", BAD_CHOICE, f"Unknown backbone {backbone!r}."))
    if weights not in WEIGHTS and not Path(weights).is_file():
        out.append(Problem("weights", NOT_FOUND, f"The weights file {weights} does not exist."))
    out.extend(device_problems(device))
    return out


def device_problems(device: str) -> list[Problem]:
    return [] if device in DEVICES else [Problem("device", BAD_CHOICE, f"Unknown device {device!r}.")]


def stats_outputs(run: str) -> dict[str, Path]:
    """The files the engine's statistics write next to a run's GeoPackage."""
    stem = str(Path(run).with_suffix(""))
    return {"stats_csv": Path(stem + "_stats.csv"), "profile": Path(stem + "_profile.png"),
            "boxes": Path(stem + "_boxes.png")}


def stats_plots(run: str) -> list[Path]:
    files = stats_outputs(run)
    return [files["profile"], files["boxes"]]


def layer_args(buildings: str | None, roads: str | None, population: str | None) -> list[str]:
    """``--buildings B --roads R --population P`` for the layers given."""
    args = []
    for option, path in (("--buildings", buildings), ("--roads", roads), ("--population", population)):
        if path:
            args += [option, path]
    return args


def layer_problems(buildings: str | None, roads: str | None, population: str | None) -> list[Problem]:
    """A statistics layer must be a local file (the dock and the algorithms write other layers to one first)."""
    out = []
    for param, label, path in (("buildings", "building layer", buildings), ("roads", "road layer", roads),
                               ("population", "population raster", population)):
        if path and not Path(path).is_file():
            out.append(Problem(param, NOT_LOCAL, f"The {label} {path} is not a local file."))
    return out


def run_problems(run: str) -> list[Problem]:
    if not run:
        return [Problem("run", REQUIRED, "Choose a run GeoPackage (written by a cluster run).")]
    if Path(run).suffix.lower() != ".gpkg":
        return [Problem("run", BAD_FORMAT, f"The run {run} is not a GeoPackage (.gpkg) written by a cluster run.")]
    if not Path(run).is_file():
        return [Problem("run", NOT_FOUND, f"The run GeoPackage {run} does not exist.")]
    return []


def method_args(method: str, epochs: int, lr: float | None) -> list[str]:
    """``--method`` and, for DeepCluster, ``--epochs`` and ``--lr`` (omitted: the engine chooses)."""
    args = ["--method", method]
    if method == "deepcluster":
        args += ["--epochs", str(int(epochs))]
        if lr:
            args += ["--lr", repr(float(lr))]
    return args


def deepcluster_problems(epochs: int, lr: float | None) -> list[Problem]:
    out = []
    if not 1 <= int(epochs) <= MAX_EPOCHS:
        out.append(Problem("epochs", OUT_OF_RANGE, f"DeepCluster needs between 1 and {MAX_EPOCHS} epochs."))
    if lr is not None and not 0 <= float(lr) < 10:
        out.append(Problem("lr", OUT_OF_RANGE, "The learning rate must be a small positive number (e.g. 0.001), "
                                               "or empty for automatic."))
    return out


def unique_output_problem(outputs, overwrite: bool, found: list[Problem]) -> list[Problem]:
    """'X already exists' for the first existing file of ``outputs()``, unless overwriting or already said
    (or the output path itself is wrong): nothing when ``found`` has a problem with ``out``."""
    if overwrite or any(p.param == "out" for p in found):
        return []
    taken = [p.name for p in outputs().values() if p.exists()]
    return [Problem("out", EXISTS, f"{taken[0]} already exists.")] if taken else []


def output_problems(out: str, overwrite: bool) -> list[Problem]:
    if not out:
        return [Problem("out", REQUIRED, "Choose an output GeoPackage.")]
    path = Path(out)
    if path.suffix.lower() != ".gpkg":
        return [Problem("out", BAD_FORMAT, "The output must be a GeoPackage file ending in .gpkg.")]
    folder = path.parent
    if not folder.is_dir():
        return [Problem("out", NOT_FOUND, f"The output folder {folder} does not exist.")]
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError:
        return [Problem("out", NOT_WRITABLE, f"The output folder {folder} is not writable; choose another.")]
    if path.exists() and not overwrite:
        return [Problem("out", EXISTS, f"{path.name} already exists.")]
    return []


def default_output(raster: str, kind: str = "clusters") -> str:
    """A free output path next to the raster (or in the home folder if that is not writable)."""
    base = Path(raster).with_suffix("") if raster else Path.home() / "urbanform"
    folder = base.parent if os.access(base.parent, os.W_OK) else Path.home()
    for i in range(1, 1000):
        candidate = folder / f"{base.name}_{kind}{'' if i == 1 else i}.gpkg"
        if not candidate.exists():
            return str(candidate)
    return str(folder / f"{base.name}_{kind}.gpkg")


def stage_share(event: dict) -> float:
    total = event.get("total") or 0
    return min(1.0, float(event.get("done", 0)) / total) if total else 0.0
