"""The train-seg tool: a U-Net building segmenter trained from footprints.

``run(TrainParams(...), progress)`` checks the inputs (as ``contract.tools.TRAIN_SEG``
declares them), names the files after the model (MODEL.pt, MODEL_checkpoint.pt,
MODEL_manifest.json), refuses a checkpoint left by another training unless
asked to resume it, and writes the model and its manifest atomically; the
labelled cells, their split and the training loop are ``engine.segmentation.train``'s.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np

from ..contract import defaults
from ..contract.params import output_files
from ..contract.tools import TRAIN_SEG
from ..errors import BadInput, Cancelled
from ..progress import committing
from . import check_params, check_vector_inputs, locked_outputs, study_params

# Parameters that define a training run: a checkpoint resumes only with the same values.
_RUN_KEYS = ("raster", "buildings", "encoder", "weights", "chip", "val_fraction", "batch_size", "lr",
             "encoder_lr", "label_area", "seed", "bands", "chips_per_epoch")


@dataclass
class TrainParams:
    """A ``train-seg`` run: the fields and defaults ``contract.tools.TRAIN_SEG`` declares (``buildings`` may
    also be a GeoDataFrame or GeoSeries, from Python)."""

    raster: str
    buildings: "str | object"           # vector path, GeoDataFrame or GeoSeries (any CRS)
    out: str                            # MODEL.pt
    encoder: str = defaults.DEFAULT_SEG_ENCODER
    weights: str = defaults.DEFAULT_WEIGHTS  # 'imagenet' | 'none' | encoder state dict path
    chip: int | None = None             # default: segmentation.train.auto_chip (the largest that fits the area)
    epochs: int | None = None           # total epochs (a resumed run counts the ones done); default 10
    minutes: float | None = None        # wall-clock budget for this call
    val_fraction: float = 0.2
    batch_size: int = 8
    lr: float = 1e-3
    encoder_lr: float | None = None     # the encoder's learning rate as a share of lr; None: 0.1 for pretrained
                                        # weights (keeps their features), 1 from scratch
    label_area: str | None = None       # polygons of the area the footprints map completely
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"             # 'auto' = bf16 where supported (CPU with AVX512-BF16/AMX, GPU), else fp32
    resume: bool = False
    overwrite: bool = False
    bands: "str | list[int] | None" = None
    chips_per_epoch: int | None = None  # default: one per training cell, at least MIN_CHIPS_PER_EPOCH
    threads: int | None = None


@dataclass(frozen=True)
class TrainOutputs:
    """The files of a training, named after the model file as ``contract.tools.TRAIN_SEG`` declares."""

    model: Path
    checkpoint: Path
    manifest: Path

    @classmethod
    def for_out(cls, out: "str | Path") -> "TrainOutputs":
        names = output_files(TRAIN_SEG, {"out": str(out)})
        return cls(names["model"], names["checkpoint"], names["manifest"])


def _as_dict(p: TrainParams) -> dict:
    """The parameters as a plain dict (not dataclasses.asdict: it would deep-copy a GeoDataFrame)."""
    return {f.name: getattr(p, f.name) for f in fields(p)}


def _fingerprint(p: TrainParams) -> dict:
    d = _as_dict(p)
    out = {}
    for k in _RUN_KEYS:
        v = d[k]
        if k in ("raster", "buildings", "label_area") and isinstance(v, (str, Path)):
            v = os.path.abspath(str(v))
        elif k == "buildings":
            v = f"<{type(v).__name__} of {len(v)} features>"
        elif k == "bands" and v is not None:
            v = str(v)
        out[k] = v
    return out


def run(params: TrainParams, progress=None) -> dict:
    """Train and write the model file (and its checkpoint and manifest); returns the manifest.

    The declared checks and the vector inputs (footprints, label area) first; then the model, its checkpoint
    and manifest are locked (one writer, one training per model) before the run looks whether they exist."""
    check_params("train-seg", params)
    check_vector_inputs("train-seg", params)
    params = study_params("train-seg", params)
    outputs = TrainOutputs.for_out(params.out)
    with locked_outputs([outputs.model, outputs.checkpoint, outputs.manifest]):
        try:
            return _run(params, progress, outputs)
        except (Cancelled, KeyboardInterrupt) as exc:
            if outputs.checkpoint.is_file():
                raise Cancelled(f"no model was written; the checkpoint {str(outputs.checkpoint)!r} keeps the "
                                "finished epochs: run the same command with --resume to continue, or with "
                                "--overwrite to start again.") from exc
            raise


def _footprints(p: TrainParams, warnings: list):
    """The footprints in the raster's CRS (``segmentation.labels.footprints_on_grid``); the raster is opened as
    the training opens it, so a file that is not one gets the same clear error."""
    from ..contract.defaults import SEG_AUTO_CHIPS
    from ..raster.tiling import TiledRaster
    from ..segmentation.labels import footprints_on_grid

    with TiledRaster(str(p.raster), tile_size=f"{SEG_AUTO_CHIPS[-1]}px", bands=p.bands, seed=p.seed) as tiled:
        crs = tiled.dataset.crs
    return footprints_on_grid(p.buildings, crs, warnings=warnings)


def _usable_cells_at(p: TrainParams, chip: int, geoms) -> int:
    """The usable cells of the labelled area on the grid of ``chip``-px chips (the label area's own warnings
    are said once, by the training's split)."""
    from ..raster.tiling import TiledRaster
    from ..segmentation.train import usable_cells

    with TiledRaster(str(p.raster), tile_size=f"{chip}px", bands=p.bands, seed=p.seed) as tiled:
        return usable_cells(tiled, geoms, p.label_area, [])


def _run(params: TrainParams, progress, outputs: TrainOutputs) -> dict:
    """The training, with the outputs locked by the caller."""
    from ..features.extract import choose_device, choose_precision
    from ..io import OutputSet, versions, write_json
    from ..raster.tiling import TiledRaster, ground_pixel_size
    from ..segmentation.labels import footprints_on_grid
    from ..segmentation.modelfile import read_seg_file, save_seg_model
    from ..segmentation.train import auto_chip, encoder_lr_share, split_labelled_area, train_unet
    from ..segmentation.unet import DECODER_CHANNELS, UNet

    t_start = time.monotonic()
    progress = progress or (lambda *a, **k: None)
    p = params
    device = choose_device(p.device)
    # 'auto': bf16 autocast where the device supports it. Measured for training on the shared 2-core CPU
    # (AVX512-BF16), 256-px chips, batch 8, 3 interleaved repeats: efficientnet_lite0 5.3 -> 8.8 chips/s and
    # resnet18 5.2 -> 12.4 chips/s (best of 3, fp32 -> bf16); bf16 was ahead in every pair.
    precision = choose_precision(device, p.precision)
    warnings: list[str] = []
    progress("open", 0, 0, f"opening {p.raster}")
    geoms, chip_auto = None, p.chip is None
    if chip_auto:         # (resolved before the fingerprint: a checkpoint records the chip it was trained with)
        geoms = _footprints(p, warnings)
        p = replace(p, chip=auto_chip(lambda chip: _usable_cells_at(p, chip, geoms)))
    ckpt = None
    fingerprint = _fingerprint(p)
    if p.resume:
        if not outputs.checkpoint.is_file():
            raise BadInput(f"--resume: no checkpoint {str(outputs.checkpoint)!r} next to --out; train without "
                           "--resume first.", param="resume")
        ckpt = read_seg_file(outputs.checkpoint)
        saved = ckpt["meta"].get("run", {})
        diff = [k for k in _RUN_KEYS if saved.get(k) != fingerprint[k]]
        if diff:
            detail = "; ".join(f"{k}: checkpoint {saved.get(k)!r}, now {fingerprint[k]!r}" for k in diff)
            raise BadInput(f"--resume: the checkpoint {str(outputs.checkpoint)!r} was trained with other "
                           f"parameters ({detail}). Use the same ones, or train afresh without --resume.",
                           param="resume")
    if not p.resume and not p.overwrite and outputs.checkpoint.exists():
        raise BadInput(f"{str(outputs.checkpoint)!r} is the checkpoint of an earlier training to --out "
                       f"{str(p.out)!r} (an interrupted one leaves it to continue from); pass --resume to continue "
                       "it, --overwrite to train afresh, or choose another --out.")
    outset = OutputSet([outputs.model, outputs.manifest] + ([] if p.resume else [outputs.checkpoint]),
                       overwrite=p.overwrite or p.resume)

    with TiledRaster(str(p.raster), tile_size=f"{p.chip}px", bands=p.bands, seed=p.seed) as tiled, outset:
        ds = tiled.dataset
        if geoms is None:
            geoms = footprints_on_grid(p.buildings, ds.crs, warnings=warnings)
        split = split_labelled_area(tiled, geoms, p.label_area, p.chip, p.val_fraction, p.seed, warnings)
        if p.threads:
            from ..features.runtime import set_threads

            set_threads(int(p.threads))
        ground_m = ground_pixel_size(tiled.path)            # what segment compares resolutions by
        meta_base = {
            "bands": list(tiled.bands), "n_bands": len(tiled.bands),
            "stretch": tiled.stretch.as_list() if tiled.stretch is not None else None,
            "pixel_size_m": tiled.pixel_size_m, "ground_pixel_m": ground_m, "crs": ds.crs.to_string(),
            "chip": p.chip, "threshold": 0.5,
            "decoder_channels": list(DECODER_CHANNELS), "input": "uint8 RGB (B,3,H,W), H and W multiples of 32; "
            "the model divides by 255 and normalises with mean/std itself",
            "weights": p.weights, "precision": precision, "run": fingerprint,
        }
        done = train_unet(tiled, geoms, split, encoder=p.encoder, weights=p.weights, chip=p.chip, epochs=p.epochs,
                          minutes=p.minutes, batch_size=p.batch_size, lr=p.lr, encoder_share=encoder_lr_share(p),
                          seed=p.seed, device=device, precision=precision, chips_per_epoch=p.chips_per_epoch,
                          checkpoint=outputs.checkpoint, meta_base=meta_base, resume_from=ckpt,
                          progress=progress)
        final = UNet(p.encoder, weights="none")
        final.load_state_dict(done.best_state)
        save_seg_model(outset.temp(outputs.model), final, done.meta)
        manifest = {
            "tool": "train-seg", "model": os.path.abspath(outputs.model),
            "checkpoint": os.path.abspath(outputs.checkpoint), "params": {**_as_dict(p), **fingerprint},
            "encoder": p.encoder, "precision": precision, "device": device.type,
            "chip": p.chip, "chip_auto": chip_auto, "bands": list(tiled.bands), "pixel_size_m": tiled.pixel_size_m,
            "ground_pixel_m": ground_m,
            "split": {"block_cells": split.block, "n_usable_cells": split.n_usable,
                      "n_train_cells": int(split.train.sum()), "n_val_cells": int(split.val.sum()),
                      "building_px": split.building_px,
                      "val_windows": [[int(w.col_off), int(w.row_off), int(w.width), int(w.height)]
                                      for w in split.val_windows],
                      "train_cells": np.argwhere(split.train).tolist()},
            "history": done.history, "val_iou": done.best_iou, "best_epoch": done.best_epoch,
            "threshold": done.meta["threshold"], "threshold_val_iou": done.meta["threshold_val_iou"],
            "val_iou_at_0.5": done.meta["val_iou_at_0.5"],
            "epochs_done": done.epochs_done,
            "chips_per_s": done.chips_seen / done.train_s if done.train_s > 0 else 0.0, "warnings": warnings,
            "versions": versions(), "seconds": time.monotonic() - t_start,
        }
        write_json(outset.temp(outputs.manifest), manifest)
        with committing():
            outset.commit()
    progress("write", 1, 1, f"wrote {outputs.model} (best val_iou {done.best_iou:.3f} at epoch {done.best_epoch})")
    return manifest


run_train = run
