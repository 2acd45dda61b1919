"""What the dock and the Processing algorithm ask the engine to do, as plain values.

A request is built from widgets or algorithm parameters and knows how to turn
itself into the engine's command line. ``problems()`` lists what the engine
would reject, so the UI can say so before anything runs. No Qt here.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

METHODS = ("kmeans",)                       # later issues add deepcluster
BACKBONES = ("resnet18", "resnet50", "vgg16", "efficientnet_lite0")
WEIGHTS = ("imagenet", "none")              # or a file path
DEVICES = ("auto", "cpu", "cuda", "mps")
UNITS = ("px", "m")


@dataclass
class ClusterRequest:
    raster: str
    out: str
    k: int = 8
    method: str = "kmeans"
    tile_size: float = 64
    tile_unit: str = "px"
    overlap: float = 0
    backbone: str = "efficientnet_lite0"
    weights: str = "imagenet"
    device: str = "auto"
    seed: int = 0
    extent: tuple[float, float, float, float] | None = None   # in the raster's CRS
    area: str | None = None                                   # a polygon file
    overwrite: bool = False
    extra: list[str] = field(default_factory=list)

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

    def problems(self) -> list[str]:
        """What the engine would reject, as messages for the user (empty when runnable)."""
        out = []
        if not self.raster:
            out.append("Choose a raster layer.")
        elif not Path(self.raster).is_file():
            out.append(f"The raster {self.raster} is not a local file; save it to a GeoTIFF first "
                       "(right-click the layer > Export > Save As…).")
        if self.method not in METHODS:
            out.append(f"Method {self.method!r} is not available; use {', '.join(METHODS)}.")
        if not 2 <= int(self.k) <= 254:
            out.append("K must be between 2 and 254.")
        if self.tile_unit not in UNITS:
            out.append("The tile size unit must be px or m.")
        elif self.tile_size <= 0 or (self.tile_unit == "px" and self.tile_size != int(self.tile_size)):
            out.append("The tile size must be a positive whole number of pixels or a positive number of metres.")
        elif self.tile_unit == "px" and self.tile_size < 16:
            out.append("Tiles need at least 16 px.")
        if not 0 <= self.overlap < self.tile_size:
            out.append("The overlap must be at least 0 and smaller than the tile size.")
        if self.backbone not in BACKBONES:
            out.append(f"Unknown backbone {self.backbone!r}.")
        if self.weights not in WEIGHTS and not Path(self.weights).is_file():
            out.append(f"The weights file {self.weights} does not exist.")
        if self.device not in DEVICES:
            out.append(f"Unknown device {self.device!r}.")
        out.extend(output_problems(self.out, self.overwrite))
        if not self.overwrite and not any("already exists" in p for p in out):
            taken = [p.name for p in self.outputs().values() if p.exists()]
            if taken:
                out.append(f"{taken[0]} already exists.")
        return out

    def argv(self) -> list[str]:
        """Arguments after ``python -m engine``."""
        args = ["cluster", self.raster, "--out", self.out, "--k", str(int(self.k)), "--tile-size", self.tile_text,
                "--overlap", self.overlap_text, "--backbone", self.backbone, "--weights", self.weights,
                "--device", self.device, "--seed", str(int(self.seed)), "--progress", "json"]
        if self.extent:
            args += ["--extent", ",".join(repr(float(v)) for v in self.extent)]
        if self.area:
            args += ["--area", self.area]
        if self.overwrite:
            args.append("--overwrite")
        return args + list(self.extra)

    def outputs(self) -> dict[str, Path]:
        """The files a successful run writes (named after ``out``, as the engine names them)."""
        stem = str(Path(self.out).with_suffix(""))
        return {"gpkg": Path(self.out), "tif": Path(stem + "_clusters.tif"),
                "manifest": Path(stem + "_manifest.json"), "quicklook": Path(stem + "_quicklook.png"),
                "model": Path(stem + "_model.npz")}


def output_problems(out: str, overwrite: bool) -> list[str]:
    if not out:
        return ["Choose an output GeoPackage."]
    path = Path(out)
    if path.suffix.lower() != ".gpkg":
        return ["The output must be a GeoPackage file ending in .gpkg."]
    folder = path.parent
    if not folder.is_dir():
        return [f"The output folder {folder} does not exist."]
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError:
        return [f"The output folder {folder} is not writable; choose another."]
    if path.exists() and not overwrite:
        return [f"{path.name} already exists."]
    return []


def default_output(raster: str) -> str:
    """A free output path next to the raster (or in the home folder if that is not writable)."""
    base = Path(raster).with_suffix("") if raster else Path.home() / "urbanform"
    folder = base.parent if os.access(base.parent, os.W_OK) else Path.home()
    for i in range(1, 1000):
        candidate = folder / f"{base.name}_clusters{'' if i == 1 else i}.gpkg"
        if not candidate.exists():
            return str(candidate)
    return str(folder / f"{base.name}_clusters.gpkg")
