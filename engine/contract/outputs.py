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


def stats_outputs(run: "str | Path") -> dict[str, Path]:
    """The files the statistics write next to a run's GeoPackage: RUN_stats.csv, RUN_profile.png, RUN_boxes.png."""
    from .params import output_files
    from .tools import STATS_TOOL

    files = output_files(STATS_TOOL, {"run": str(run)})
    return {k: files[k] for k in ("stats_csv", "profile", "boxes")}
