"""The ``sweep`` tool: clusters for many K and tile sizes, made comparable, with metrics and plots.

Why: clusters of urban form are only trustworthy if they hold up when K and
the tile size change. A sweep runs the clustering for every K of a list (e.g.
``2..12``) at every tile size (e.g. ``32px,64px,128px``) and writes:

- ``SWEEP.gpkg``: one layer per tile size, ``tiles_64px``, with tile_id, row,
  col, valid_frac, pc1, pc2 and a column ``k2`` ... ``k12`` per K. Ids are made
  consistent across K (``sweep_metrics.relabel_like``), so cluster 3 has the
  same colour and means the same place on every map.
- ``SWEEP_metrics.csv``: a row per (tile size, K): tile_size, k, tiles,
  silhouette, calinski_harabasz, davies_bouldin (on the reduced features),
  nmi_prev, ari_prev (against the previous K of that size; empty for the
  first), then the agreement across tile sizes as columns ``nmi_<S>`` and
  ``ari_<S>``, one pair per tile size S except the smallest: in the row of a
  smaller size they compare each of its tiles with the tile of size S that
  contains its centre, at the same K (empty where S is not larger or lacks
  that K).
- ``SWEEP_metrics.png``, ``SWEEP_lineage_<size>.png`` (alluvial diagram of the
  cluster lineage across K), ``SWEEP_pca_<size>.png`` (PCA scatter per K).
- ``SWEEP_manifest.json``: parameters, versions, input checksum, per tile size
  the tiles, the K done and skipped, timings and metrics; ``complete`` and
  ``missing`` (the layers still to do).

For k-means the CNN features are computed once per tile size (and cached as
for ``cluster``), the PCA is fitted once per tile size and only k-means runs
per K. DeepCluster trains a network per (tile size, K).

K values below MIN_K (2) or above MAX_K (``contract.limits``) are refused before any
work, as the plugin refuses them: no tile size can ever take them, so they are
typing mistakes. K values above the valid tiles of a tile size are skipped
there with a warning (progress stage ``warning``, one event each, and the
manifest's ``skipped``); BadInput only when no K is left anywhere.

Progress stages: ``open``, ``scan``, ``warning``, then per tile size
``features`` (k-means) and ``tiles_<size>`` (done/total over its K values;
DeepCluster adds its ``epoch`` events), ``plots`` and ``write`` (``write`` 1/1
once the tile size is committed), and at the end ``plots`` and ``write``.

Atomic and resumable: every tile size is a part committed on its own, in one
commit (``engine.io.OutputSet``): its layer added to a temporary copy of
SWEEP.gpkg, its two plots, the metrics CSV and the manifest that records the
part as done are written under temporary names and renamed into place
together (a cancel waits for the renames: ``engine.progress.committing``), so
a cancelled sweep never leaves the plots of a tile size without its layer.
The plots are drawn in a worker process (``sweep_plots.BackgroundPlots``)
while the sweep goes on to the next tile size's features, so a tile size is
committed once its plots are drawn, just before the next one writes its layer
(or at the end); a sweep stopped meanwhile still commits it first.
An interrupted sweep therefore keeps every finished tile size, its manifest
says ``complete: false`` and lists what is ``missing``, and ``resume=True``
(CLI ``--resume``) does only the missing parts after checking that the
parameters and the raster are the same; one cancelled before any tile size
was finished has written nothing, and the same command starts it again. The
message of a stopped sweep says which of the two applies. Nothing on disk is
replaced without ``overwrite`` (or ``resume`` for the sweep's own files).
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..clustering.sweep_plots import BackgroundPlots
from ..contract import defaults
from ..contract.limits import MIN_K, parse_k_values
from ..contract.outputs import sweep_layer_name, sweep_outputs
from ..contract.params import output_files, parse_lengths
from ..contract.tools import SWEEP
from ..errors import BadInput, Cancelled
from ..io import write_json_atomic
from ..progress import Progress, committing
from . import check_params, check_vector_inputs, locked_outputs, param_values, study_params
from .stats import StatsInputs

# k-means and metrics on at most this many tiles run on one thread: see _few_threads
ONE_THREAD_TILES = 20000
# the PCA and the silhouette's distance matrix (large matrix products) use every core from this many tiles: on
# the 2048 px city the PCA of 4,096 tiles took 0.20-0.30 s on two threads against 0.29-0.36 s on one, while 256
# and 1,024 tiles were no faster on two and up to 10x slower when the plot worker held a core (bench_sweep.py)
BIG_PRODUCT_TILES = 2048
# features up to this size are read into memory once per tile size (else streamed from the cache file)
IN_MEMORY_BYTES = 1 << 30
# parameters that do not change results: a resumed sweep may differ in these
VOLATILE = ("resume", "overwrite", "cache_dir", "use_cache", "batch_size", "device", "dask",
            # the statistics are computed after the sweep, from its layers, and replaced on every run
            "buildings", "roads", "road_field", "major_values", "population", "nir_band", "red_band", "ndvi_raster")


@dataclass
class SweepParams(StatsInputs):
    """Everything that decides a ``sweep`` run (the manifest records all of it): the fields and defaults
    ``contract.tools.SWEEP`` declares. The statistics inputs (``StatsInputs``, keyword-only) add the
    urban-form statistics to every tile size's layer."""

    raster: str
    out: str
    k: str = "2..12"
    tile_size: str = "32px,64px,128px"      # comma-separated tile sizes
    method: str = "kmeans"
    pool: str = defaults.DEFAULT_POOL            # the feature recipe of cluster (k-means): depths pooled ...
    cnn_px: "int | str" = defaults.DEFAULT_CNN_PX  # ... and the CNN's input size
    epochs: int = 5
    backbone: str = defaults.DEFAULT_BACKBONE
    weights: str = defaults.DEFAULT_WEIGHTS
    device: str = "auto"
    precision: str = "auto"
    batch_size: int | None = None
    seed: int = 0
    pca_dims: str = "auto"
    whiten: bool = False
    min_valid: float = 0.5
    bands: str | None = None
    overlap: str = "0px"
    edge: str = "drop"
    cache_dir: str | None = None
    use_cache: bool = True
    resume: bool = False
    overwrite: bool = False
    # DeepCluster
    lr: str = "auto"
    crops_per_tile: int = 8
    freeze: str = "auto"
    sobel: bool = False
    augment: str = defaults.DEFAULT_AUGMENT
    momentum: float = 0.9
    weight_decay: float = 1e-5
    train_batch_size: int = 64
    patience: int = 2
    dask: str | None = None          # 'local:N' or 'tcp://host:port': the features of each tile size on Dask
    # k-means restarts per K (as in ``cluster``, so column kK matches a ``cluster --k K`` run up to ids)
    n_init: int = 10


# --------------------------------------------------------------------------- parsing


def parse_k_list(text) -> list[int]:
    """``"2..12"``, ``"2,4,6"`` or ``"2..6,8,12"`` -> sorted distinct K values.

    ``contract.limits.parse_k_values`` (the plugin's parser too): text that is
    not a list of whole numbers and ascending ranges, or a K below 2 or above
    MAX_K, is BadInput.
    """
    if isinstance(text, int):
        text = str(text)
    if isinstance(text, (list, tuple)):
        text = ",".join(str(int(v)) for v in text)
    try:
        return parse_k_values(text)
    except ValueError as exc:
        raise BadInput(f"--k {text!r}: {exc}") from None


def parse_tile_sizes(text) -> list[str]:
    """``"32px,64px,128px"`` -> distinct normalised lengths (``contract.params.parse_lengths``), in the order
    given; BadInput naming ``--tile-size`` otherwise."""
    try:
        return parse_lengths(text)
    except ValueError as exc:
        raise BadInput(f"--tile-size {text!r}: {exc}", param="tile_size") from None


def layer_name(size: str) -> str:
    """``64px`` -> ``tiles_64px`` (``2.5m`` -> ``tiles_2_5m``): ``contract.outputs.sweep_layer_name``."""
    return sweep_layer_name(size)


def k_column(k: int) -> str:
    return f"k{int(k)}"


# --------------------------------------------------------------------------- outputs


@dataclass
class SweepOutputs:
    gpkg: Path
    csv: Path
    metrics_png: Path
    manifest: Path
    lineage: dict = field(default_factory=dict)     # size -> path
    pca: dict = field(default_factory=dict)

    @classmethod
    def for_out(cls, out: "str | Path", sizes: list[str]) -> "SweepOutputs":
        f = sweep_outputs(out, sizes)
        return cls(f["gpkg"], f["metrics_csv"], f["metrics_png"], f["manifest"],
                   {s: f[f"lineage_{s}"] for s in sizes}, {s: f[f"pca_{s}"] for s in sizes})

    def paths(self) -> list[Path]:
        return [self.gpkg, self.csv, self.metrics_png, self.manifest, *self.lineage.values(), *self.pca.values()]


# --------------------------------------------------------------------------- checks


def _comparable(params: dict) -> dict:
    return {k: v for k, v in params.items() if k not in VOLATILE}


def _check_resume(params: SweepParams, old: dict, checksum: str, manifest_path: Path) -> None:
    if old.get("tool") != "sweep":
        raise BadInput(f"--resume: {str(manifest_path)!r} is not a sweep manifest; choose another --out.")
    now, then = _comparable(asdict(params)), _comparable(old.get("parameters", {}))
    diff = sorted(k for k in set(now) | set(then) if now.get(k) != then.get(k))
    if diff:
        shown = ", ".join(f"{k}: {then.get(k)!r} then, {now.get(k)!r} now" for k in diff)
        raise BadInput(f"--resume: the sweep in {str(manifest_path)!r} was made with other parameters ({shown}). "
                       "Resume with the same parameters, or pass --overwrite (without --resume) to start again.")
    if old.get("inputs", {}).get("sha256") != checksum:
        raise BadInput(f"--resume: the raster {params.raster!r} changed since the sweep in "
                       f"{str(manifest_path)!r} started. Pass --overwrite (without --resume) to start again.")


# --------------------------------------------------------------------------- plan


@dataclass
class Part:
    """One tile size: its grid, valid tiles and the K values it can take."""

    size: str
    layer: str
    tile_px: int
    stride: int
    shape: tuple
    transform: object
    crs: str
    rows: np.ndarray
    cols: np.ndarray
    valid: np.ndarray
    tiles_total: int
    ks: list
    skipped: list
    # results
    labels: dict = field(default_factory=dict)      # K -> consistent ids
    metrics: dict = field(default_factory=dict)     # K -> {metric: value}
    info: dict = field(default_factory=dict)
    # agreement with larger tile sizes, (size, K) -> {nmi, ari}, and the tile pairs per size: computed once,
    # though the metrics table is rebuilt at every commit
    cross: dict = field(default_factory=dict, repr=False)

    def grid_dict(self) -> dict:
        return {"rows": self.rows, "cols": self.cols, "size": self.tile_px, "stride": self.stride,
                "shape": self.shape, "transform": self.transform, "crs": self.crs}


def _plan(params: SweepParams, sizes: list[str], ks: list[int], progress) -> list[Part]:
    """Open the raster at every tile size and count valid tiles (cheap), before any real work."""
    from ..features.backbones import backbone_spec
    from ..features.extract import check_cnn_input
    from ..raster.tiling import TiledRaster
    from .cluster import feature_recipe

    parts = []
    for size in sizes:
        with TiledRaster(params.raster, size, params.overlap, params.edge, params.bands, seed=params.seed) as tiled:
            g = tiled.grid
            check_cnn_input(backbone_spec(params.backbone), feature_recipe(params)["cnn_px"], g.size)
            progress("scan", 0, g.n_rows, f"{size}: {len(g)} tiles of {g.size} px")
            valid = tiled.valid_fraction(progress=progress.stage("scan"))
            keep = valid >= params.min_valid
            rows, cols = np.nonzero(keep)
            n = len(rows)
            ok, skipped = [], []
            for k in ks:
                if k > n:
                    skipped.append({"tile_size": size, "k": k,
                                    "reason": f"more clusters than the {n} valid tiles of {size}"})
                else:
                    ok.append(k)
            parts.append(Part(size, layer_name(size), g.size, g.stride, g.shape, g.transform,
                              tiled.working_crs.to_wkt(), rows, cols, valid[rows, cols].astype(np.float32),
                              len(g), ok, skipped))
    parts.sort(key=lambda p: (p.tile_px, p.size))
    return parts


# --------------------------------------------------------------------------- running one part


def _kmeans_part(part: Part, tiled, params: SweepParams, extractor, checksum: str, cache_dir: Path, progress,
                 timings: dict, session=None, one_thread=None) -> dict:
    """Features once, PCA once, k-means per K. Returns raw labels per K, reduced features and scores.
    ``one_thread``: called as the k-means fits start on one thread (a core is free from there on)."""
    from ..clustering.kmeans import KMeansTiles, _l2
    from .cluster import _compute_features, feature_key

    stage = f"tiles_{part.size}"
    t = time.perf_counter()
    key = feature_key(checksum, tiled, extractor, params, part.rows, part.cols)
    progress("features", 0, len(part.rows),
             f"{part.size}: {extractor.spec.name} on {extractor.device.type} ({extractor.precision})")
    feats, cache_hit, _ = _compute_features(tiled, part.rows, part.cols, extractor, params, cache_dir, key,
                                            progress, session)
    timings["features"] = round(time.perf_counter() - t, 3)
    t = time.perf_counter()
    if feats.shape[0] * feats.shape[1] * 4 <= IN_MEMORY_BYTES:
        feats = feats[0: len(feats)]        # one read instead of two per K (k-means sample, assignment)
    with _few_threads(len(part.rows), BIG_PRODUCT_TILES):
        pca = KMeansTiles(2, params.pca_dims, params.whiten, params.seed).fit_pca(feats)
        P = pca.project(feats)
    Z = P / np.sqrt(np.maximum(pca.explained_variance_, 1e-12)) if params.whiten else P.copy()
    Z = _l2(Z)
    timings["pca"] = round(time.perf_counter() - t, 3)
    part.info.update(cache_key=key, cache_hit=bool(cache_hit), pca_dims=int(pca.n_components_),
                     explained_variance=float(pca.explained_variance_ratio_.sum()))
    with _few_threads(len(part.rows)):
        labels, inertia = {}, {}
        t = time.perf_counter()
        if one_thread is not None:
            one_thread()
        for i, k in enumerate(part.ks):
            progress(stage, i, len(part.ks), f"k-means K={k}")
            est = KMeansTiles(k, params.pca_dims, params.whiten, params.seed, n_init=params.n_init)
            est.fit(feats, pca_from=pca, reduced=Z)
            labels[k] = est.labels_
            inertia[k] = est.inertia_
            progress(stage, i + 1, len(part.ks), f"K={k} done")
        timings["kmeans"] = round(time.perf_counter() - t, 3)
    part.info["inertia"] = {str(k): v for k, v in inertia.items()}
    return {"labels": labels, "Z": {k: Z for k in labels}, "scores": _two(P), "scores_by_k": None}


def _few_threads(n_tiles: int, above: int = ONE_THREAD_TILES):
    """One BLAS/OpenMP thread for k-means and metrics over few tiles (at most ``above``).

    Why: a k-means fit over a few thousand tiles is a long series of tiny
    parallel steps; with two threads on a 2-core machine that is also running
    anything else (or torch's idle OpenMP pool), each barrier waits for a
    descheduled thread, and the fits ran 3 to 20 times slower than on one
    thread (measured on 1024 tiles of the 2048 px city). Above
    ``ONE_THREAD_TILES`` the work per step is large enough to use every core.
    """
    from contextlib import nullcontext

    if n_tiles > above:
        return nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1)


def _two(P: np.ndarray) -> np.ndarray:
    """The first two PCA scores (zeros where there is only one component)."""
    out = np.zeros((len(P), 2), dtype=np.float32)
    out[:, : min(2, P.shape[1])] = P[:, :2]
    return out


def _deepcluster_part(part: Part, tiled, params: SweepParams, progress, timings: dict, session=None) -> dict:
    """A DeepCluster training per K (the network changes with K, so nothing is shared); with a Dask
    ``session`` each epoch's features are computed on its workers."""
    import tempfile

    from ..clustering.deepcluster import DeepCluster
    from .cluster import deepcluster_on_dask

    stage = f"tiles_{part.size}"
    labels, Zs, scores, history = {}, {}, {}, {}
    t = time.perf_counter()
    for i, k in enumerate(part.ks):
        progress(stage, i, len(part.ks), f"DeepCluster K={k}")
        dc = DeepCluster(**_deepcluster_kwargs(params, k))
        with tempfile.TemporaryDirectory(prefix="urbanform-") as workdir:
            on_dask = deepcluster_on_dask(session, tiled, part.rows, part.cols, params, workdir) if session \
                else None
            try:
                dc.fit(tiled, part.rows, part.cols, progress=progress, features=on_dask)
            finally:
                if on_dask is not None:
                    on_dask.remove()
            feats = np.asarray(dc.features_[:]) if on_dask is not None else dc.features_
        km = dc.kmeans_
        labels[k] = np.asarray(dc.labels_, dtype=np.int32)
        Zs[k] = km.reduce(feats)
        scores[k] = _two(km.project(feats))
        history[str(k)] = getattr(dc, "history_", None)
        del dc, feats, km                      # free the network before the next K
        progress(stage, i + 1, len(part.ks), f"K={k} done")
    timings["deepcluster"] = round(time.perf_counter() - t, 3)
    part.info["history"] = history
    last = max(labels)
    return {"labels": labels, "Z": Zs, "scores": scores[last], "scores_by_k": scores}


def _deepcluster_kwargs(params: SweepParams, k: int) -> dict:
    """``engine.clustering.deepcluster.DeepCluster`` arguments for one K of the sweep."""
    return {"n_clusters": k, "backbone": params.backbone, "weights": params.weights, "epochs": params.epochs,
            "lr": params.lr, "momentum": params.momentum, "weight_decay": params.weight_decay,
            "batch_size": params.train_batch_size, "sobel": params.sobel, "freeze": params.freeze,
            "crops_per_tile": params.crops_per_tile, "patience": params.patience, "augment": params.augment,
            "pca_dims": params.pca_dims,
            "whiten": params.whiten, "seed": params.seed, "device": params.device, "precision": params.precision,
            "feature_batch_size": params.batch_size}


def _finish_part(part: Part, result: dict, params: SweepParams, progress, timings: dict) -> dict:
    """Consistent ids, metrics per K; returns the layer columns."""
    from ..clustering.sweep_metrics import SilhouetteSample, agreement, cluster_metrics, consistent_labels

    t = time.perf_counter()
    raw = result["labels"]
    part.labels = consistent_labels(raw)
    prev = None
    shared: dict[int, SilhouetteSample] = {}      # k-means: one feature space, one distance matrix
    spaces = {id(result["Z"][k]): result["Z"][k] for k in part.ks}
    if len(spaces) == 1:
        (key, Z), = spaces.items()
        with _few_threads(len(part.rows), BIG_PRODUCT_TILES):
            shared[key] = SilhouetteSample(Z, params.seed)
    with _few_threads(len(part.rows)):
        for k in part.ks:
            Z = result["Z"][k]
            if id(Z) not in shared:
                shared.clear()
                shared[id(Z)] = SilhouetteSample(Z, params.seed)
            m = cluster_metrics(Z, raw[k], seed=params.seed, silhouette=shared[id(Z)])
            m["nmi_prev"] = m["ari_prev"] = math.nan
            if prev is not None:
                a = agreement(raw[prev], raw[k])
                m["nmi_prev"], m["ari_prev"] = a["nmi"], a["ari"]
            m["sizes"] = np.bincount(part.labels[k], minlength=k).tolist()
            part.metrics[k] = m
            prev = k
    shared.clear()
    timings["metrics"] = round(time.perf_counter() - t, 3)
    ids = part.rows * part.shape[1] + part.cols
    columns = {"tile_id": ids.astype(np.int64), "row": part.rows.astype(np.int32),
               "col": part.cols.astype(np.int32), "valid_frac": part.valid.astype(np.float32),
               "pc1": result["scores"][:, 0].astype(np.float32), "pc2": result["scores"][:, 1].astype(np.float32)}
    for k in part.ks:
        columns[k_column(k)] = part.labels[k].astype(np.int32)
    return columns


# --------------------------------------------------------------------------- metrics table


def metrics_rows(parts: list[Part], only: "set | None" = None) -> tuple[list[str], list[dict]]:
    """The CSV header (for all ``parts``) and the rows of the finished ones, or of the layers in ``only``
    (agreement across sizes included)."""
    from ..clustering.sweep_metrics import agreement, cross_size_pairs

    done = [p for p in parts if p.labels and (only is None or p.layer in only)]
    header = ["tile_size", "k", "tiles", "silhouette", "calinski_harabasz", "davies_bouldin", "nmi_prev", "ari_prev"]
    for p in parts[1:]:
        header += [f"nmi_{p.size}", f"ari_{p.size}"]
    pairs = {(small.size, large.size) for i, small in enumerate(done) for large in done[i + 1:]
             if large.tile_px > small.tile_px}

    def across(small: Part, large: Part, k: int) -> dict:
        if (large.size, k) not in small.cross:
            if large.size not in small.cross:
                small.cross[large.size] = cross_size_pairs(small.grid_dict(), large.grid_dict())
            si, li = small.cross[large.size]
            small.cross[(large.size, k)] = agreement(small.labels[k][si], large.labels[k][li])
        return small.cross[(large.size, k)]

    rows = []
    for p in done:
        for k in sorted(p.labels):
            m = p.metrics.get(k, {})
            row = {"tile_size": p.size, "k": k, "tiles": len(p.rows)}
            for name in header[3:8]:
                row[name] = m.get(name, math.nan)
            for q in done:
                if (p.size, q.size) in pairs and k in q.labels:
                    a = across(p, q, k)
                    row[f"nmi_{q.size}"], row[f"ari_{q.size}"] = a["nmi"], a["ari"]
            rows.append(row)
    return header, rows


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return str(v)


def write_metrics_csv(path: Path, header: list[str], rows: list[dict]) -> None:
    import csv

    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for r in rows:
            w.writerow([_fmt(r.get(h)) for h in header])


def _clean(v):
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, np.generic):
        return _clean(v.item())
    return v


# --------------------------------------------------------------------------- resume


def _load_part(part: Part, gpkg: Path, entry: dict) -> None:
    """Labels and metrics of a part finished by an earlier run (from its layer and the manifest)."""
    import pyogrio

    ks = [int(k) for k in entry["ks"]]
    df = pyogrio.read_dataframe(str(gpkg), layer=part.layer, read_geometry=False,
                                columns=["row", "col"] + [k_column(k) for k in ks])
    r = df["row"].to_numpy(np.int64)
    c = df["col"].to_numpy(np.int64)
    order = np.lexsort((c, r))
    part.rows, part.cols = r[order], c[order]
    part.ks = ks
    part.labels = {k: df[k_column(k)].to_numpy(np.int32)[order] for k in ks}
    part.metrics = {int(m["k"]): {n: (math.nan if v is None else v) for n, v in m.items()}
                    for m in entry.get("metrics", [])}
    part.info = {key: v for key, v in entry.items() if key not in ("metrics",)}


# --------------------------------------------------------------------------- the run


def run(params: SweepParams, progress: Progress | None = None) -> dict:
    """Run the ``sweep`` tool; returns the manifest (also written to disk).

    Every declared check (``contract.tools.SWEEP``) comes first, before any work, and the vector inputs are
    opened and checked; then the sweep locks its outputs (one writer per output) before it looks whether they
    exist. With statistics inputs (buildings, roads, ...) the statistics of every tile-size layer and their
    eta-squared per K follow (``stats.run_sweep_stats``), as ``python -m engine sweep --buildings ...`` does;
    the manifest returned then has ``sweep_statistics``.
    """
    from ..distributed.session import keep_sessions
    from ..io import OutputSet
    from ..raster.tiling import inspect_raster
    from .stats import check_statistics_inputs, run_sweep_stats, statistics_params, wants_statistics

    check_params("sweep", params)
    check_vector_inputs("sweep", params)
    params = study_params("sweep", params)
    inspect_raster(str(params.raster), "raster")     # before it is hashed: a folder or a damaged file is named
    stats = wants_statistics(params)
    if stats:                      # before the features are computed and cached, not in the statistics step
        check_statistics_inputs(params, params.raster)
    progress = progress or Progress("none")
    outputs = SweepOutputs.for_out(params.out, parse_tile_sizes(params.tile_size))
    stats_files = [path for key, path in output_files(SWEEP, param_values(params)).items()
                   if key.startswith("stats_")] if stats else []
    with locked_outputs(outputs.paths() + stats_files), keep_sessions():     # (the statistics share the cluster)
        OutputSet(stats_files, overwrite=params.overwrite or params.resume).check()
        manifest = _run_sweep(params, progress, final=not stats)
        if not stats:
            return manifest
        try:
            return run_sweep_stats(statistics_params(params, params.out), progress)
        except (Cancelled, KeyboardInterrupt) as exc:
            raise Cancelled(f"the sweep is complete in {str(outputs.gpkg)!r} but its statistics are not; run the "
                            "same command with --resume to compute them.") from exc


run_sweep = run


def _run_sweep(params: SweepParams, progress: Progress, final: bool = True) -> dict:
    """The sweep, with its outputs locked by the caller; ``final``: its last commit is the run's (no
    statistics follow). The checks first, then (with --dask) the cluster, then :func:`_sweep`."""
    from ..distributed.session import dask_session
    from ..io import OutputSet

    t_all = time.perf_counter()
    ks = parse_k_list(params.k)
    sizes = parse_tile_sizes(params.tile_size)
    outputs = SweepOutputs.for_out(params.out, sizes)
    old = None
    if params.resume and outputs.manifest.exists():
        try:
            old = json.loads(outputs.manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise BadInput(f"--resume: {str(outputs.manifest)!r} cannot be read; pass --overwrite "
                           "(without --resume) to start again.") from None
        OutputSet([outputs.manifest], overwrite=True).check()        # folder exists and is writable
    else:
        OutputSet(outputs.paths(), overwrite=params.overwrite).check()
    extractor = None
    if params.method == "kmeans" and not params.dask:
        # the backbone, --weights and --device before the raster is hashed and scanned: a bad weights file
        # is BadInput naming --weights, not "the sweep stopped (...)" after the scan
        from .cluster import feature_extractor

        extractor = feature_extractor(params)
    progress("open", 0, 0, f"opening {params.raster}")
    with dask_session(params.dask, progress) as session:
        if params.method == "kmeans" and session is not None:      # (the workers' device and precision)
            from .cluster import feature_extractor

            extractor = feature_extractor(params, session)
        return _sweep(params, progress, final, ks, outputs, old, extractor, session, t_all)


def _sweep(params: SweepParams, progress: Progress, final: bool, ks: list, outputs: "SweepOutputs", old, extractor,
           session, t_all: float) -> dict:
    """The sweep after its checks: every tile size's part, each committed on its own, then the final files."""
    from ..io import OutputSet, sha256_file, versions, write_json

    sizes = parse_tile_sizes(params.tile_size)
    features_info: dict = (old or {}).get("features", {})
    checksum = sha256_file(params.raster)
    if old is not None:
        _check_resume(params, old, checksum, outputs.manifest)
    parts = _plan(params, sizes, ks, progress)
    if not any(p.ks for p in parts):
        counts = ", ".join(f"{p.size}: {len(p.rows)}" for p in parts)
        raise BadInput(f"--k {params.k!r}: no K value can be used at any tile size (K must be between {MIN_K} and the "
                       f"number of valid tiles; valid tiles per size: {counts}). Use smaller K or smaller tiles.")
    skipped = [s for p in parts for s in p.skipped]
    # stage "warning": each one is a line on stderr (engine.progress), and an event for the plugin
    for s in skipped:
        progress("warning", 1, 1, f"warning: K={s['k']} skipped at {s['tile_size']}: {s['reason']}")
    for p in parts:
        if not p.ks:
            progress("warning", 1, 1, f"warning: tile size {p.size} skipped: no usable K")

    finished: set[str] = set()
    if old is not None:
        for p in parts:
            entry = old.get("parts", {}).get(p.layer)
            if entry and entry.get("done"):
                _load_part(p, outputs.gpkg, entry)
                finished.add(p.layer)
    todo = [p for p in parts if p.ks and p.layer not in finished]
    fresh_file = old is None          # the first commit of a fresh sweep starts SWEEP.gpkg anew
    info = {"raster": os.path.abspath(params.raster), "sha256": checksum}
    timings: dict = {"parts": {}}
    lib_versions = versions()

    def manifest(complete: bool, done: set) -> dict:
        header, rows = metrics_rows(parts, done)
        return _clean({
            "tool": "sweep",
            "parameters": asdict(params),
            "k_requested": ks,
            "tile_sizes": [p.size for p in parts],
            "inputs": info,
            "features": features_info,
            "layers": {p.layer: sorted(p.labels) for p in parts if p.layer in done},
            "parts": {p.layer: _part_entry(p, p.layer in done) for p in parts},
            "skipped": skipped,
            "complete": complete,
            "missing": [p.layer for p in parts if p.ks and p.layer not in done],
            "metrics": rows,
            "metrics_columns": header,
            "outputs": {"gpkg": str(outputs.gpkg), "metrics_csv": str(outputs.csv),
                        "metrics_png": str(outputs.metrics_png), "manifest": str(outputs.manifest),
                        **{f"lineage_{p.layer[6:]}": str(outputs.lineage[p.size]) for p in parts if p.layer in done},
                        **{f"pca_{p.layer[6:]}": str(outputs.pca[p.size]) for p in parts if p.layer in done}},
            "seed": params.seed,
            **({"dask": session.record()} if session is not None else {}),
            "versions": lib_versions,
            "timings_s": {**timings, "total": round(time.perf_counter() - t_all, 3)},
        })

    tmpdir = None
    # the PNGs are drawn in another process while this one goes on; it starts when the first k-means fits leave
    # a core free (or at the first figure), not during the first features
    plots = BackgroundPlots(start=False)
    # the tile size computed last, its files written under temporary names, waiting for its plots to commit
    pending: "dict | None" = None

    def settle() -> None:
        """Commit the pending tile size once its plots are drawn: its layer, its plots, the metrics table and
        the manifest that records it as done (so a cancel leaves either all of them or none, never a stray
        plot). Runs before the next tile size writes its layer (which starts from the committed SWEEP.gpkg),
        so the plots of one tile size are drawn while the features of the next are computed."""
        nonlocal pending
        if pending is None:
            return
        job, pending = pending, None
        outs, part_t = job["outs"], job["timings"]
        try:
            t = time.perf_counter()
            plots.wait(job["plots"])
            progress("plots", 2, 2, f"{job['part'].size} lineage and PCA")
            part_t["plots"] = round(part_t["plots"] + time.perf_counter() - t, 3)
            t = time.perf_counter()
            with committing(final=False):
                if job["fresh"]:               # --overwrite: the files of an older sweep go with the first commit
                    for path in outputs.paths():
                        if path not in job["commit"] and path.is_file():
                            path.unlink()
                outs.commit()
                finished.add(job["part"].layer)
            part_t["commit"] = round(part_t["commit"] + time.perf_counter() - t, 3)
        finally:
            outs.abort()                       # (nothing left after a commit)
        progress("write", 1, 1, f"layer {job['part'].layer} committed")

    outs = None
    try:
        cache_dir = Path(params.cache_dir) if params.cache_dir else _default_cache_dir()
        if not params.use_cache:
            tmpdir = tempfile.TemporaryDirectory(prefix="urbanform-sweep-")
            cache_dir = Path(tmpdir.name)
        for i, part in enumerate(todo):
            if extractor is not None and i == 0:      # the features of the parts this run computes
                features_info = {"backbone": params.backbone, "dim": extractor.dim,
                                 "weights_file": str(extractor.weights_path) if extractor.weights_path else None,
                                 "device": str(extractor.device), "precision": extractor.precision}
            t_part = time.perf_counter()
            part_t: dict = {}
            commit = [outputs.gpkg, outputs.lineage[part.size], outputs.pca[part.size], outputs.csv,
                      outputs.manifest]
            outs = OutputSet(commit, overwrite=True)
            waited = [0.0]

            def settle_timed(waited=waited) -> None:
                t = time.perf_counter()
                settle()
                waited[0] += time.perf_counter() - t

            drawing = _run_part(part, params, extractor, checksum, cache_dir, progress, part_t, outputs, outs,
                                fresh_file, session, plots, settle_timed)
            t = time.perf_counter()
            done = finished | {part.layer}
            header, rows = metrics_rows(parts, done)
            write_metrics_csv(outs.temp(outputs.csv), header, rows)
            part_t["total"] = round(time.perf_counter() - t_part - waited[0], 3)     # (less the previous commit)
            part.info["timings_s"] = part_t
            timings["parts"][part.layer] = part_t
            write_json(outs.temp(outputs.manifest), manifest(False, done))      # renamed last
            part_t["commit"] = time.perf_counter() - t
            pending = {"part": part, "outs": outs, "plots": drawing, "timings": part_t, "commit": commit,
                       "fresh": fresh_file}
            outs = None
            fresh_file = False
        settle()
        # the end: metric curves, final CSV and manifest, one commit
        t = time.perf_counter()
        progress("plots", 0, 1, str(outputs.metrics_png))
        header, rows = metrics_rows(parts, finished)
        with OutputSet([outputs.metrics_png, outputs.csv, outputs.manifest], overwrite=True) as outs:
            plots.wait([plots.draw("metrics", outs.temp(outputs.metrics_png), rows,
                                   [p.size for p in parts if p.labels])])
            progress("plots", 1, 1)
            progress("write", 0, 1, str(outputs.csv))
            write_metrics_csv(outs.temp(outputs.csv), header, rows)
            timings["final"] = round(time.perf_counter() - t, 3)
            result = manifest(True, finished)
            write_json(outs.temp(outputs.manifest), result)
            with committing(final):
                outs.commit()
        progress("write", 1, 1, f"wrote {outputs.gpkg}")
        return result
    except BaseException as exc:
        if pending is not None:            # a finished tile size waiting for its plots is kept
            try:
                settle()
            except BaseException:  # noqa: BLE001 - the original error matters more
                pass
        plots.drain()                      # no figure is still being drawn to a temporary name removed below
        if outs is not None:
            outs.abort()
        missing = [p.layer for p in parts if p.ks and p.layer not in finished]
        if finished:
            try:
                write_json_atomic(outputs.manifest, manifest(False, finished))
            except Exception:  # noqa: BLE001 - the original error matters more
                pass
        msg = _stopped_message(exc, outputs, sorted(finished), missing)
        if isinstance(exc, (Cancelled, KeyboardInterrupt)):
            raise Cancelled(msg) from exc
        if isinstance(exc, BadInput):
            raise BadInput(msg) from exc
        if isinstance(exc, Exception):
            raise RuntimeError(msg) from exc
        raise
    finally:
        plots.close()
        if tmpdir is not None:
            tmpdir.cleanup()


def _stopped_message(exc: BaseException, outputs: SweepOutputs, finished: list, missing: list) -> str:
    """What a stopped sweep kept and the command that goes on from there (what ``--resume`` or a rerun will
    accept)."""
    cancelled = isinstance(exc, (Cancelled, KeyboardInterrupt))
    head = "the sweep was cancelled" if cancelled else f"the sweep stopped ({type(exc).__name__}: {exc})"
    if not finished:
        return (f"{head} before any tile size was finished; nothing was written. Run the same command again "
                "to start it.")
    kept = f"finished: {', '.join(finished)} (kept in {str(outputs.gpkg)!r})"
    if missing:
        return (f"{head}; {kept}; missing: {', '.join(missing)}. Run the same command with --resume to finish "
                "the missing tile sizes, or with --overwrite instead of --resume to start again.")
    return (f"{head}; {kept}; the metrics plot and the final manifest are missing. Run the same command with "
            "--resume to write them.")


def _default_cache_dir() -> Path:
    from .cluster import default_cache_dir

    return default_cache_dir()


def _part_entry(p: Part, done: bool) -> dict:
    entry = {"tile_size": p.size, "tile_px": p.tile_px, "stride_px": p.stride, "tiles": int(len(p.rows)),
             "tiles_total": p.tiles_total, "ks": sorted(p.labels) if done else p.ks, "skipped": p.skipped,
             "done": done}
    info = {k: v for k, v in p.info.items() if k not in entry}
    entry.update(info)
    if done:
        entry["metrics"] = [{"k": k, **p.metrics[k]} for k in sorted(p.metrics)]
    return entry


def _run_part(part: Part, params: SweepParams, extractor, checksum: str, cache_dir: Path, progress,
              timings: dict, outputs: SweepOutputs, outs, fresh_file: bool, session=None, plots=None,
              settle=None) -> list:
    """Compute one tile size and write its layer to the temporary names of ``outs``; its two plots are handed to
    ``plots`` (a ``BackgroundPlots``), to the same temporary names, and their jobs returned. ``settle``: called
    before the layer is written (the previous tile size's commit). The caller commits the part together with
    the metrics table and the manifest."""
    from ..io import write_gpkg_chunks
    from ..raster.tiling import TiledRaster
    from .cluster import tile_frames

    plots = plots or BackgroundPlots(inline=True)
    stage = f"tiles_{part.size}"
    progress(stage, 0, len(part.ks), f"{len(part.rows)} tiles, K {', '.join(map(str, part.ks))}")
    with TiledRaster(params.raster, part.size, params.overlap, params.edge, params.bands, seed=params.seed) as tiled:
        if params.method == "kmeans":
            result = _kmeans_part(part, tiled, params, extractor, checksum, cache_dir, progress, timings, session,
                                  one_thread=plots.start)
        else:
            result = _deepcluster_part(part, tiled, params, progress, timings, session)
        columns = _finish_part(part, result, params, progress, timings)
        t = time.perf_counter()
        progress("plots", 0, 2, f"{part.size} lineage and PCA")
        scores = result["scores_by_k"] or result["scores"]
        if isinstance(scores, dict):
            scores = {k: scores[k] for k in part.labels}
        drawing = [
            plots.draw("lineage", outs.temp(outputs.lineage[part.size]), part.labels,
                       title=f"{Path(params.raster).name}: cluster lineage across K, {part.size} tiles "
                             f"({len(part.rows)})"),
            plots.draw("pca", outs.temp(outputs.pca[part.size]), scores, part.labels,
                       title=f"{part.size} tiles: PCA of the features", seed=params.seed)]
        timings["plots"] = round(time.perf_counter() - t, 3)
        if settle is not None:
            settle()
        t = time.perf_counter()
        progress("write", 0, 1, f"layer {part.layer}")
        tmp = outs.temp(outputs.gpkg)
        if not fresh_file and outputs.gpkg.exists():
            shutil.copyfile(outputs.gpkg, tmp)
        write_gpkg_chunks(tmp, part.layer, tile_frames(tiled, part.rows, part.cols, columns), tiled.crs.to_wkt())
        timings["write"] = round(time.perf_counter() - t, 3)
    return drawing
