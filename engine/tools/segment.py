"""The segment tool: building masks, probabilities and polygons from a trained U-Net, streamed.

``run(SegmentParams(...), progress)`` checks the inputs (as ``contract.tools.SEGMENT``
declares them, then the model's chip against the overlap), names the files
after OUT.gpkg (OUT_mask.tif, OUT_prob.tif, OUT_manifest.json), and commits
them with the manifest, atomically; the blended, streamed inference and the
polygons are ``engine.segmentation.infer``'s.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, fields
from pathlib import Path

from ..contract import problems as P
from ..contract.outputs import segment_outputs
from ..contract.tools import SEG_CHIP_MULTIPLE
from ..errors import BadInput
from ..progress import committing
from . import check_params, locked_outputs, study_params


@dataclass
class SegmentParams:
    """A ``segment`` run: the fields and defaults ``contract.tools.SEGMENT`` declares (``model`` may also be a
    (network, meta) pair already in memory, from Python)."""

    raster: str
    model: object                 # MODEL.pt path, or (torch module, meta dict) for a model already in memory
    out: str
    overlap: int | None = None          # None: a quarter of the chip (64 px for 256 px chips)
    threshold: "float | None" = None    # None: the model's (chosen on its validation blocks), else 0.5
    probability: bool = False
    tta: bool = False                   # average over the window and its 3 flips
    min_area: float = 4.0
    simplify: float = 0.5
    regularize: bool = False
    batch_size: "int | None" = None
    device: str = "auto"
    precision: str = "auto"
    overwrite: bool = False
    resample: bool = False
    chip: "int | None" = None     # default: the model's training chip (meta['chip']), else 256
    block: int = 512              # polygonisation block (px): rows x width bool held at a time
    dask: "str | None" = None     # 'local:N' or 'tcp://host:port': bands of rows on Dask
    resume: bool = False          # with dask: keep the bands an interrupted run finished


def output_paths(out: "str | Path", probability: bool = True) -> dict[str, Path]:
    """OUT.gpkg, OUT_mask.tif, OUT_prob.tif (with ``probability``), OUT_manifest.json: ``contract.tools.SEGMENT``'s."""
    return segment_outputs(out, probability)


def run(params: SegmentParams, progress=None) -> dict:
    """Run the ``segment`` tool; returns the manifest (also written to OUT_manifest.json). The outputs are
    locked (one writer per output) before the run looks whether they exist."""
    from ..distributed.session import dask_session
    from ..segmentation.infer import segment_env

    check_params("segment", params)
    params = study_params("segment", params)
    if params.dask and not isinstance(params.model, (str, os.PathLike)):
        raise BadInput("--dask: the workers load the model from its file; give the model as a path.", param="model")
    progress = progress or (lambda *a, **k: None)
    paths = output_paths(params.out, params.probability)
    with locked_outputs(list(paths.values())), segment_env(), dask_session(params.dask, progress) as session:
        return _run(params, progress, session)


run_segment = run


def _run(params: SegmentParams, progress, session=None) -> dict:
    from ..features.extract import choose_device, choose_precision
    from ..io import OutputSet, partial_path, versions, write_json
    from ..segmentation.infer import Reader, Runner, load_model, segment_raster

    t_start = time.perf_counter()
    paths = output_paths(params.out, params.probability)
    outset = OutputSet(list(paths.values()), overwrite=params.overwrite)     # (under the caller's lock)
    try:
        net, meta = load_model(params.model)
    except BadInput as exc:
        if exc.param:
            raise
        # load_seg_model says "model 'x.pt' ..."; segment's parameter is the flag --model
        msg = str(exc)
        msg = "--" + msg if msg.startswith("model ") else msg
        code = P.BAD_FORMAT if os.path.exists(str(params.model)) else P.NOT_FOUND
        raise BadInput(msg, param="model", code=code) from None
    chip = int(params.chip or meta.get("chip") or 256)
    if chip % SEG_CHIP_MULTIPLE or chip < SEG_CHIP_MULTIPLE:
        raise BadInput(f"the model's chip {chip} px is not a multiple of {SEG_CHIP_MULTIPLE} (the U-Net's "
                       "downsampling); give another model.", param="model")
    overlap = chip // 4 if params.overlap is None else int(params.overlap)
    if overlap > chip // 2:
        raise BadInput(f"{overlap} px is more than half the model's chip ({chip // 2} px of {chip}); give a "
                       "smaller overlap.", param="overlap", code=P.OUT_OF_RANGE)
    if session is None:
        device = choose_device(params.device)
        precision = choose_precision(device, params.precision)
    else:                                   # the workers' device
        import torch

        from ..distributed.worker import describe_device

        found = session.call(describe_device, params.device, params.precision)
        device, precision = torch.device(found["device"]), found["precision"]
    batch = int(params.batch_size or (32 if device.type == "cuda" else 8))
    reader = Reader(str(params.raster), meta, params.resample)
    try:
        with outset as outs:
            targets = {"gpkg": outs.temp(paths["gpkg"]), "mask": outs.temp(paths["mask"]),
                       "staging": partial_path(paths["mask"], "-stage"),
                       "prob": outs.temp(paths["prob"]) if params.probability else None}
            threshold = float(meta.get("threshold", 0.5)) if params.threshold is None else params.threshold
            settings = {"threshold": threshold, "min_area": params.min_area, "simplify": params.simplify,
                        "regularize": params.regularize}
            if session is None:
                runner = Runner(net, device, precision, batch, tta=params.tta)
                counts = segment_raster(reader, runner, chip, overlap, **targets, **settings, block=params.block,
                                        progress=progress)
            else:
                counts = _segment_on_dask(session, params, reader, chip, overlap, device, precision, batch,
                                          targets, settings, progress)
            W, H, t_inf = reader.width, reader.height, counts["inference_s"]
            manifest = {
                "tool": "segment",
                "params": {f.name: (str(getattr(params, f.name)) if f.name in ("raster", "out")
                                    else getattr(params, f.name)) for f in fields(params) if f.name != "model"},
                "model": str(params.model) if not isinstance(params.model, (tuple, list)) else "<in memory>",
                "model_meta": {k: meta.get(k) for k in ("encoder", "bands", "n_bands", "pixel_size_m", "chip",
                                                        "val_iou") if k in meta},
                "chip": chip, "overlap": overlap, "stride": chip - overlap, "threshold": threshold,
                "batch_size": batch if session is not None else runner.batch,
                "device": str(device), "precision": precision, "resampled": reader.resampled,
                "width": W, "height": H, "pixel_size_m": reader.pixel_size_m,
                "n_buildings": counts["n_buildings"], "building_px": counts["building_px"],
                "valid_px": counts["valid_px"],
                "outputs": {k: str(v) for k, v in paths.items()},
                "timings_s": {"inference_and_polygons": round(t_inf, 3),
                              "total": round(time.perf_counter() - t_start, 3)},
                "mpx_per_s": round(W * H / 1e6 / max(t_inf, 1e-9), 3),
                "versions": versions(),
            }
            if session is not None:
                manifest["dask"] = session.record()
            write_json(outs.temp(paths["manifest"]), manifest)
            with committing():
                outs.commit()
            progress("write", 1, 1, "done")
    finally:
        reader.close()
    return manifest


def _segment_on_dask(session, params: SegmentParams, reader, chip: int, overlap: int, device, precision: str,
                     batch: int, targets: dict, settings: dict, progress) -> dict:
    """``segment_raster``'s work in bands of rows on the workers of ``session`` (``engine.distributed.segment``),
    through a store in the cache folder that ``--resume`` finds again (named after everything that decides
    the result)."""
    import hashlib
    import json

    from ..distributed.partitions import BAND_BLOCKS, row_bands
    from ..distributed.segment import SegmentJob, segment_on_dask
    from ..io.cache import prune_run_stores
    from .cluster import default_cache_dir

    def stamp(path) -> list:
        st = os.stat(path)
        return [os.path.abspath(path), st.st_size, st.st_mtime_ns]

    ident = {"raster": stamp(params.raster), "model": stamp(params.model), "resample": params.resample,
             "chip": chip, "overlap": overlap, "probability": params.probability, "block": params.block,
             "band_blocks": BAND_BLOCKS, "tta": params.tta, "device": device.type, "precision": precision,
             "batch": batch, **settings}
    key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:32]
    stores = default_cache_dir().parent / "segment"
    prune_run_stores(stores, key, progress, "segment")
    job = SegmentJob(os.path.abspath(params.raster), os.path.abspath(params.model), params.resample, chip, overlap,
                     store=str(stores / key), block=params.block,
                     device=device.type, precision=precision, batch=batch, probability=params.probability,
                     threads=session.torch_threads, tta=params.tta, **settings)
    ds = reader.ds
    return segment_on_dask(session, job, row_bands(reader.height, params.block), width=reader.width,
                           height=reader.height, crs=ds.crs, transform=ds.transform, resume=params.resume,
                           progress=progress, **targets)
