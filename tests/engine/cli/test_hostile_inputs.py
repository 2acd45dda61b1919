"""Hostile input for every tool and every parameter, generated from the declarations (engine.contract.tools).

For each tool of ``TOOLS`` a valid command line is built from small fixtures (a 256 x 256 crop of the Kampala
sample, its footprints, a few roads, a population grid, a building mask, a U-Net file and one real quick
``cluster`` run for the run GeoPackage and its model file). Each case then mutates one parameter in a way
that fits its declared type - a wrong type, a value out of range or on an open bound, a bad choice, a file
that is missing, of the wrong kind or damaged, an output folder that does not exist, an output with the wrong
suffix or that is one of the inputs, a 300-byte file name, a cache folder that is a file, a seed beyond the
generator's range, a batch size of 0 or below - and runs ``engine.cli.main`` in-process. Every case must

- exit 2 (bad input), before any work;
- print exactly one ``error:`` line on stderr that names the mutated parameter (its flag, or the positional
  name: ``RASTER``, ``raster '...'``), with no traceback, no Python warning and no library's words (OGR's
  driver advice, torch's, exception class names); an existing output suggests another name before
  ``--overwrite``;
- leave the file tree (the case's folder, its feature cache and the shared fixtures: names, sizes, mtimes)
  as it was.

A few cases also run as ``python -m engine`` to prove the real exit code. Property
tests (hypothesis) feed random text to the value parsers, the CLI's parser and ``check``: a list of problems
or a clean value, never another exception.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import rasterio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rasterio.windows import Window

from engine.cli import main
from engine.cli.parser import build_parser
from engine.contract import params as C
from engine.contract.tools import TOOLS
from tests.engine.helpers import REPO, SAMPLE

LONG = 300                      # bytes in a file name: more than any file system's 255
SEED_LIMIT = 2 ** 32            # numpy's seed must be below it


# ------------------------------------------------------------------------------------------ fixtures


def _crop(dst: Path, size: int = 256) -> Path:
    src_path = SAMPLE / "kampala_ug_oam_rgb_z19_epsg3857.tif"
    with rasterio.open(src_path) as src:
        win = Window(0, 0, size, size)
        data = src.read(window=win)
        profile = {**src.profile, "width": size, "height": size, "transform": src.window_transform(win)}
    profile.update(tiled=True, blockxsize=64, blockysize=64, compress="deflate")
    with rasterio.open(dst, "w", **profile) as out:
        out.write(data)
    return dst


def _fixtures(d: Path) -> dict[str, Path]:
    """Every input file a case needs, in ``d`` (built once per module)."""
    import geopandas as gpd
    import torch
    from rasterio.features import rasterize
    from shapely.geometry import LineString, box

    from engine.features.backbones import build_backbone
    from engine.segmentation.modelfile import save_seg_model
    from engine.segmentation.unet import UNet
    from engine.tools.cluster import ClusterParams, run_cluster

    # matplotlib here (a system copy and a pip copy) warns once, at its first import, that it cannot import
    # Axes3D: the environment's noise, not the engine's; imported once here so no case sees it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import matplotlib.projections  # noqa: F401

    fx: dict[str, Path] = {}
    fx["raster"] = _crop(d / "image.tif")
    with rasterio.open(fx["raster"]) as src:
        bounds, crs, transform, shape = src.bounds, src.crs, src.transform, (src.height, src.width)
        res = src.res[0]
    frame = box(*bounds)
    b = gpd.read_file(SAMPLE / "kampala_ug_osm_buildings.geojson").to_crs(crs)
    b = b[b.intersects(frame)].reset_index(drop=True)
    assert len(b) >= 3, "the crop must hold some footprints"
    fx["footprints"] = d / "footprints.gpkg"
    b[["geometry"]].to_file(fx["footprints"])
    x0, y0, x1, y1 = bounds
    roads = gpd.GeoDataFrame({"highway": ["primary", "residential"]},
                             geometry=[LineString([(x0, (y0 + y1) / 2), (x1, (y0 + y1) / 2)]),
                                       LineString([((x0 + x1) / 2, y0), ((x0 + x1) / 2, y1)])], crs=crs)
    fx["roads"] = d / "roads.gpkg"
    roads.to_file(fx["roads"])
    fx["area"] = d / "area.gpkg"
    gpd.GeoDataFrame(geometry=[frame.buffer(-10)], crs=crs).to_file(fx["area"])
    fx["population"] = d / "population.tif"
    with rasterio.open(fx["population"], "w", driver="GTiff", width=8, height=8, count=1, dtype="float32",
                       crs=crs, transform=rasterio.transform.from_bounds(*bounds, 8, 8)) as dst:
        dst.write(np.full((1, 8, 8), 3.0, np.float32))
    fx["mask"] = d / "mask.tif"
    mask = rasterize(((g, 1) for g in b.geometry), out_shape=shape, transform=transform, dtype="uint8")
    with rasterio.open(fx["mask"], "w", driver="GTiff", width=shape[1], height=shape[0], count=1, dtype="uint8",
                       crs=crs, transform=transform, nodata=None) as dst:
        dst.write(mask[None])
    # files of the wrong kind, or damaged
    fx["csv"] = d / "table.csv"
    fx["csv"].write_text("id,x,y,height\n1,3628400,39000,12.5\n2,3628450,39050,8.0\n")
    fx["text"] = d / "notes.txt"
    fx["text"].write_text("these are not the files you are looking for\n")
    rng = np.random.default_rng(0)
    for suffix in (".tif", ".gpkg", ".pt", ".geojson"):
        fx["random" + suffix] = d / f"random{suffix}"
        fx["random" + suffix].write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    for suffix in (".tif", ".gpkg", ".pt"):        # text with the suffix of the kind wanted
        fx["text" + suffix] = d / f"notes{suffix}"
        fx["text" + suffix].write_text("not a real file\n")
    whole = fx["raster"].read_bytes()
    fx["cut.tif"] = d / "cut.tif"
    fx["cut.tif"].write_bytes(whole[: len(whole) * 2 // 3])
    whole = fx["footprints"].read_bytes()
    fx["cut.gpkg"] = d / "cut.gpkg"
    fx["cut.gpkg"].write_bytes(whole[: len(whole) // 2])
    fx["empty.tif"] = d / "empty.tif"
    fx["empty.tif"].write_bytes(b"")
    fx["far_area"] = d / "far_area.gpkg"           # polygons 10 km away from the raster
    gpd.GeoDataFrame(geometry=[box(x0 + 1e4, y0 + 1e4, x1 + 1e4, y1 + 1e4)], crs=crs).to_file(fx["far_area"])
    fx["labels"] = d / "labels.gpkg"               # six labelled points, two classes, on the crop (classify)
    from shapely.geometry import Point

    xs = np.linspace(x0 + 20, x1 - 20, 6)
    gpd.GeoDataFrame({"kind": ["a", "a", "a", "b", "b", "b"]}, geometry=[Point(x, (y0 + y1) / 2) for x in xs],
                     crs=crs).to_file(fx["labels"])
    fx["grey"] = d / "grey.tif"                    # one band: not what a 3-band model was made for
    with rasterio.open(fx["raster"]) as src:
        with rasterio.open(fx["grey"], "w", **{**src.profile, "count": 1}) as dst:
            dst.write(src.read(1)[None])
    # models: a U-Net file, a state dict (for --weights), and one real quick cluster run (run.gpkg, its model)
    torch.manual_seed(0)
    fx["seg"] = d / "seg.pt"
    save_seg_model(fx["seg"], UNet("efficientnet_lite0", weights="none"),
                   {"bands": [1, 2, 3], "n_bands": 3, "stretch": None, "chip": 64, "pixel_size_m": res})
    net, _, _ = build_backbone("efficientnet_lite0", "none", seed=0)
    fx["weights"] = d / "weights.pt"
    torch.save(net.state_dict(), fx["weights"])
    fx["run"] = d / "run.gpkg"
    run_cluster(ClusterParams(raster=str(fx["raster"]), out=str(fx["run"]), k=2, tile_size="64px",
                              weights="none", device="cpu", quicklook=False, cache_dir=str(d / "cache")))
    shutil.rmtree(d / "cache")
    fx["run_manifest"] = d / "run_manifest.json"
    fx["model"] = d / "run_model.pt"
    for key in ("model", "seg", "weights"):          # cut in half: a copy that was interrupted
        fx[f"cut_{key}"] = d / f"cut_{fx[key].name}"
        whole = fx[key].read_bytes()
        fx[f"cut_{key}"].write_bytes(whole[: len(whole) // 2])
    return fx


@pytest.fixture(scope="module")
def fx(tmp_path_factory) -> dict[str, Path]:
    return _fixtures(tmp_path_factory.mktemp("hostile_fixtures"))


def base_values(tool: str, fx: dict, d: Path) -> dict:
    """A valid set of values for ``tool`` (quick to run, should a bad value ever get through)."""
    r = str(fx["raster"])
    if tool == "cluster":
        return {"raster": r, "out": str(d / "out.gpkg"), "k": "2", "weights": "none", "device": "cpu",
                "no_quicklook": True}
    if tool == "predict":
        return {"model": str(fx["model"]), "raster": r, "out": str(d / "out.gpkg"), "device": "cpu"}
    if tool == "sweep":
        return {"raster": r, "out": str(d / "out.gpkg"), "k": "2", "tile_size": "64px", "weights": "none",
                "device": "cpu"}
    if tool == "stats":        # stats adds to RUN.gpkg: a copy of its own
        for key in ("run", "run_manifest"):
            shutil.copy2(fx[key], d / fx[key].name)
        return {"run": str(d / "run.gpkg"), "buildings": str(fx["footprints"])}
    if tool == "export":
        return {"run": str(fx["run"]), "out": str(d / "export")}
    if tool == "train-seg":
        return {"raster": r, "buildings": str(fx["footprints"]), "out": str(d / "model.pt"), "weights": "none",
                "chip": "64", "epochs": "1", "chips_per_epoch": "2", "batch_size": "2", "device": "cpu"}
    if tool == "segment":
        return {"raster": r, "model": str(fx["seg"]), "out": str(d / "out.gpkg"), "device": "cpu"}
    if tool == "evaluate-seg":
        return {"pred": str(fx["mask"]), "truth": str(fx["footprints"])}
    if tool == "probe":
        return {"raster": r}
    if tool == "check":
        return {}
    if tool == "report":
        return {"run": str(fx["run"]), "out": str(d / "out.html")}
    if tool == "change":
        return {"model": str(fx["model"]), "raster_before": r, "raster_after": r, "out": str(d / "out.gpkg"),
                "device": "cpu"}
    if tool == "similar":
        return {"raster": r, "out": str(d / "out.gpkg"), "query": str(fx["labels"]), "weights": "none",
                "device": "cpu"}
    if tool == "classify":
        return {"raster": r, "out": str(d / "out.gpkg"), "labels": str(fx["labels"]), "field": "kind",
                "weights": "none", "device": "cpu"}
    raise KeyError(tool)


def argv_of(tool: str, values: dict) -> list[str]:
    """The command line for ``values``: positionals in declared order, then every other value as its flag.

    A flag that defaults to on (``--no-quicklook``) is given as ``no_<name>: True``.
    """
    t = TOOLS[tool]
    argv = [tool] + [str(values[p.name]) for p in t.params if p.positional]
    for p in t.params:
        if p.positional or not p.cli:
            continue
        if p.type == C.BOOL:
            on = values.get("no_" + p.name) if p.default else values.get(p.name)
            if on:
                argv.append(p.flag)
        elif p.name in values and values[p.name] is not None:
            argv += [p.flag, str(values[p.name])]
    return argv


# ------------------------------------------------------------------------------------------ cases


def _long(d: Path, suffix: str) -> str:
    return str(d / ("a" * (LONG - len(suffix)) + suffix))


def _folder(d: Path, name: str) -> str:
    (d / name).mkdir()
    return str(d / name)


def _file(d: Path, name: str, text: str = "in the way\n") -> str:
    (d / name).write_text(text)
    return str(d / name)


def _fx(key: str):
    return lambda fx, d: str(fx[key])


@dataclass(frozen=True)
class Case:
    """One parameter of one tool, given one bad value. ``value`` is text or ``make(fx, d) -> text`` (making
    the file it names); ``extra`` are other values the case needs (``method=deepcluster`` for a DeepCluster
    option, ``overwrite`` for a clash)."""

    tool: str
    param: str
    kind: str
    value: object
    extra: tuple = ()

    @property
    def id(self) -> str:
        return f"{self.tool}:{self.param}:{self.kind}"


# companions: what a parameter needs to be looked at at all
COMPANIONS = {"red_band": {"nir_band": "1"}, "ndvi_raster": {"nir_band": "1"},
              "road_field": {"roads": "@roads"}, "major_values": {"roads": "@roads"}}
PROBE_SPEED = ("backbone", "weights", "device", "precision", "batch_size")
DEEP_EXTRA = {"method": "deepcluster", "epochs": "1", "crops_per_tile": "1"}


def _extra(tool: str, p: C.Param) -> dict:
    extra = dict(COMPANIONS.get(p.name, {}))
    if tool == "probe" and p.name in PROBE_SPEED:      # probe looks at the model only to time it
        extra["speed"] = True
    if p.applies_when:
        other, wanted = p.applies_when
        extra.update(DEEP_EXTRA if (other, wanted) == ("method", "deepcluster") else {other: wanted})
        extra.pop(p.name, None)
    return extra


def number_cases(tool: str, p: C.Param) -> list[tuple[str, str]]:
    fmt = (lambda v: str(int(v))) if p.type == C.INT else (lambda v: repr(float(v)))
    out = [("not a number", "abc")]
    if p.type == C.INT:
        out += [("not whole", "1.5")]
    else:
        out += [("nan", "nan")]
    if p.minimum is not None:
        out.append(("on the open minimum" if p.open_min else "below the minimum",
                    fmt(p.minimum) if p.open_min else fmt(p.minimum - 1)))
    if p.maximum is not None:
        out.append(("on the open maximum" if p.open_max else "above the maximum",
                    fmt(p.maximum) if p.open_max else fmt(p.maximum + 1)))
    elif p.type == C.FLOAT:
        out.append(("infinite", "inf"))
    if p.name in ("nir_band", "red_band"):
        out.append(("band beyond the raster", "9"))
    if p.name.endswith("batch_size") or p.name in ("chips_per_epoch",):
        out.append(("negative", "-5"))
    if p.name == "seed":
        out += [("beyond the generator", str(SEED_LIMIT)), ("far beyond the generator", str(10 ** 30))]
    if p.multiple_of:
        out.append(("not a multiple", str(p.multiple_of * 2 + 1)))
    return out


VALUE_CASES = {
    C.K_LIST: [("not a K list", "abc"), ("K below 2", "1"), ("K above the limit", "255"), ("backwards", "5..3"),
               ("empty", "")],
    C.SIZES: [("not a size", "abc"), ("empty item", "32px,,64px"), ("below the minimum", "8px"), ("empty", ""),
              ("negative", "-64px")],
    C.EXTENT: [("not numbers", "abc"), ("three numbers", "1,2,3"), ("backwards", "3628542,39135,3628312,38982"),
               ("outside the raster", "0,0,10,10"), ("nan", "nan,nan,nan,nan")],
    C.BANDS: [("not numbers", "abc"), ("band 0", "0"), ("band beyond the raster", "9"), ("two bands", "1,2")],
}


def size_cases(tool: str, p: C.Param) -> list[tuple[str, str]]:
    out = [("not a size", "abc"), ("negative", "-5px"), ("fractional pixels", "1.5px"), ("unknown unit", "5km")]
    if p.minimum:
        out += [("below the minimum", f"{int(p.minimum) - 1}px"), ("zero metres", "0m")]
    if p.name == "overlap":
        out.append(("not smaller than the tile", "64px"))
    return out


# statistics inputs that cluster and sweep pass on to the statistics step (checked before any work there too;
# the stats tool tries every kind of file, these a few)
STATS_ONLY = ("roads", "population", "ndvi_raster")
SHORT_SET = ("missing", "300-byte name", "a CSV", "a raster", "a vector", "truncated GeoTIFF", "truncated GeoPackage")


def input_cases(tool: str, p: C.Param) -> list[tuple[str, object]]:
    """A missing, wrong-kind or damaged file for an input parameter (its role picks the wrong kinds)."""
    suffix = p.suffixes[0] if p.suffixes else {C.RASTER: ".tif", C.VECTOR: ".gpkg"}.get(p.type, ".pt")
    out: list[tuple[str, object]] = [
        ("missing", lambda fx, d: str(d / f"missing{suffix}")),
        ("a folder", lambda fx, d: _folder(d, f"folder{suffix}")),
        ("300-byte name", lambda fx, d: _long(d, suffix)),
    ]
    if p.type == C.RASTER and p.name in ("raster", "raster_before", "raster_after") and \
            tool in ("predict", "segment", "change"):
        out.append(("one band for a 3-band model", _fx("grey")))
    if p.type == C.VECTOR and p.name in ("area", "label_area"):
        out.append(("off the raster", _fx("far_area")))
    if p.type == C.RASTER:
        out += [("a CSV", _fx("csv")), ("a text file", _fx("text")), ("a vector", _fx("footprints")),
                ("truncated GeoTIFF", _fx("cut.tif")), ("random bytes", _fx("random.tif")),
                ("text as .tif", _fx("text.tif")), ("empty file", _fx("empty.tif"))]
    elif p.type == C.VECTOR:
        out += [("a CSV", _fx("csv")), ("a raster", _fx("raster")), ("random bytes .gpkg", _fx("random.gpkg")),
                ("random bytes .geojson", _fx("random.geojson")), ("truncated GeoPackage", _fx("cut.gpkg")),
                ("text as .gpkg", _fx("text.gpkg"))]
    elif p.name == "weights":
        out += [("a CSV", _fx("csv")), ("random bytes .pt", _fx("random.pt")), ("text as .pt", _fx("text.pt")),
                ("truncated .pt", _fx("cut_weights")),
                ("a cluster model", _fx("model")), ("a segmentation model", _fx("seg")), ("a raster", _fx("raster"))]
    elif p.name == "model" and tool in ("predict", "change"):
        out += [("a CSV", _fx("csv")), ("random bytes .pt", _fx("random.pt")), ("text as .pt", _fx("text.pt")),
                ("truncated .pt", _fx("cut_model")),
                ("a segmentation model", _fx("seg")), ("a state dict", _fx("weights")), ("a raster", _fx("raster"))]
    elif p.name == "model":
        out += [("a CSV", _fx("csv")), ("random bytes .pt", _fx("random.pt")), ("text as .pt", _fx("text.pt")),
                ("truncated .pt", _fx("cut_seg")),
                ("a cluster model", _fx("model")), ("a state dict", _fx("weights")), ("a raster", _fx("raster"))]
    elif p.name == "form":              # footprints, or a building model (train-seg's MODEL.pt) that maps them
        out += [("a CSV", _fx("csv")), ("a raster", _fx("raster")), ("random bytes .gpkg", _fx("random.gpkg")),
                ("truncated GeoPackage", _fx("cut.gpkg")), ("text as .gpkg", _fx("text.gpkg")),
                ("random bytes .pt", _fx("random.pt")), ("text as .pt", _fx("text.pt")),
                ("truncated .pt", _fx("cut_seg")), ("a cluster model", _fx("model")), ("a state dict", _fx("weights"))]
    elif p.name == "run":
        out += [("a CSV", _fx("csv")), ("random bytes .gpkg", _fx("random.gpkg")), ("text as .gpkg", _fx("text.gpkg")),
                ("a raster", _fx("raster")),
                ("truncated GeoPackage", _fx("cut.gpkg"))]
    elif p.name == "pred":
        out += [("a CSV", _fx("csv")), ("random bytes .gpkg", _fx("random.gpkg")), ("random bytes .tif",
                                                                                    _fx("random.tif")),
                ("text as .tif", _fx("text.tif")), ("truncated GeoTIFF", _fx("cut.tif")),
                ("a model", _fx("seg"))]
    else:
        raise AssertionError(f"{tool} {p.name}: a file input without hostile cases")
    return out


def _case_suffix_of(p: C.Param) -> str:
    return p.suffixes[0] if p.suffixes else ""


def output_cases(tool: str, p: C.Param) -> list[tuple[str, object, dict]]:
    t = TOOLS[tool]
    sfx = _case_suffix_of(p)
    if p.type == C.OUT_FOLDER:
        def taken(fx, d):                     # a file the export would write is there already
            _folder(d, "taken")
            _file(d, "taken/run_tiles.shp")
            return str(d / "taken")
        return [("a file", lambda fx, d: _file(d, "file.txt"), {}),
                ("parent missing", lambda fx, d: str(d / "nope" / "sub"), {}),
                ("300-byte name", lambda fx, d: _long(d, ""), {}),
                ("exists", taken, {})]
    out = [("folder missing", lambda fx, d: str(d / "nope" / f"out{sfx}"), {}),
           ("wrong suffix", lambda fx, d: str(d / "out.txt"), {}),
           ("300-byte name", lambda fx, d: _long(d, sfx), {}),
           ("300-byte name, overwrite", lambda fx, d: _long(d, sfx), {"overwrite": True}),
           ("an existing folder, overwrite", lambda fx, d: _folder(d, f"dir{sfx}"), {"overwrite": True})]
    if p.name == t.output_param:
        out.append(("exists", lambda fx, d: _file(d, f"taken{sfx}"), {}))
        out += clash_cases(tool, p)
    elif p.name == "save_model":               # --save-model over the state dict given as --weights
        def clash(fx, d):
            shutil.copy2(fx["weights"], d / "w.pt")
            return str(d / "w.pt")
        out.append(("the --weights file, overwrite", clash, {"weights": "@d/w.pt", "overwrite": True}))
    return out


# what a clashing input is made of (a copy of this fixture), by the input's declared type or name
CLASH_SOURCES = {C.RASTER: ("raster", ".tif"), C.VECTOR: ("footprints", ".gpkg"), "form": ("footprints", ".gpkg"),
                 "model": ("model", ".pt"),
                 "weights": ("weights", ".pt"), "pred": ("mask", ".tif")}


def clash_cases(tool: str, out: C.Param) -> list[tuple[str, object, dict]]:
    """The output (or one of the files named after it) is one of the run's inputs: with and without
    --overwrite, for every input parameter whose kind of file an output of the tool can be."""
    t = TOOLS[tool]
    cases = []
    for q in t.params:
        if q.type not in C.INPUT_FILES or q.name == t.output_param:
            continue
        source, ext = CLASH_SOURCES.get(q.name) or CLASH_SOURCES.get(q.type) or (None, None)
        if source is None:
            continue
        for o in t.outputs:
            out_name = "x" + (_case_suffix_of(out) or ext)
            target = o.pattern.format(out=out_name, stem="x", tag="64px")
            if o.per_size or not target.endswith(ext) or (q.suffixes and not target.endswith(q.suffixes)):
                continue
            when = {o.when: True} if o.when and o.when in t.names() and t.param(o.when).type == C.BOOL \
                else {}                                                        # --probability
            for overwrite in (True, False):
                cases.append((f"{o.key} is {q.flag}" + (", overwrite" if overwrite else ""),
                              _clash_maker(source, target, out_name),
                              {q.name: f"@d/{target}", **when, **({"overwrite": True} if overwrite else {})}))
    return cases


def _clash_maker(source: str, target: str, out_name: str):
    def make(fx, d):
        shutil.copy2(fx[source], d / target)
        return str(d / out_name)
    return make


def text_cases(tool: str, p: C.Param) -> list[tuple[str, object, dict]]:
    if p.name == "cache_dir":
        return [("a file", lambda fx, d: _file(d, "cachefile"), {}),
                ("under a file", lambda fx, d: str(Path(_file(d, "cachefile")) / "sub"), {}),
                ("300-byte name", lambda fx, d: _long(d, ""), {})]
    if p.name == "road_field":
        return [("empty", "", {}), ("blank", "   ", {})]
    if p.name == "major_values":
        return [("only commas", ",,", {})]
    if p.name == "query_tiles":              # instead of the query places of the base values
        return [("not ids", "the market", {"query": None}), ("off the grid", "5,99999", {"query": None})]
    if p.name == "field":
        return [("not a field", "klass", {}), ("empty", "", {})]
    return []


def bool_cases(tool: str, p: C.Param) -> list[tuple[str, object, dict]]:
    if p.name != "resume":
        return []
    if tool == "sweep":          # a sweep with nothing to resume starts afresh (by design)
        return []
    out = [("nothing to resume", True, {})]
    if tool == "cluster":
        out.append(("nothing to resume, deepcluster", True, dict(DEEP_EXTRA)))
    return out


def cases_for(tool: str) -> list[Case]:
    t = TOOLS[tool]
    found: list[Case] = []
    for p in t.params:
        if not p.cli or p.name == "progress" and tool != "cluster":
            continue
        extra = _extra(tool, p)
        kinds: list[tuple] = []
        if p.type in (C.INT, C.FLOAT):
            kinds = [(k, v, {}) for k, v in number_cases(tool, p)]
        elif p.type == C.CHOICE:
            kinds = [("bad choice", "bogus", {}), ("upper case", str(p.choices[-1]).upper(), {})]
        elif p.type in VALUE_CASES:
            kinds = [(k, v, {}) for k, v in VALUE_CASES[p.type]]
        elif p.type == C.SIZE:
            kinds = [(k, v, {}) for k, v in size_cases(tool, p)]
        elif p.type in C.INPUT_FILES:
            kinds = [(k, v, {}) for k, v in input_cases(tool, p)]
            if tool in ("cluster", "sweep") and p.name in STATS_ONLY:    # the stats tool has the full set: quick
                kinds = [k for k in kinds if k[0] in SHORT_SET]
        elif p.type in (C.OUT_FILE, C.OUT_FOLDER):
            kinds = output_cases(tool, p)
        elif p.type in (C.TEXT, C.FOLDER):
            kinds = text_cases(tool, p)
        elif p.type == C.BOOL:
            kinds = bool_cases(tool, p)
        for kind, value, more in kinds:
            found.append(Case(tool, p.name, kind, value, tuple({**extra, **more}.items())))
    return found


ALL_CASES = [c for tool in TOOLS for c in cases_for(tool)]

def _param_case(c: Case):
    return pytest.param(c, id=c.id)


# ------------------------------------------------------------------------------------------ the checks


def tree(*roots: Path) -> dict:
    """Every file and folder under ``roots``: path -> (size, mtime) (folders: None)."""
    seen = {}
    for root in roots:
        for folder, dirs, files in os.walk(root):
            for name in dirs:
                seen[os.path.join(folder, name)] = None
            for name in files:
                st_ = os.lstat(os.path.join(folder, name))
                seen[os.path.join(folder, name)] = (st_.st_size, st_.st_mtime_ns)
    return seen


def names_param(line: str, tool: str, name: str) -> bool:
    """Whether an error line names the parameter: its flag (``--k``, ``RASTER``) or, for a positional one,
    its name before the path (``raster 'x.tif' ...``)."""
    p = TOOLS[tool].param(name)
    if re.search(rf"(?<![\w-]){re.escape(p.flag)}(?![\w-])", line):
        return True
    return p.positional and re.search(rf"(?<![\w-]){p.name} ['\"]", line, re.IGNORECASE) is not None


def resolve(values: dict, fx: dict, d: Path) -> dict:
    """``@name`` -> the fixture's path, ``@d/name`` -> a path in the case folder."""
    out = {}
    for k, v in values.items():
        if isinstance(v, str) and v.startswith("@d/"):
            v = str(d / v[3:])
        elif isinstance(v, str) and v.startswith("@"):
            v = str(fx[v[1:]])
        out[k] = v
    return out


def case_argv(c: Case, fx: dict, d: Path) -> list[str]:
    values = base_values(c.tool, fx, d)
    values.update(resolve(dict(c.extra), fx, d))
    value = c.value(fx, d) if callable(c.value) else c.value
    p = TOOLS[c.tool].param(c.param)
    if p.type == C.BOOL:
        values["no_" + p.name if p.default else p.name] = bool(value)
    else:
        values[c.param] = value
    return argv_of(c.tool, values)


# words that are not for the user: OGR's SQL and driver advice, torch's, Python's exception class names
NOISE = ("It might help", "sqlite3_prepare", "weights_only", "BadInput", "Error:", "Exception")


def assert_refused(c: Case, code: int, err: str, out: str, before: dict, after: dict) -> None:
    lines = err.strip().splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert code == 2, f"exit {code}, not 2; stderr:\n{err}"
    assert "Traceback" not in err, err
    assert not re.search(r"\w+Warning: ", err), f"a Python warning reached the user:\n{err}"
    assert len(errors) == 1, f"not one error line:\n{err}"
    assert names_param(errors[0], c.tool, c.param), f"{TOOLS[c.tool].flag(c.param)} not named: {errors[0]}"
    noise = [n for n in NOISE if n in err]
    assert not noise, f"a library's or Python's words reached the user ({noise}): {errors[0]}"
    if c.kind == "a CSV":
        assert "damaged" not in errors[0], f"a CSV is no damaged file: {errors[0]}"
    if c.kind == "exists":                    # another name first, --overwrite second
        line = errors[0].lower()
        assert "another" in line and "overwrite" in line and line.index("another") < line.index("overwrite"), \
            f"an existing output: suggest another name, then --overwrite: {errors[0]}"
    assert out == "", f"stdout on bad input: {out}"
    changed = {k for k in before.keys() | after.keys() if before.get(k, 0) != after.get(k, 0)}
    assert not changed, f"the file tree changed: {sorted(changed)}"


@pytest.mark.parametrize("case", [_param_case(c) for c in ALL_CASES])
def test_bad_value_is_refused_before_work(case: Case, fx, tmp_path, capsys):
    d = tmp_path / "case"
    d.mkdir()
    argv = case_argv(case, fx, d)
    capsys.readouterr()
    before = tree(tmp_path, fx["raster"].parent)
    code = main(argv)
    out, err = capsys.readouterr()
    assert_refused(case, code, err, out, before, tree(tmp_path, fx["raster"].parent))


def test_every_tool_and_parameter_has_cases():
    """Every tool, and every CLI parameter whose type can be given a bad value, has cases (--progress, declared
    once for all, is tried on cluster; on/off flags and free text have none, but --resume and the road
    attributes)."""
    covered = {(c.tool, c.param) for c in ALL_CASES}
    for tool in TOOLS.values():
        for p in tool.params:
            if p.cli and p.type not in (C.BOOL, C.TEXT) and (p.name != "progress" or tool.name == "cluster"):
                assert (tool.name, p.name) in covered, (tool.name, p.name)
    assert {("cluster", "resume"), ("train-seg", "resume"), ("stats", "road_field")} <= covered
    assert len(ALL_CASES) > 600


@pytest.mark.parametrize("tool", list(TOOLS))
def test_base_values_pass_the_checks(tool, fx, tmp_path):
    """The cases mutate one parameter of a command line the checks accept: the error is the mutation's."""
    d = tmp_path / "case"
    d.mkdir()
    args = build_parser().parse_args(argv_of(tool, base_values(tool, fx, d)))
    assert C.check(TOOLS[tool], vars(args)) == []


# ------------------------------------------------------------------------------------------ what the plugin sees


def test_problem_codes_of_the_new_checks(fx, tmp_path):
    """The dock and Processing decide on (param, code): the checks added for hostile input give stable ones."""
    cluster = TOOLS["cluster"]
    base = {"raster": str(fx["raster"]), "out": str(tmp_path / "o.gpkg")}

    def codes(**values):
        return {p.param: p.code for p in C.check(cluster, {**base, **values})}

    assert codes(seed=SEED_LIMIT) == {"seed": C.P.OUT_OF_RANGE}
    assert codes(seed=SEED_LIMIT - 1) == {}
    assert codes(min_valid="nan") == {"min_valid": C.P.OUT_OF_RANGE}
    assert codes(min_valid=float("nan")) == {"min_valid": C.P.OUT_OF_RANGE}
    assert codes(method="deepcluster", weight_decay="inf") == {"weight_decay": C.P.OUT_OF_RANGE}
    (tmp_path / "dir.gpkg").mkdir()
    assert codes(out=str(tmp_path / "dir.gpkg"), overwrite=True) == {"out": C.P.IS_FOLDER}
    (tmp_path / "o_clusters.tif").mkdir()                      # a file the run would write is a folder
    assert codes(overwrite=True) == {"out": C.P.IS_FOLDER}
    (tmp_path / "o_clusters.tif").rmdir()
    assert codes(out=str(tmp_path / ("a" * 300 + ".gpkg"))) == {"out": C.P.BAD_FORMAT}
    assert codes(out=str(tmp_path / ("a" * 250 + ".gpkg"))) == {"out": C.P.BAD_FORMAT}   # its _clusters.tif
    assert codes(raster=str(tmp_path / ("a" * 300 + ".tif"))) == {"raster": C.P.BAD_FORMAT}
    (tmp_path / "file").write_text("x")
    assert codes(cache_dir=str(tmp_path / "file")) == {"cache_dir": C.P.NOT_FOLDER}
    assert codes(cache_dir=str(tmp_path / "file" / "sub" / "deeper")) == {"cache_dir": C.P.NOT_FOLDER}
    assert codes(cache_dir=str(tmp_path / "new" / "deeper")) == {}          # made when missing
    shutil.copy2(fx["weights"], tmp_path / "w.pt")
    assert codes(weights=str(tmp_path / "w.pt"), save_model=str(tmp_path / "w.pt"), overwrite=True) == {
        "save_model": C.P.CLASHES}


# ------------------------------------------------------------------------------------------ the real exit code


def _subprocess_cases():
    wanted = ("cluster:k:not a number", "cluster:seed:beyond the generator", "predict:model:random bytes .pt",
              "segment:batch_size:negative", "cluster:out:tif is RASTER, overwrite", "train-seg:out:300-byte name")
    return [c for c in ALL_CASES if c.id in wanted]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in _subprocess_cases()])
def test_bad_value_exits_2_from_the_command_line(case: Case, fx, tmp_path):
    d = tmp_path / "case"
    d.mkdir()
    argv = case_argv(case, fx, d)
    before = tree(tmp_path, fx["raster"].parent)
    env = {**os.environ, "URBANFORM_CACHE": str(tmp_path / "cache"), "PYTHONWARNINGS": ""}
    proc = subprocess.run([sys.executable, "-m", "engine", *argv], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env=env)
    assert_refused(case, proc.returncode, proc.stderr, proc.stdout, before, tree(tmp_path, fx["raster"].parent))
    assert "usage:" not in proc.stderr, "a usage error is one line, the usage is for --help"
    assert len(proc.stderr.strip().splitlines()) <= 2, proc.stderr        # the error, and where help is


# ------------------------------------------------------------------------------------------ properties

VALUE_TYPES = (C.INT, C.FLOAT, C.CHOICE, C.K_LIST, C.SIZE, C.SIZES, C.EXTENT, C.BANDS)
VALUE_PARAMS = sorted({(t.name, p.name) for t in TOOLS.values() for p in t.params if p.type in VALUE_TYPES
                       and p.cli})
FILE_PARAMS = sorted({(t.name, p.name) for t in TOOLS.values() for p in t.params if p.type in C.PATHS and p.cli})
# text a user (or a script, a plugin, a server) may send: digits, units, separators, signs, words, any character
VALUE_TEXT = st.one_of(
    st.text(alphabet=st.sampled_from(list("0123456789.,-+ empxkaunifINF")), max_size=24),
    st.text(max_size=24),
    st.lists(st.integers(-300, 300), min_size=1, max_size=5).map(lambda v: ",".join(map(str, v))),
    st.tuples(st.integers(-5, 300), st.integers(-5, 300)).map(lambda ab: f"{ab[0]}..{ab[1]}"),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["auto", "none", "nan", "-inf", "1e309", "0x10", "٣", "1_000", "2**32", " 8 ", "8px", "20m"]))
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@PROPERTY
@given(pair=st.sampled_from(VALUE_PARAMS), text=VALUE_TEXT)
def test_parse_value_gives_a_value_or_a_message(pair, text):
    """Any text: a checked value that reads back the same from its command-line form, or a ValueError."""
    tool, name = pair
    p = TOOLS[tool].param(name)
    try:
        value = C.parse_value(p, text)
    except ValueError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    if isinstance(value, float):
        assert np.isfinite(value)
    if value not in p.words:
        assert C.parse_value(p, C.format_value(p, value)) == value


@PROPERTY
@given(pair=st.sampled_from(VALUE_PARAMS), text=VALUE_TEXT)
def test_command_line_text_is_parsed_or_refused_in_one_line(pair, text):
    """Any text for a value parameter on the command line: argparse refuses it in one line naming the flag
    (exit 2), or the declaration's checks answer with problems (never an exception)."""
    import contextlib
    import io

    tool, name = pair
    t = TOOLS[tool]
    p = t.param(name)
    values = {"raster": "r.tif", "out": "o.gpkg", "model": "m.pt", "run": "r.gpkg", "buildings": "b.gpkg",
              "pred": "p.tif", "truth": "t.gpkg", "method": "deepcluster", "nir_band": "1",
              "raster_before": "a.tif", "raster_after": "b.tif"}
    values = {k: v for k, v in values.items() if k in t.names() and k != name}
    argv = argv_of(tool, values)
    if "\x00" in text:
        return                                          # no command line holds a NUL byte
    argv += [f"{p.flag}={text}"] if not p.positional else []
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as exc:
            assert exc.code == 2
            lines = [line for line in err.getvalue().splitlines() if line.startswith("error:")]
            assert len(lines) == 1 and names_param(lines[0], tool, name), err.getvalue()
            return
    problems = C.check(t, vars(args), files=False)
    assert all(pr.param in t.names() and pr.code in C.P.CODES for pr in problems)


@PROPERTY
@given(pair=st.sampled_from(FILE_PARAMS), text=st.one_of(
    st.text(max_size=40), st.text(min_size=250, max_size=400),
    st.sampled_from(["", ".", "..", "/", "~", " ", "a\x00b.tif", "\x00", "*.gpkg", "a\nb.gpkg", "con.gpkg",
                     "x.gpkg/", "imagenet", "none", "\udcff.tif"])))
def test_any_path_text_gives_problems_not_an_exception(pair, text, tmp_path_factory):
    """Any text as a path (a NUL byte, 400 characters, a name of dots): problems with stable codes."""
    tool, name = pair
    t = TOOLS[tool]
    d = tmp_path_factory.getbasetemp() / "paths"
    d.mkdir(exist_ok=True)
    path = str(d / text) if text and not os.path.isabs(text) else text
    problems = C.check(t, {name: path, "overwrite": True})
    assert all(pr.param in t.names() and pr.code in C.P.CODES for pr in problems)
