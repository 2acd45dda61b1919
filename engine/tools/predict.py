"""Assign the tiles of another raster to the clusters of a saved model (the ``predict`` tool).

Another city or another date goes into the same clusters only if its tiles
look like the model's tiles: same bands, and about the same ground size per
pixel (a CNN's features depend on scale). ``predict`` refuses a raster that
differs, with the numbers; ``--resample`` instead cuts tiles of the model's
ground size and resizes them to the model's pixel size. Values are stretched
with the new raster's own 2-98 % range, as the model's raster was with its
own, so a brighter date is not a different place.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import BadInput
from ..features.extract import ResizedExtractor
from ..progress import Progress, committing
from . import check_params, check_vector_inputs, locked_outputs, study_params


@dataclass
class PredictParams:
    """A ``predict`` run: the fields and defaults ``contract.tools.PREDICT`` declares."""

    model: str
    raster: str
    out: str
    resample: bool = False
    form: str | None = None               # footprints of this raster, when the model was made with --form
    res_tolerance: float = 0.1           # accepted difference in ground pixel size (10 %)
    device: str = "auto"
    precision: str = "auto"
    batch_size: int | None = None
    extent: str | None = None
    area: str | None = None
    quicklook: bool = True
    dask: str | None = None               # 'local:N' or 'tcp://host:port': features and assignment on Dask
    resume: bool = False                  # with dask: keep the partitions an interrupted run finished
    overwrite: bool = False


def check_compatible(model, raster: str, resample: bool, tolerance: float) -> dict:
    """Band count and resolution checks; returns how to tile (size text, resize px or None)."""
    from ..raster.tiling import ground_pixel_size, inspect_raster

    info = inspect_raster(raster)
    t = model.tiling
    if info.count != t["n_bands"]:
        raise BadInput(
            f"raster {raster!r} has {info.count} band(s) but the model was made for {t['n_bands']}-band imagery "
            f"(bands {t['bands']} used); its features would mean something else. Use a raster of the same "
            "kind of sensor, or cluster this raster afresh with `cluster`.")
    model_res = t.get("ground_pixel_m")
    here = ground_pixel_size(raster)
    ratio = here / model_res if model_res else 1.0
    plan = {"tile_size": t["tile_size"], "overlap": t["overlap"], "resize_px": None,
            "ground_pixel_m": here, "model_ground_pixel_m": model_res, "resolution_ratio": ratio}
    if abs(ratio - 1.0) > tolerance:
        if not resample:
            raise BadInput(
                f"raster {raster!r} has {here:.3g} m pixels but the model was made on {model_res:.3g} m pixels "
                f"({ratio:.2f}x, tolerance {tolerance:.0%}); tiles would show the ground at another scale. "
                "Add --resample to cut tiles of the model's ground size and resize them, or raise "
                "--res-tolerance.")
        ground = t["tile_px"] * model_res
        overlap = (t["tile_px"] - t["stride_px"]) * model_res
        plan.update(tile_size=f"{ground:.6g}m", overlap=f"{overlap:.6g}m", resize_px=t["tile_px"])
    return plan


def run(params: PredictParams, progress: Progress | None = None) -> dict:
    """Run the ``predict`` tool; returns the manifest (also written to disk).

    The declared checks and the --area file first; then the outputs are locked (one writer per output)
    before the run looks whether they exist."""
    from .cluster import RunOutputs

    check_params("predict", params)
    check_vector_inputs("predict", params)
    params = study_params("predict", params)
    if params.form:                    # a building model as --form: loaded whole, and made for this raster
        from .formsource import check_form

        check_form(params.form, params.raster)
    progress = progress or Progress("none")
    outputs = RunOutputs.for_out(params.out, params.quicklook, model=False)
    with locked_outputs(outputs.paths()):
        return _run(params, progress, outputs)


def _run(params: PredictParams, progress, outputs) -> dict:
    from ..clustering.modelfile import load_model
    from ..distributed.session import dask_session
    from ..io import OutputSet, sha256_file, versions, write_json
    from ..raster.tiling import TiledRaster
    from .cluster import Laps, input_record, select_tiles, write_tile_outputs

    lap = Laps()
    outset = OutputSet(outputs.paths(), overwrite=params.overwrite)
    progress("open", 0, 0, f"loading {params.model}")
    model = load_model(params.model)
    joiner = model.form
    if joiner is not None and not params.form:
        raise BadInput(f"model {params.model!r} was made with --form (building morphometrics joined to the CNN "
                       "features): give --form with the building footprints of this raster, or a building "
                       "model from train-seg that maps them.", param="form")
    if joiner is None and params.form:
        raise BadInput(f"--form: model {params.model!r} was made without --form, so its clusters do not use "
                       "footprints; drop --form (or make the model with `cluster --form`).", param="form")
    plan = check_compatible(model, params.raster, params.resample, params.res_tolerance)
    t = model.tiling
    import tempfile

    with outset, TiledRaster(params.raster, plan["tile_size"], plan["overlap"], t["edge"], t["bands"]) as tiled, \
            tempfile.TemporaryDirectory(prefix="urbanform-") as workdir, \
            dask_session(params.dask, progress) as session:
        if tiled.grid.size != t["tile_px"]:      # metre tiles on another resolution: back to the model's pixels
            plan["resize_px"] = t["tile_px"]
        extractor = _extractor(params, model, plan["resize_px"], session)
        lap("open")
        rows, cols, valid = select_tiles(tiled, t["min_valid"], params.extent, params.area, progress,
                                         params.raster)
        checksum = sha256_file(params.raster)
        form = form_source = None
        if joiner is not None:        # footprints, or the buildings a model maps (cached: engine.tools.formsource)
            from ..clustering.formjoin import tile_form
            from .cluster import default_cache_dir
            from .formsource import form_footprints

            warnings: list = []
            footprints, form_source = form_footprints(params.form, params.raster, raster_sha256=checksum,
                                                      cache_dir=default_cache_dir(), device=params.device,
                                                      precision=params.precision, progress=progress)
            form = tile_form(tiled, rows, cols, footprints, "--form", warnings)
            for w in warnings:
                progress("warning", 1, 1, w)
        lap("scan")
        progress("features", 0, len(rows), f"{model.backbone} on {extractor.device.type} ({extractor.precision})")
        feats = _features(params, tiled, rows, cols, extractor, checksum, Path(workdir) / "features.npy", progress,
                          session)
        lap("features")
        progress("cluster", 0, 1, f"assigning to the model's K={model.k} clusters")
        if form is not None:
            labels, dist, scores = model.kmeans.assign(joiner.transform(feats, form))
        elif session is not None:
            from ..distributed.features import assign

            labels, dist, scores = assign(session, model.kmeans, feats.path, len(rows), progress)
        else:
            labels, dist, scores = model.kmeans.assign(feats)
        progress("cluster", 1, 1)
        lap("cluster")
        title = f"{Path(params.raster).name}: predicted with {Path(params.model).name}, K={model.k}"
        write_tile_outputs(outset, outputs, tiled, rows, cols, valid, labels, dist, scores, model.k, title, progress)
        manifest = {
            "tool": "predict",
            "parameters": asdict(params),
            "model": {"path": os.path.abspath(params.model), "sha256": sha256_file(params.model),
                      "method": model.method, "backbone": model.backbone, "k": model.k, "tiling": t,
                      "pool": model.pool, "cnn_px": model.cnn_px, "depth_weights": model.depth_weights,
                      "form": joiner is not None,
                      "form_source": (model.meta.get("features") or {}).get("form_source"),
                      "trained_on": model.meta.get("raster")},
            "form_source": form_source,
            "inputs": input_record(params.raster, tiled, checksum),
            "tiling": {**{k: v for k, v in plan.items()}, "tile_px": tiled.grid.size,
                       "tiles_valid": int(len(rows)), "warped": tiled.warped,
                       "stretch": tiled.stretch.as_list() if tiled.stretch else None},
            "clustering": {"method": model.method, "k": model.k,
                           "cluster_sizes": np.bincount(labels, minlength=model.k).tolist(),
                           "mean_distance": float(dist.mean())},
            "features": {"device": str(extractor.device), "precision": extractor.precision},
            "outputs": {k: str(v) for k, v in asdict(outputs).items() if v is not None},
            "versions": versions(),
        }
        if session is not None:
            manifest["dask"] = session.record()
        manifest["timings_s"] = lap.total()
        write_json(outset.temp(outputs.manifest), manifest)
        with committing():
            outset.commit()
        progress("write", 4, 4, f"wrote {outputs.gpkg}")
    return manifest


def _extractor(params: PredictParams, model, resize_px, session):
    """The model's CNN: here (seen through a resize for --resample), or as the workers of ``session`` run it."""
    if session is None:
        from ..features.extract import FeatureExtractor

        extractor = FeatureExtractor(model.backbone, "none", params.device, params.precision, sobel=model.sobel,
                                     state_dict=model.network, pool=model.pool, cnn_px=model.cnn_px,
                                     depth_weights=model.depth_weights)
        return ResizedExtractor(extractor, resize_px) if resize_px else extractor
    from ..distributed.features import RemoteExtractor
    from ..distributed.worker import ExtractorSpec

    spec = ExtractorSpec(model.backbone, "none", params.device, params.precision, sobel=model.sobel,
                         model_file=os.path.abspath(params.model), resize_px=resize_px, pool=model.pool,
                         cnn_px=model.cnn_px, depth_weights=model.depth_weights)
    return RemoteExtractor(session, spec, state_dict=model.network)


def _features(params: PredictParams, tiled, rows, cols, extractor, checksum: str, path: Path, progress, session):
    """The features of the tiles in the file ``path``: here, or on the workers of ``session`` through a store in
    the feature cache folder (kept when the run stops, for --resume; removed when it ends)."""
    from ..io import NpyFile

    if session is None:
        from ..features.extract import extract_features

        feats = NpyFile(path, shape=(len(rows), extractor.dim))
        extract_features(tiled, rows, cols, extractor, feats, batch_size=params.batch_size,
                         progress=progress.stage("features"))
        return feats
    from ..distributed.features import compute_features
    from ..io.cache import prune_run_stores
    from .cluster import default_cache_dir, raster_spec

    key = _store_key(params, tiled, extractor, checksum, rows, cols)
    prune_run_stores(default_cache_dir() / "parts", key, progress, "features")
    batch = extractor.batch_size(tiled.grid.size, params.batch_size)
    return compute_features(session, raster_spec(tiled, 0), extractor, rows, cols, batch,
                            default_cache_dir() / "parts" / key, path, progress, resume=params.resume,
                            store_param=None)


def _store_key(params: PredictParams, tiled, extractor, checksum: str, rows, cols) -> str:
    """What decides a predict run's features: the raster, the tiles, the model file, the device."""
    import hashlib
    import json

    from ..io import sha256_file

    g = tiled.grid
    ident = {"tool": "predict", "raster": checksum, "model": sha256_file(params.model), "size": g.size,
             "stride": g.stride, "edge": g.edge, "bands": tiled.bands,
             "resize": extractor.worker_spec.resize_px, "device": extractor.device.type,
             "precision": extractor.precision,
             "positions": hashlib.sha256(np.asarray(rows, np.int64).tobytes()
                                         + np.asarray(cols, np.int64).tobytes()).hexdigest()}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:32]


run_predict = run
