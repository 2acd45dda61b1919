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
from . import check_params, locked_outputs


@dataclass
class SegmentParams:
    """A ``segment`` run: the fields and defaults ``contract.tools.SEGMENT`` declares (``model`` may also be a
    (network, meta) pair already in memory, from Python)."""

    raster: str
    model: object                 # MODEL.pt path, or (torch module, meta dict) for a model already in memory
    out: str
    overlap: int | None = None          # None: a quarter of the chip (64 px for 256 px chips)
    threshold: float = 0.5
    probability: bool = False
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


def output_paths(out: "str | Path", probability: bool = True) -> dict[str, Path]:
    """OUT.gpkg, OUT_mask.tif, OUT_prob.tif (with ``probability``), OUT_manifest.json: ``contract.tools.SEGMENT``'s."""
    return segment_outputs(out, probability)


def run(params: SegmentParams, progress=None) -> dict:
    """Run the ``segment`` tool; returns the manifest (also written to OUT_manifest.json). The outputs are
    locked (one writer per output) before the run looks whether they exist."""
    from ..segmentation.infer import segment_env

    check_params("segment", params)
    paths = output_paths(params.out, params.probability)
    with locked_outputs(list(paths.values())), segment_env():
        return _run(params, progress)


run_segment = run


def _run(params: SegmentParams, progress=None) -> dict:
    from ..features.extract import choose_device, choose_precision
    from ..io import OutputSet, partial_path, versions, write_json
    from ..segmentation.infer import Reader, Runner, load_model, segment_raster

    progress = progress or (lambda *a, **k: None)
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
    device = choose_device(params.device)
    precision = choose_precision(device, params.precision)
    batch = int(params.batch_size or (32 if device.type == "cuda" else 8))
    reader = Reader(str(params.raster), meta, params.resample)
    try:
        with outset as outs:
            runner = Runner(net, device, precision, batch)
            counts = segment_raster(
                reader, runner, chip, overlap, gpkg=outs.temp(paths["gpkg"]), mask=outs.temp(paths["mask"]),
                staging=partial_path(paths["mask"], "-stage"),
                prob=outs.temp(paths["prob"]) if params.probability else None, threshold=params.threshold,
                min_area=params.min_area, simplify=params.simplify, regularize=params.regularize,
                block=params.block, progress=progress)
            W, H, t_inf = reader.width, reader.height, counts["inference_s"]
            manifest = {
                "tool": "segment",
                "params": {f.name: (str(getattr(params, f.name)) if f.name in ("raster", "out")
                                    else getattr(params, f.name)) for f in fields(params) if f.name != "model"},
                "model": str(params.model) if not isinstance(params.model, (tuple, list)) else "<in memory>",
                "model_meta": {k: meta.get(k) for k in ("encoder", "bands", "n_bands", "pixel_size_m", "chip",
                                                        "val_iou") if k in meta},
                "chip": chip, "overlap": overlap, "stride": chip - overlap, "batch_size": runner.batch,
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
            write_json(outs.temp(paths["manifest"]), manifest)
            with committing():
                outs.commit()
            progress("write", 1, 1, "done")
    finally:
        reader.close()
    return manifest
