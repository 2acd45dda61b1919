"""End-to-end runs: the ``cluster`` tool from a raster path to files on disk.

``run_cluster`` checks every input before spending work, reads the raster
window by window, computes (or reuses cached) CNN features, clusters them and
writes the GeoPackage, the cluster GeoTIFF, a quicklook PNG and the manifest
atomically. The CLI and the plugin both call it (the plugin via the CLI).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..contract import defaults
from ..contract.outputs import checkpoint_path, cluster_outputs
from ..contract.params import output_files
from ..contract.tools import CLUSTER, STATS_OUTPUTS
from ..errors import BadInput, Cancelled
from ..io import NpyFile, OutputSet, atomic_path
from ..io.cache import default_cache_dir
from ..progress import Progress, committing
from . import check_params, check_vector_inputs, locked_outputs, param_values, study_params
from .stats import StatsInputs


@dataclass
class ClusterParams(StatsInputs):
    """Everything that decides a ``cluster`` run (the manifest records all of it): the fields and defaults
    ``contract.tools.CLUSTER`` declares. The statistics inputs (``StatsInputs``, keyword-only) make the run add
    the urban-form statistics, as the CLI's options do."""

    raster: str
    out: str
    k: int = 8
    tile_size: str = "64px"
    overlap: str = "0px"
    edge: str = "drop"
    min_valid: float = 0.5
    bands: str | None = None
    backbone: str = defaults.DEFAULT_BACKBONE
    weights: str = defaults.DEFAULT_WEIGHTS
    device: str = "auto"
    precision: str = "auto"
    batch_size: int | None = None
    seed: int = 0
    pca_dims: str = "auto"
    whiten: bool = False
    overwrite: bool = False
    cache_dir: str | None = None
    use_cache: bool = True
    quicklook: bool = True
    extent: str | None = None
    area: str | None = None
    method: str = "kmeans"
    sobel: bool = False
    pool: str = defaults.DEFAULT_POOL     # k-means feature recipe (contract.tools.FEATURES)
    cnn_px: "int | str" = defaults.DEFAULT_CNN_PX
    form: str | None = None               # footprints whose morphometrics join the CNN features
    form_weight: float = 2.0
    save_model: str | None = None         # default OUT_model.pt
    # DeepCluster training
    epochs: int = 5
    lr: str = "auto"
    momentum: float = 0.9
    weight_decay: float = 1e-5
    train_batch_size: int = 64
    freeze: str = "auto"
    crops_per_tile: int = 8
    patience: int = 2
    augment: str = defaults.DEFAULT_AUGMENT
    resume: bool = False
    dask: str | None = None               # 'local:N' or 'tcp://host:port': features and assignment on Dask


@dataclass
class RunOutputs:
    """The files of one run, all named after OUT.gpkg as ``contract.tools.CLUSTER`` declares (the model may go
    elsewhere)."""

    gpkg: Path
    tif: Path
    manifest: Path
    quicklook: Path | None
    model: Path | None

    @classmethod
    def for_out(cls, out: "str | Path", quicklook: bool = True, model: "str | Path | None | bool" = True
                ) -> "RunOutputs":
        """``model``: True for OUT_model.pt, a path, or False/None for no model file (predict)."""
        names = cluster_outputs(out)
        if model is True:
            model_path = names["model"]
        else:
            model_path = Path(model) if model else None
        return cls(names["gpkg"], names["tif"], names["manifest"], names["quicklook"] if quicklook else None,
                   model_path)

    @property
    def checkpoint(self) -> Path:
        """DeepCluster's per-epoch checkpoint: kept when a run is interrupted, removed when it succeeds."""
        return checkpoint_path(self.gpkg)

    def paths(self) -> list[Path]:
        return [p for p in (self.gpkg, self.tif, self.manifest, self.quicklook, self.model) if p is not None]


def building_evaluation(buildings, labels, coverage, warnings: list) -> dict:
    """The manifest's ``evaluation``: how much of the building coverage per tile the clusters explain."""
    from ..stats.measures import eta_squared

    return {"buildings": os.path.abspath(buildings), "eta2_bldg_cov": eta_squared(labels, coverage),
            "mean_bldg_cov": float(coverage.mean()), "warnings": warnings}


def feature_recipe(params) -> dict:
    """How tile features are made from the CNN (``pool``, ``cnn_px``: None = native, ``depth_weights``: the
    backbone's weights of --pool multi's depths, None with 'last'): the params' for k-means (a params value
    without them: the last block at native size), DeepCluster's own (last, native)."""
    if getattr(params, "method", "kmeans") == "deepcluster":
        return {"pool": "last", "cnn_px": None, "depth_weights": None}
    from ..features.backbones import backbone_spec

    px, pool = getattr(params, "cnn_px", None), getattr(params, "pool", "last")
    return {"pool": pool, "cnn_px": None if px in (None, "native") else int(px),
            "depth_weights": backbone_spec(params.backbone).pool_weights(pool)}


def feature_key(checksum: str, tiled, extractor, params: ClusterParams, rows, cols) -> str:
    """Cache key: the raster's content, the tiles kept and everything that changes their features."""
    g = tiled.grid
    ident = {
        "positions": hashlib.sha256(np.asarray(rows, np.int64).tobytes() + np.asarray(cols, np.int64).tobytes())
        .hexdigest(),
        "raster": checksum, "size": g.size, "stride": g.stride, "edge": g.edge, "bands": tiled.bands,
        "warp": str(tiled.working_crs) if tiled.warped else None,
        "stretch": tiled.stretch.as_list() if tiled.stretch else None,
        "backbone": params.backbone, "weights": _weights_id(extractor.weights_path, params.seed),
        "precision": extractor.precision, "device": extractor.device.type, "v": 2,
        "sobel": bool(getattr(extractor, "sobel", False)),
        "state": getattr(extractor, "state_digest", None),     # a network given as a state dict (classify --model)
        "pool": getattr(extractor, "pool", "last"), "cnn_px": getattr(extractor, "cnn_px", None),
        "depth_weights": getattr(extractor, "depth_weights", None),
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:32]


def _weights_id(path, seed) -> str:
    if path is None:
        return f"random-seed{seed}"
    st = os.stat(path)
    return f"{Path(path).resolve()}:{st.st_size}:{int(st.st_mtime)}"


def _compute_features(tiled, rows, cols, extractor, params, cache_dir: Path, key: str, progress, session=None):
    """Features of the valid tiles as an ``NpyFile``, from the cache when possible; with a Dask ``session`` (and
    a ``RemoteExtractor``) computed on its workers through the feature store ``CACHE/parts/KEY``, whose finished
    partitions ``params.resume`` reuses."""
    from ..io import cache

    budget = cache.budget_bytes()            # (a bad value was refused by check_params, before any work)
    cache_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_parts(cache_dir)
    final = cache_dir / f"{key}.npy"
    if params.use_cache and final.exists():
        try:
            feats = NpyFile(final)
        except (OSError, ValueError):
            feats = None
        if feats is not None and feats.shape == (len(rows), extractor.dim):
            cache.touch(final)
            progress("features", len(rows), len(rows), "reused cached features")
            return feats, True, final
    if session is not None:
        from ..distributed.features import compute_features

        cache.prune_run_stores(cache_dir / "parts", key, progress, "features")
        batch = extractor.batch_size(tiled.grid.size, params.batch_size)
        feats = compute_features(session, raster_spec(tiled, params.seed), extractor, rows, cols, batch,
                                 cache_dir / "parts" / key, final, progress, resume=params.resume)
    else:
        from ..features.extract import extract_features

        with atomic_path(final) as tmp:      # .{key}.part-{pid}.npy, what _remove_stale_parts looks for
            out = NpyFile(tmp, shape=(len(rows), extractor.dim))
            extract_features(tiled, rows, cols, extractor, out, batch_size=params.batch_size,
                             progress=progress.stage("features"))
        feats = NpyFile(final)
    trim_cache(cache_dir, budget, progress, len(rows))
    return feats, False, final


def trim_cache(cache_dir: Path, budget: "int | None", progress, n: int) -> None:
    """Keep the feature cache under its budget (``engine.io.cache``) after a new file, saying what went."""
    from ..io import cache

    removed = cache.trim(cache_dir, budget)
    if removed:
        progress("features", n, n, cache.trimmed_message(removed, budget))


def raster_spec(tiled, seed: int):
    """How a worker opens ``tiled`` (``engine.distributed.worker.RasterSpec``): the same grid and stretch."""
    from ..distributed.worker import RasterSpec

    return RasterSpec(tiled.path, str(tiled.tile_size), str(tiled.overlap_len), tiled.edge, tuple(tiled.bands), seed)


def feature_extractor(params, session=None):
    """The CNN of a cluster or sweep run: here, or as the workers of a Dask ``session`` run it."""
    if session is None:
        from ..features.extract import FeatureExtractor

        return FeatureExtractor(params.backbone, params.weights, params.device, params.precision, seed=params.seed,
                                sobel=params.sobel, **feature_recipe(params))
    from ..distributed.features import RemoteExtractor
    from ..distributed.worker import ExtractorSpec

    return RemoteExtractor(session, ExtractorSpec(params.backbone, params.weights, params.device, params.precision,
                                                  params.seed, params.sobel, **feature_recipe(params)))


def deepcluster_on_dask(session, tiled, rows, cols, params, workdir):
    """DeepCluster's features of every epoch computed by the workers of a Dask ``session`` (the training stays
    in this process): ``engine.distributed.features.EpochFeatures``, its networks and partitions in a folder
    of the feature cache (``--cache-dir``), which the workers must see."""
    import uuid

    from ..distributed.features import EpochFeatures, RemoteExtractor
    from ..distributed.worker import ExtractorSpec

    remote = RemoteExtractor(session, ExtractorSpec(params.backbone, params.weights, params.device, params.precision,
                                                    params.seed, params.sobel))
    cache_dir = Path(params.cache_dir) if params.cache_dir else default_cache_dir()
    return EpochFeatures(session, raster_spec(tiled, params.seed), remote.worker_spec, remote.dim, rows, cols,
                         remote.batch_size(tiled.grid.size, params.batch_size),
                         cache_dir / "parts" / f"deepcluster-{uuid.uuid4().hex[:12]}", workdir)


def _remove_stale_parts(folder: Path) -> None:
    """Delete partial feature files left by engine processes that were killed (their pid is gone)."""
    for part in folder.glob(".*.part-*.npy"):
        try:
            pid = int(part.stem.rsplit("-", 1)[1])
            os.kill(pid, 0)
        except ProcessLookupError:
            part.unlink(missing_ok=True)
        except (ValueError, PermissionError, OSError):
            continue


def tile_frames(tiled, rows, cols, columns: dict, chunk: int = 20000):
    """GeoDataFrames of tile polygons in the raster's CRS, ``chunk`` tiles at a time."""
    import geopandas as gpd
    import shapely

    g = tiled.grid
    transformer = None
    if tiled.warped:
        from pyproj import Transformer

        transformer = Transformer.from_crs(tiled.working_crs, tiled.crs, always_xy=True)
    for s in range(0, len(rows), chunk):
        r, c = rows[s: s + chunk], cols[s: s + chunk]
        corners = g.corners(r, c)
        if transformer is not None:
            x, y = transformer.transform(corners[..., 0], corners[..., 1])
            corners = np.stack([x, y], axis=-1)
        polys = shapely.polygons(np.concatenate([corners, corners[:, :1]], axis=1))
        data = {name: values[s: s + chunk] for name, values in columns.items()}
        yield gpd.GeoDataFrame(data, geometry=polys, crs=tiled.crs.to_wkt())


class Laps:
    """Wall-clock seconds per stage, for the manifest."""

    def __init__(self):
        self.timings: dict[str, float] = {}
        self._start = self._t = time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = round(now - self._t, 3)
        self._t = now

    def total(self) -> dict[str, float]:
        self.timings["total"] = round(time.perf_counter() - self._start, 3)
        return self.timings


def select_tiles(tiled, min_valid: float, extent, area, progress, raster: str, inside: "np.ndarray | None" = None):
    """(rows, cols, valid fraction grid) of the tiles a run uses, or BadInput when there are none. ``inside``:
    the tiles inside ``extent`` and ``area`` (``tiles_inside``) when the caller has them already."""
    from ..raster.area import tiles_inside

    if inside is None:
        inside = tiles_inside(tiled, extent, area)
    if not inside.any():
        raise BadInput("no tile centre lies inside the --extent/--area limit; check that it overlaps the raster "
                       f"{raster!r} (the extent is in the raster's CRS).")
    g = tiled.grid
    progress("scan", 0, g.n_rows, f"{len(g)} tiles of {g.size} px")
    valid = tiled.valid_fraction(progress=progress.stage("scan"))
    keep = (valid >= min_valid) & inside
    if not keep.any():
        raise BadInput(f"every tile of {raster!r} (inside any area limit) has less than --min-valid "
                       f"{min_valid} valid pixels (best: {valid[inside].max():.2f}). "
                       "Lower --min-valid or check the nodata value.")
    rows, cols = np.nonzero(keep)
    return rows, cols, valid


def tile_polygons(tiled, rows, cols):
    """Tile squares in the working CRS (true ground metres when warped), as a shapely array."""
    import shapely

    corners = tiled.grid.corners(rows, cols)
    return shapely.polygons(np.concatenate([corners, corners[:, :1]], axis=1))


def building_coverage(tiled, rows, cols, buildings: str, warnings: list | None = None, missing_ok: bool = False):
    """Footprint share of each tile (computed in the working CRS); problems with the layer go to ``warnings``.
    No footprint on the tiles: BadInput, or None with ``missing_ok`` (one place of several)."""
    import shapely

    from ..stats.measures import bldg_cov, read_buildings

    b = read_buildings(buildings, tiled.working_crs, warnings=warnings)
    polys = tile_polygons(tiled, rows, cols)
    if not shapely.STRtree(b.values).query(polys, predicate="intersects").size:
        if missing_ok:
            return None
        raise BadInput(f"--buildings {buildings!r}: no footprint overlaps the tiles of the raster; "
                       "check that both cover the same place.")
    return bldg_cov(polys, b.values).to_numpy()


def write_tile_outputs(outset, outputs: RunOutputs, tiled, rows, cols, valid, labels, dist, scores, k: int,
                       title: str, progress, extra_columns: dict | None = None) -> None:
    """The tiles layer, the cluster GeoTIFF and the quicklook, into ``outset``'s temporary names."""
    from ..io import write_cluster_tif, write_gpkg_chunks
    from ..style import cluster_rgb

    g = tiled.grid
    progress("write", 0, 4, str(outputs.gpkg))
    columns = {
        "tile_id": (rows * g.n_cols + cols).astype(np.int64), "row": rows.astype(np.int32),
        "col": cols.astype(np.int32), "cluster": labels.astype(np.int32), "clust_dist": dist.astype(np.float32),
        "pc1": scores[:, 0].astype(np.float32), "pc2": scores[:, 1].astype(np.float32),
        "valid_frac": valid[rows, cols].astype(np.float32), **(extra_columns or {}),
    }
    write_gpkg_chunks(outset.temp(outputs.gpkg), "tiles", tile_frames(tiled, rows, cols, columns),
                      tiled.crs.to_wkt())
    progress("write", 1, 4)
    grid_labels = np.full(g.shape, -1, dtype=np.int32)
    grid_labels[rows, cols] = labels
    write_cluster_tif(outset.temp(outputs.tif), grid_labels, g.cell_transform(), tiled.working_crs,
                      [cluster_rgb(i) for i in range(k)])
    progress("write", 2, 4)
    if outputs.quicklook is not None:
        from ..clustering.quicklook import write_quicklook

        write_quicklook(outset.temp(outputs.quicklook), tiled, grid_labels, k, title=title)
    progress("write", 3, 4)


def tiling_settings(tiled, params) -> dict:
    """How tiles were cut and preprocessed: recorded in the manifest and the model file."""
    from ..raster.tiling import ground_pixel_size

    g = tiled.grid
    return {"tile_px": g.size, "stride_px": g.stride, "tile_size": str(params.tile_size),
            "overlap": str(params.overlap), "edge": g.edge, "min_valid": params.min_valid,
            "bands": tiled.bands, "n_bands": tiled.info.count, "dtype": tiled.info.dtype,
            "stretch": tiled.stretch.as_list() if tiled.stretch else None,
            "working_crs": tiled.working_crs.to_string(), "pixel_size_m": tiled.pixel_size_m,
            "ground_pixel_m": ground_pixel_size(tiled.path)}


def input_record(raster: str, tiled, checksum: str) -> dict:
    """What a manifest says about the input raster; for a VRT (a study) also the files it mosaics."""
    record = {"raster": os.path.abspath(raster), "sha256": checksum, "width": tiled.info.width,
              "height": tiled.info.height, "bands": tiled.info.count, "dtype": tiled.info.dtype,
              "crs": tiled.crs.to_string()}
    if str(raster).lower().endswith(".vrt"):
        from ..raster.study import vrt_scenes

        record["scenes"] = vrt_scenes(raster)
    return record


def run(params: ClusterParams, progress: Progress | None = None) -> dict:
    """Run the ``cluster`` tool (k-means or DeepCluster); returns the manifest (also written to disk).

    Every declared check (``contract.tools.CLUSTER``) comes first, before any work, and the vector inputs are
    opened and checked; then the run locks its outputs (one writer per output) before it looks whether they
    exist. With statistics inputs (buildings, roads, population, NIR band, NDVI raster) the ``stats`` tool
    runs on the new run too, as ``python -m engine cluster --buildings ...`` does, and the manifest returned
    is the one with the statistics; if they fail (or are cancelled), the run's files are removed (no run half
    with, half without them).
    """
    from .stats import check_statistics_inputs, statistics_params, wants_statistics

    from ..distributed.session import keep_sessions

    from .places import check_places, places_of, run_places

    check_params("cluster", params)
    check_vector_inputs("cluster", params)
    if params.form and params.method == "deepcluster":
        from ..contract.problems import BAD_CHOICE

        raise BadInput("--form joins building morphometrics to fixed CNN features before k-means; it works with "
                       "--method kmeans, not deepcluster. Drop --form or use --method kmeans.", param="form",
                       code=BAD_CHOICE)
    places = places_of(params, params.cache_dir or default_cache_dir())     # scenes far apart: several places
    if places:
        check_places(params, places)
    else:
        params = study_params("cluster", params)
        if params.form:                # a building model as --form: loaded whole, and made for this raster
            from .formsource import check_form

            check_form(params.form, params.raster)
    stats = wants_statistics(params)
    if stats:                      # before the features are computed and cached, not in the statistics step
        check_statistics_inputs(params, params.raster if isinstance(params.raster, (str, os.PathLike)) else None)
    progress = progress or Progress("none")
    outputs = RunOutputs.for_out(params.out, params.quicklook, params.save_model or True)
    stats_files = [path for key, path in output_files(CLUSTER, param_values(params)).items()
                   if key in {o.key for o in STATS_OUTPUTS}]
    with locked_outputs(outputs.paths() + stats_files), keep_sessions():     # (the statistics share the cluster)
        OutputSet(stats_files, overwrite=params.overwrite).check()
        committed: list[bool] = []
        try:
            if places:
                manifest = run_places(params, places, progress, outputs, final=not stats, committed=committed)
            else:
                manifest = _run_cluster(params, progress, outputs, final=not stats, committed=committed)
            if not stats:
                return manifest
            from .stats import run as run_stats

            return run_stats(statistics_params(params, params.out), progress)     # (the locks are held already)
        except BaseException as exc:
            if committed:                  # the statistics failed: remove the run they belong to
                for path in outputs.paths():
                    path.unlink(missing_ok=True)
            elif isinstance(exc, (Cancelled, KeyboardInterrupt)) and outputs.checkpoint.is_file():
                raise Cancelled(f"no output was written; the DeepCluster checkpoint {str(outputs.checkpoint)!r} "
                                "keeps the finished epochs: run the same command with --resume to continue, or "
                                "with --overwrite to start again.") from exc
            raise


run_cluster = run


def _run_cluster(params: ClusterParams, progress: Progress, outputs: RunOutputs, final: bool = True,
                 committed: "list | None" = None) -> dict:
    """The clustering, with the outputs locked by the caller. ``final``: its commit is the run's last (no
    statistics follow); ``committed`` gets an item once the files are in place."""
    from ..clustering.kmeans import KMeansTiles
    from ..clustering.modelfile import save_model
    from ..distributed.session import dask_session
    from ..io import sha256_file, versions, write_json
    from ..raster.tiling import TiledRaster

    lap = Laps()
    outset = OutputSet(outputs.paths(), overwrite=params.overwrite)
    deep = params.method == "deepcluster"
    _check_checkpoint(outputs.checkpoint, params, deep)
    progress("open", 0, 0, f"opening {params.raster}")
    with outset, TiledRaster(params.raster, params.tile_size, params.overlap, params.edge,
                             params.bands, seed=params.seed) as tiled, \
            tempfile.TemporaryDirectory(prefix="urbanform-") as workdir, \
            dask_session(params.dask, progress) as session:
        from ..features.backbones import backbone_spec
        from ..features.extract import check_cnn_input

        extractor = None if deep else feature_extractor(params, session)
        if deep:   # check the backbone, weights and device before the scan; DeepCluster builds its own
            from ..features.backbones import resolve_weights
            from ..features.extract import choose_device

            resolve_weights(backbone_spec(params.backbone), params.weights)
            choose_device(params.device)
        check_cnn_input(backbone_spec(params.backbone), feature_recipe(params)["cnn_px"], tiled.grid.size)
        lap("open")
        rows, cols, valid = select_tiles(tiled, params.min_valid, params.extent, params.area, progress,
                                         params.raster)
        if params.k > len(rows):
            from ..contract.problems import OUT_OF_RANGE

            raise BadInput(f"--k {params.k} is larger than the number of valid tiles ({len(rows)}). "
                           "Use a smaller K, a smaller tile size or a lower --min-valid.", param="k", code=OUT_OF_RANGE)
        layer_warnings: list[str] = []
        coverage = building_coverage(tiled, rows, cols, params.buildings, layer_warnings) if params.buildings \
            else None
        checksum = sha256_file(params.raster)
        form = form_source = None
        if params.form:       # footprints, or the buildings a model maps (cached: engine.tools.formsource)
            from ..clustering.formjoin import tile_form
            from .formsource import form_footprints

            footprints, form_source = form_footprints(
                params.form, params.raster, raster_sha256=checksum, progress=progress, device=params.device,
                precision=params.precision,
                cache_dir=(Path(params.cache_dir) if params.cache_dir else default_cache_dir())
                if params.use_cache else Path(workdir))
            form = tile_form(tiled, rows, cols, footprints, "--form", layer_warnings)
        for w in layer_warnings:
            progress("warning", 1, 1, w)
        lap("scan")

        clustering: dict = {"method": params.method, "k": params.k}
        assignment = None         # (labels, distances, scores) when fitting already computed them
        if deep:
            from ..clustering.deepcluster import DeepCluster

            est = DeepCluster(
                n_clusters=params.k, backbone=params.backbone, weights=params.weights, epochs=params.epochs,
                lr=params.lr, momentum=params.momentum, weight_decay=params.weight_decay,
                batch_size=params.train_batch_size, sobel=params.sobel, freeze=params.freeze,
                crops_per_tile=params.crops_per_tile, patience=params.patience, augment=params.augment,
                pca_dims=params.pca_dims,
                whiten=params.whiten, seed=params.seed, device=params.device, precision=params.precision,
                feature_batch_size=params.batch_size)
            on_dask = deepcluster_on_dask(session, tiled, rows, cols, params, workdir) if session else None
            try:
                est.fit(tiled, rows, cols, coverage=coverage, progress=progress, checkpoint=outputs.checkpoint,
                        resume=params.resume, workdir=workdir, features=on_dask)
            finally:
                if on_dask is not None:
                    on_dask.remove()
            km, feats, extractor = est.kmeans_, est.features_, est.extractor_
            network = est.network_state()
            clustering.update(history=est.history_, best_epoch=est.best_epoch_, stopped_early=est.stopped_early_,
                              training={k: getattr(params, k) for k in (
                                  "epochs", "lr", "momentum", "weight_decay", "train_batch_size", "freeze",
                                  "crops_per_tile", "patience", "sobel", "augment")})
            feature_info = {"cache_key": None, "cache_hit": False}
            lap("deepcluster")
        else:
            key = feature_key(checksum, tiled, extractor, params, rows, cols)
            cache_dir = Path(params.cache_dir) if params.cache_dir else default_cache_dir()
            if not params.use_cache:
                cache_dir = Path(workdir)
            progress("features", 0, len(rows),
                     f"{extractor.spec.name} on {extractor.device.type} ({extractor.precision})")
            feats, cache_hit, _ = _compute_features(tiled, rows, cols, extractor, params, cache_dir, key, progress,
                                                    session)
            feature_info = {"cache_key": key, "cache_hit": cache_hit}
            lap("features")
            progress("cluster", 0, 1, f"k-means, K={params.k}")
            joiner = None
            if form is not None:          # the morphometrics join the CNN features (in memory: n x (dim + 7))
                from ..clustering.formjoin import FormJoin

                joiner = FormJoin(params.form_weight).fit(feats, form)
                feats = joiner.transform(feats, form)
            km = KMeansTiles(params.k, params.pca_dims, params.whiten, params.seed)
            if session is not None and form is None:
                km.fit(feats)
            else:
                assignment = km.fit_assign(feats)
            network = extractor.model.state_dict()
        if assignment is not None:
            labels, dist, scores = assignment
        elif session is not None and form is None:
            from ..distributed.features import assign

            labels, dist, scores = assign(session, km, feats.path, len(rows), progress)
        else:
            labels, dist, scores = km.assign(feats)
        progress("cluster", 1, 1, f"{km.n_components_} PCA dims")
        lap("cluster")

        extra_columns = {"bldg_cov": coverage.astype(np.float32)} if coverage is not None else None
        title = f"{Path(params.raster).name}: {params.method}, K={params.k}, {tiled.grid.size} px tiles"
        write_tile_outputs(outset, outputs, tiled, rows, cols, valid, labels, dist, scores, params.k, title,
                           progress, extra_columns)
        settings = tiling_settings(tiled, params)
        counts = np.bincount(labels, minlength=params.k)
        clustering.update(pca_dims=km.n_components_, pca_dims_requested=params.pca_dims, whiten=params.whiten,
                          explained_variance=float(km.explained_variance_ratio_.sum()), inertia=km.inertia_,
                          cluster_sizes=counts.tolist())
        inputs = input_record(params.raster, tiled, checksum)          # (a study: its scenes too)
        recipe = {**feature_recipe(params), "form": joiner.get_state() if not deep and form is not None else None}
        save_model(outset.temp(outputs.model), km, network, backbone=params.backbone, sobel=params.sobel,
                   tiling=settings, method=params.method,
                   extra={"features": {**recipe, "form_source": form_source}, "clustering": clustering,
                          "weights": params.weights, "seed": params.seed,
                          "raster": os.path.abspath(params.raster), "sha256": checksum,
                          **({"scenes": inputs["scenes"]} if "scenes" in inputs else {})})
        lap("write")
        manifest = {
            "tool": "cluster",
            "parameters": asdict(params),
            "inputs": inputs,
            "tiling": {**settings, "backbone": params.backbone, "weights": params.weights,
                       "n_rows": tiled.grid.n_rows, "n_cols": tiled.grid.n_cols, "tiles_total": len(tiled.grid),
                       "tiles_valid": int(len(rows)), "warped": tiled.warped},
            "features": {"backbone": params.backbone, "dim": extractor.dim, "sobel": params.sobel, **recipe,
                         "form_file": os.path.abspath(params.form) if params.form else None,
                         "form_source": form_source,
                         "weights_file": str(extractor.weights_path) if extractor.weights_path else None,
                         "device": str(extractor.device), "precision": extractor.precision, **feature_info},
            "clustering": clustering,
            "seed": params.seed,
            "outputs": {k: str(v) for k, v in asdict(outputs).items() if v is not None},
            "versions": versions(),
        }
        if session is not None:
            manifest["dask"] = session.record()
        if coverage is not None:
            manifest["evaluation"] = building_evaluation(params.buildings, labels, coverage, layer_warnings)
        manifest["timings_s"] = lap.total()
        write_json(outset.temp(outputs.manifest), manifest)
        with committing(final):
            outset.commit()
            if committed is not None:
                committed.append(True)
            outputs.checkpoint.unlink(missing_ok=True)
        progress("write", 4, 4, f"wrote {outputs.gpkg}")
    return manifest


def _check_checkpoint(checkpoint: Path, params: ClusterParams, deep: bool) -> None:
    """A left-over checkpoint means an interrupted DeepCluster run: continue it or start again, never silently."""
    if params.resume and not deep and not params.dask:
        raise BadInput("--resume continues an interrupted DeepCluster run or --dask run; it needs --method "
                       "deepcluster or --dask.")
    if not deep:
        return
    if params.resume and not checkpoint.exists():
        raise BadInput(f"--resume: there is no checkpoint {checkpoint.name} next to --out; "
                       "run without --resume to start training.")
    if checkpoint.exists() and not params.resume:
        if not params.overwrite:
            raise BadInput(f"{checkpoint} holds an interrupted DeepCluster run: add --resume to continue it "
                           "or --overwrite to start again.")
        checkpoint.unlink()
