"""The names of the files and layers a run writes, derived from its output path (stdlib only).

The patterns are declared with each tool (``contract.tools``); the engine writes these files and the
plugin looks for them (to load layers,
show plots, and refuse an output name that would overwrite a run), so both take
the names from here.
"""
from __future__ import annotations

import re
from pathlib import Path

LAYER_PREFIX = "tiles_"       # a sweep's layers: tiles_64px, tiles_2_5m
CLUSTERS_LAYER = "clusters"   # the per-cluster profile layer the statistics add (clusters_64px_k5 for a sweep layer)
# a model's training checkpoint next to it (DeepCluster's OUT_checkpoint.pt, train-seg's MODEL_checkpoint.pt)
CHECKPOINT = "{stem}_checkpoint.pt"


def tile_label(value: float, unit: str) -> str:
    """``(64, 'px')`` -> ``'64px'``, ``(2.5, 'm')`` -> ``'2.5m'``, ``(20.0, 'm')`` -> ``'20m'``: a tile size as text."""
    value = float(value)
    return f"{int(value) if value == int(value) else value}{unit}"


def size_tag(label: str) -> str:
    """``'64px'`` -> ``'64px'``, ``'2.5m'`` -> ``'2_5m'``: a tile size label fit for layer and file names."""
    return re.sub(r"[^0-9a-z]", "_", str(label).lower())


def label_of_tag(tag: str) -> str:
    """``'2_5m'`` -> ``'2.5m'``: the inverse of ``size_tag`` for the labels ``tile_label`` writes."""
    return str(tag).replace("_", ".")


def sweep_layer_name(label: str) -> str:
    """``'64px'`` -> ``'tiles_64px'``, ``'2.5m'`` -> ``'tiles_2_5m'``: a sweep layer in SWEEP.gpkg."""
    return LAYER_PREFIX + size_tag(label)


def stem(out: "str | Path") -> str:
    """OUT.gpkg -> OUT (with its folder): the start of every file name a run writes next to its GeoPackage."""
    return str(Path(out).with_suffix(""))


def cluster_outputs(out: "str | Path") -> dict[str, Path]:
    """``cluster`` (and ``predict``, less the model): OUT.gpkg, OUT_clusters.tif, OUT_manifest.json,
    OUT_quicklook.png, OUT_model.pt (the patterns declared in ``contract.tools.CLUSTER``)."""
    from .params import output_files
    from .tools import CLUSTER

    return output_files(CLUSTER, {"out": str(out)})


def sweep_outputs(out: "str | Path", labels: "list[str]") -> dict[str, Path]:
    """``sweep``: SWEEP.gpkg, SWEEP_metrics.csv, SWEEP_metrics.png, SWEEP_manifest.json, then per tile size
    label (key ``lineage_<label>``, ``pca_<label>``) SWEEP_lineage_<tag>.png and SWEEP_pca_<tag>.png
    (the patterns declared in ``contract.tools.SWEEP``)."""
    from .params import output_files
    from .tools import SWEEP

    return output_files(SWEEP, {"out": str(out)}, sizes=list(labels))


def segment_outputs(out: "str | Path", probability: bool = False) -> dict[str, Path]:
    """``segment``: OUT.gpkg, OUT_mask.tif, OUT_manifest.json and with ``probability`` OUT_prob.tif
    (the patterns declared in ``contract.tools.SEGMENT``)."""
    from .params import output_files
    from .tools import SEGMENT

    return output_files(SEGMENT, {"out": str(out), "probability": probability})


def stats_outputs(run: "str | Path", tag: str = "") -> dict[str, Path]:
    """The files the statistics write next to a run's GeoPackage: RUN_stats.csv, RUN_profile.png, RUN_boxes.png.

    ``tag`` names the statistics of one layer and K of a sweep (``'_64px_k5'``: RUN_64px_k5_stats.csv, ...).
    """
    from .params import output_files
    from .tools import STATS_TOOL

    files = output_files(STATS_TOOL, {"run": stem(run) + tag + Path(run).suffix})
    return {k: files[k] for k in ("stats_csv", "profile", "boxes")}


def manifest_path(out: "str | Path") -> Path:
    """OUT.gpkg (or MODEL.pt) -> OUT_manifest.json: every tool's manifest (the pattern declared with the tools)."""
    from .params import output_files
    from .tools import STATS_TOOL

    return output_files(STATS_TOOL, {"run": str(out)})["manifest"]


def checkpoint_path(out: "str | Path") -> Path:
    """OUT.gpkg -> OUT_checkpoint.pt (DeepCluster, kept while interrupted); MODEL.pt -> MODEL_checkpoint.pt."""
    return Path(CHECKPOINT.format(stem=stem(out)))


def export_path(run: "str | Path", layer: str, fmt: str, folder: "str | Path") -> Path:
    """``export``: layer ``tiles`` of RUN.gpkg as ``shp`` -> FOLDER/RUN_tiles.shp (its format's suffix)."""
    return Path(folder) / f"{Path(run).stem}_{layer}.{fmt}"


# -- the engine's working files next to an output (the plugin removes those of an engine it saw killed) ----------
def partial_name(final: "str | Path", pid: int, tag: str = "") -> Path:
    """``.{stem}.part-{pid}{tag}{suffix}`` next to ``final``: the temporary name a process writes ``final`` under."""
    final = Path(final)
    return final.with_name(f".{final.stem}.part-{pid}{tag}{final.suffix}")


def partial_glob(final: "str | Path", pid: int) -> str:
    """The glob of every temporary file process ``pid`` may have left for ``final`` (sidecars included)."""
    return f".{Path(final).stem}.part-{pid}*"


def lock_name(final: "str | Path") -> Path:
    """``.{name}.lock`` next to ``final``: the lock a run holds on that output while it writes it."""
    final = Path(final)
    return final.with_name(f".{final.name}.lock")

