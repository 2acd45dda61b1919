"""What the dock and the Processing algorithm ask the engine to do, as plain values.

A request is built from widgets or algorithm parameters and knows how to turn
itself into the engine's command line. ``problems()`` lists what the engine
would reject, so the UI can say so before anything runs. No Qt here.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..engine.contract import defaults
from ..engine.contract.problems import (BAD_CHOICE, BAD_FORMAT, EXISTS, NOT_FOLDER, NOT_FOUND, NOT_LOCAL,
                                        NOT_WRITABLE, OUT_OF_RANGE, REQUIRED, Problem)
from ..engine.contract.limits import MAX_K, MIN_K, MIN_TILE_PX, parse_k_values
from ..engine.contract.outputs import cluster_outputs, sweep_layer_name, sweep_outputs, tile_label

METHODS = ("kmeans", "deepcluster")
MAX_EPOCHS = 200
BACKBONES = defaults.BACKBONES
WEIGHTS = ("imagenet", "none")              # or a file path
DEVICES = ("auto", "cpu", "cuda", "mps")
UNITS = ("px", "m")


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


@dataclass
class PredictRequest:
    """``python -m engine predict``: assign the tiles of ``raster`` to the clusters of a saved model."""

    model: str
    raster: str
    out: str
    resample: bool = False
    overwrite: bool = False
    extra: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return Path(self.out).stem

    def problems(self) -> list[Problem]:
        out = []
        if not self.model:
            out.append(Problem("model", REQUIRED, "Choose a model file (OUT_model.pt, written by a cluster run)."))
        elif not Path(self.model).is_file():
            out.append(Problem("model", NOT_FOUND, f"The model file {self.model} does not exist."))
        elif Path(self.model).suffix.lower() != ".pt":
            out.append(Problem("model", BAD_FORMAT,
                               f"The model file {self.model} is not a .pt file written by a cluster run."))
        out += raster_problems(self.raster)
        out += output_problems(self.out, self.overwrite)
        return out + unique_output_problem(self.outputs, self.overwrite, out)

    def argv(self) -> list[str]:
        args = ["predict", self.model, self.raster, "--out", self.out, "--progress", "json"]
        if self.resample:
            args.append("--resample")
        if self.overwrite:
            args.append("--overwrite")
        return args + list(self.extra)

    def outputs(self) -> dict[str, Path]:
        outputs = ClusterRequest(raster=self.raster, out=self.out).outputs()
        del outputs["model"]
        return outputs


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


# -- building segmentation ----------------------------------------------------------------------------
SEG_ENCODERS = defaults.SEG_ENCODERS
SEG_METRICS = ("iou", "precision", "recall", "f1", "obj_f1")      # what the plugin shows of evaluate-seg
SEG_METRIC_LABELS = {"iou": "IoU", "precision": "precision", "recall": "recall", "f1": "F1", "obj_f1": "object F1",
                     "accuracy": "accuracy", "obj_precision": "object precision", "obj_recall": "object recall"}


@dataclass
class TrainSegRequest:
    """``python -m engine train-seg``: a building U-Net trained from footprint polygons on ``raster``.

    ``buildings`` (and ``label_area``) are local files (the dock and the algorithm write other layers to
    temporary files first). Exactly one of ``epochs`` and ``minutes`` bounds the training. The engine writes
    MODEL.pt, MODEL_checkpoint.pt (the latest epoch, for --resume) and MODEL_manifest.json.
    """

    raster: str
    buildings: str | None
    out: str
    encoder: str = defaults.DEFAULT_SEG_ENCODER
    weights: str = defaults.DEFAULT_WEIGHTS    # or a file path
    chip: int = 256
    epochs: int | None = 10
    minutes: float | None = None
    val_fraction: float = 0.2
    chips_per_epoch: int | None = None         # None: the engine's choice
    label_area: str | None = None
    device: str = "auto"
    seed: int = 0
    overwrite: bool = False
    extra: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return Path(self.out).stem

    def problems(self) -> list[Problem]:
        out = raster_problems(self.raster)
        if self.chips_per_epoch is not None and int(self.chips_per_epoch) < 2:
            out.append(Problem("chips_per_epoch", OUT_OF_RANGE,
                               "An epoch needs at least 2 chips (or the engine's choice)."))
        if not self.buildings:
            out.append(Problem("buildings", REQUIRED, "Choose a building footprint layer (polygons) to train from."))
        elif not Path(self.buildings).is_file():
            out.append(Problem("buildings", NOT_LOCAL,
                               f"The building footprint layer {self.buildings} is not a local file."))
        if self.label_area and not Path(self.label_area).is_file():
            out.append(Problem("label_area", NOT_LOCAL,
                               f"The labelled-area layer {self.label_area} is not a local file."))
        if self.encoder not in SEG_ENCODERS:
            out.append(Problem("encoder", BAD_CHOICE,
                               f"Unknown encoder {self.encoder!r}; use {', '.join(SEG_ENCODERS)}."))
        if self.weights not in WEIGHTS and not Path(self.weights).is_file():
            out.append(Problem("weights", NOT_FOUND, f"The weights file {self.weights} does not exist."))
        if int(self.chip) < 32 or int(self.chip) % 32:
            out.append(Problem("chip", OUT_OF_RANGE, "The chip size must be a multiple of 32 px (e.g. 128, 256, 512)."))
        if (self.epochs is None) == (self.minutes is None):
            out.append(Problem("epochs", REQUIRED, "Give either a number of epochs or a time budget in minutes."))
        elif self.epochs is not None and not 1 <= int(self.epochs) <= MAX_EPOCHS:
            out.append(Problem("epochs", OUT_OF_RANGE, f"Training needs between 1 and {MAX_EPOCHS} epochs."))
        elif self.minutes is not None and not float(self.minutes) > 0:
            out.append(Problem("minutes", OUT_OF_RANGE, "The time budget must be more than 0 minutes."))
        if not 0 < float(self.val_fraction) < 1:
            out.append(Problem("val_fraction", OUT_OF_RANGE,
                               "The validation share must be between 0 and 1 (e.g. 0.2)."))
        out.extend(device_problems(self.device))
        output = model_output_problems(self.out, self.overwrite)
        return out + (output or unique_output_problem(self.outputs, self.overwrite, out))

    def argv(self) -> list[str]:
        args = ["train-seg", self.raster, "--buildings", self.buildings or "", "--out", self.out,
                "--encoder", self.encoder, "--weights", self.weights, "--chip", str(int(self.chip)),
                "--val-fraction", repr(float(self.val_fraction)), "--seed", str(int(self.seed)),
                "--device", self.device, "--progress", "json"]
        if self.minutes is not None:
            args += ["--minutes", repr(float(self.minutes))]
        else:
            args += ["--epochs", str(int(self.epochs))]
        if self.chips_per_epoch:
            args += ["--chips-per-epoch", str(int(self.chips_per_epoch))]
        if self.label_area:
            args += ["--label-area", self.label_area]
        if self.overwrite:
            args.append("--overwrite")
        return args + list(self.extra)

    def outputs(self) -> dict[str, Path]:
        stem = str(Path(self.out).with_suffix(""))
        return {"model": Path(self.out), "checkpoint": Path(stem + "_checkpoint.pt"),
                "manifest": Path(stem + "_manifest.json")}

    def summary(self) -> str:
        """'best validation IoU 0.712 at epoch 4 of 5 (precision 0.81, recall 0.84)' from the run's manifest."""
        try:
            manifest = json.loads(self.outputs()["manifest"].read_text())
        except (OSError, ValueError):
            return "no manifest"
        best, epoch = manifest.get("val_iou"), manifest.get("best_epoch")
        history = {h.get("epoch"): h for h in manifest.get("history") or [] if isinstance(h, dict)}
        text = f"best validation IoU {best:.3f}" if isinstance(best, (int, float)) else "no validation IoU"
        if epoch is not None:
            text += f" at epoch {epoch} of {manifest.get('epochs_done', '?')}"
            rec = history.get(epoch) or {}
            if isinstance(rec.get("val_precision"), (int, float)) and isinstance(rec.get("val_recall"), (int, float)):
                text += f" (precision {rec['val_precision']:.2f}, recall {rec['val_recall']:.2f})"
        return text

    def progress(self):
        """``event -> percent or None``: epochs done of the epochs asked, or the time spent of the budget."""
        import time

        start: list[float] = []

        def percent(event: dict) -> float | None:
            stage = event.get("stage")
            if stage == "open":
                return 1.0
            if stage == "write":
                return 98.0 + 2.0 * stage_share(event)
            if stage != "train":
                return None
            if event.get("total"):
                return 3.0 + 95.0 * stage_share(event)
            start[:] = start or [time.monotonic()]          # --minutes: the engine gives no total
            return 3.0 + 95.0 * min(1.0, (time.monotonic() - start[0]) / (60.0 * float(self.minutes or 1)))

        return percent


@dataclass
class SegmentRequest:
    """``python -m engine segment``: every building of ``raster`` mapped by a model from train-seg.

    Writes OUT.gpkg (layer ``buildings``: area, orien), OUT_mask.tif (1 building, 0 not, 255 nodata), with
    ``probability`` OUT_prob.tif (0..1, nodata -1), and OUT_manifest.json.
    """

    raster: str
    model: str
    out: str
    overlap: int | None = None                # px; None: the engine's choice (a quarter of the chip)
    threshold: float = 0.5
    probability: bool = False
    min_area: float = 4.0
    simplify: float = 0.5
    regularize: bool = False
    resample: bool = False
    device: str = "auto"
    overwrite: bool = False
    extra: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return Path(self.out).stem

    def problems(self) -> list[Problem]:
        out = model_file_problems(self.model)
        out += raster_problems(self.raster)
        if self.overlap is not None and int(self.overlap) < 0:
            out.append(Problem("overlap", OUT_OF_RANGE, "The overlap must be 0 or more pixels (or automatic)."))
        if not 0 < float(self.threshold) < 1:
            out.append(Problem("threshold", OUT_OF_RANGE, "The threshold must be between 0 and 1 (e.g. 0.5)."))
        if float(self.min_area) < 0 or float(self.simplify) < 0:
            out.append(Problem("min_area" if float(self.min_area) < 0 else "simplify", OUT_OF_RANGE,
                               "The minimum area and the simplification tolerance must be 0 or more."))
        out.extend(device_problems(self.device))
        out += output_problems(self.out, self.overwrite)
        return out + unique_output_problem(self.outputs, self.overwrite, out)

    def argv(self) -> list[str]:
        args = ["segment", self.raster, "--model", self.model, "--out", self.out,
                "--threshold", repr(float(self.threshold)), "--min-area", repr(float(self.min_area)),
                "--simplify", repr(float(self.simplify)), "--device", self.device, "--progress", "json"]
        if self.overlap is not None:
            args += ["--overlap", str(int(self.overlap))]
        for flag, on in (("--probability", self.probability), ("--regularize", self.regularize),
                         ("--resample", self.resample), ("--overwrite", self.overwrite)):
            if on:
                args.append(flag)
        return args + list(self.extra)

    def outputs(self) -> dict[str, Path]:
        stem = str(Path(self.out).with_suffix(""))
        files = {"gpkg": Path(self.out), "mask": Path(stem + "_mask.tif"), "manifest": Path(stem + "_manifest.json")}
        if self.probability:
            files["prob"] = Path(stem + "_prob.tif")
        return files

    def progress(self):
        """``event -> percent or None``: the row blocks segmented, then writing."""
        def percent(event: dict) -> float | None:
            stage = event.get("stage")
            if stage == "segment":
                return 2.0 + 90.0 * stage_share(event)
            if stage == "write":
                return 92.0 + 8.0 * stage_share(event)
            return 1.0 if stage == "open" else None

        return percent


@dataclass
class EvaluateSegRequest:
    """``python -m engine evaluate-seg``: pixel and object scores of predicted buildings against footprints.

    The engine prints one JSON object on stdout (iou, accuracy, precision, recall, f1, obj_precision,
    obj_recall, obj_f1, ...); the runner hands it over as the run's last event.
    """

    pred: str                                  # OUT_mask.tif or OUT.gpkg of a segment run
    truth: str | None
    area: str | None = None
    extra: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return Path(self.pred).stem

    def problems(self) -> list[Problem]:
        out = []
        if not self.pred:
            out.append(Problem("pred", REQUIRED,
                               "Choose the predicted buildings (OUT_mask.tif or OUT.gpkg of a segment run)."))
        elif not Path(self.pred).is_file():
            out.append(Problem("pred", NOT_FOUND, f"The predicted buildings {self.pred} do not exist."))
        if not self.truth:
            out.append(Problem("truth", REQUIRED,
                               "Choose the true building footprints (polygons) to evaluate against."))
        elif not Path(self.truth).is_file():
            out.append(Problem("truth", NOT_LOCAL, f"The footprint layer {self.truth} is not a local file."))
        if self.area and not Path(self.area).is_file():
            out.append(Problem("area", NOT_LOCAL, f"The area layer {self.area} is not a local file."))
        return out

    def argv(self) -> list[str]:
        args = ["evaluate-seg", "--pred", self.pred, "--truth", self.truth or ""]
        if self.area:
            args += ["--area", self.area]
        return args + list(self.extra)

    def outputs(self) -> dict[str, Path]:
        return {}                              # it writes nothing


def seg_scores_text(scores: dict) -> str:
    """'IoU 0.812 · precision 0.9 · recall 0.88 · F1 0.89 · object F1 0.7' from evaluate-seg's answer."""
    parts = []
    for key in SEG_METRICS:
        value = scores.get(key)
        parts.append(f"{SEG_METRIC_LABELS[key]} {value:.3f}" if isinstance(value, (int, float)) else
                     f"{SEG_METRIC_LABELS[key]} –")
    counts = ""
    if "n_pred" in scores and "n_truth" in scores:
        counts = f" ({scores['n_pred']} predicted, {scores['n_truth']} true buildings, {scores.get('n_matched', 0)} " \
                 "matched)"
    return " · ".join(parts) + counts


def stage_share(event: dict) -> float:
    total = event.get("total") or 0
    return min(1.0, float(event.get("done", 0)) / total) if total else 0.0


def model_file_problems(model: str) -> list[Problem]:
    if not model:
        return [Problem("model", REQUIRED, "Choose a model file (.pt, written by train-seg or the Buildings training).")]
    if not Path(model).is_file():
        return [Problem("model", NOT_FOUND, f"The model file {model} does not exist.")]
    if Path(model).suffix.lower() != ".pt":
        return [Problem("model", BAD_FORMAT, f"The model file {model} is not a .pt file written by train-seg.")]
    return []


def model_output_problems(out: str, overwrite: bool) -> list[Problem]:
    """The model file to write: a .pt in a writable folder, not replacing a file unless allowed."""
    if not out:
        return [Problem("out", REQUIRED, "Choose the model file to write (.pt).")]
    path = Path(out)
    if path.suffix.lower() != ".pt":
        return [Problem("out", BAD_FORMAT, "The model file must end in .pt.")]
    if not path.parent.is_dir():
        return [Problem("out", NOT_FOUND, f"The output folder {path.parent} does not exist.")]
    if not os.access(path.parent, os.W_OK):
        return [Problem("out", NOT_WRITABLE, f"The output folder {path.parent} is not writable; choose another.")]
    if path.exists() and not overwrite:
        return [Problem("out", EXISTS, f"{path.name} already exists.")]
    return []


def default_model_output(raster: str) -> str:
    """A free model file name next to the raster (or in the home folder if that is not writable)."""
    base = Path(raster).with_suffix("") if raster else Path.home() / "urbanform"
    folder = base.parent if os.access(base.parent, os.W_OK) else Path.home()
    for i in range(1, 1000):
        candidate = folder / f"{base.name}_buildings{'' if i == 1 else i}.pt"
        if not candidate.exists():
            return str(candidate)
    return str(folder / f"{base.name}_buildings.pt")
