"""One file per trained segmentation model: U-Net weights plus how to feed it.

A ``torch.save`` of plain containers, so it loads with
``torch.load(weights_only=True)``: opening a model file never runs code.

Layout::

    {"format": "urbanform-segmentation-model", "version": 1,
     "meta": "<JSON string>", "state": {U-Net state dict}}

``meta`` keys written by ``train.run_train``: encoder, bands, n_bands, stretch
(per-band [lo, hi] or null for uint8), mean, std (0-1 scale, applied inside the
model), pixel_size_m (CRS units per pixel, null if geographic), ground_pixel_m (ground metres per pixel
at the centre: what segment compares), crs, chip,
threshold (0.5), decoder_channels, history (one dict per epoch), val_iou (best),
best_epoch, epochs_done, params (training parameters), versions.
``encoder`` is required to rebuild the network; the rest is information.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import BadInput

FORMAT = "urbanform-segmentation-model"
VERSION = 1


def _jsonable(value):
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def save_seg_model(path: "str | Path", model, meta: dict, extra: dict | None = None) -> None:
    """Write ``model`` (a UNet) and ``meta`` to ``path`` (the caller makes it atomic: ``OutputSet.temp``).

    ``extra`` holds further plain containers of tensors (the training checkpoint keeps the optimiser there).
    """
    import torch

    meta = {**meta, "encoder": model.encoder_name, "mean": list(model.mean), "std": list(model.std)}
    meta.setdefault("threshold", 0.5)
    obj = {"format": FORMAT, "version": VERSION, "meta": json.dumps(meta, default=_jsonable),
           "state": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}}
    if extra:
        obj.update(extra)
    torch.save(obj, path)


def read_seg_file(path: "str | Path") -> dict:
    """The raw container of a model file (weights_only=True), or BadInput saying why it is not ours."""
    from ..clustering.modelfile import read_container

    hint = "Give the MODEL.pt written by `train-seg`."
    obj = read_container(path, FORMAT, VERSION, "segmentation model", hint)
    try:
        obj["meta"] = json.loads(obj["meta"])
        obj["meta"]["encoder"]
        obj["state"].items()
    except Exception:  # noqa: BLE001
        raise BadInput(f"model {str(path)!r} is damaged (meta or state missing). {hint}") from None
    return obj


def load_seg_model(path: "str | Path"):
    """(UNet in eval mode on the CPU, meta dict) from a file written by ``save_seg_model``."""
    from .unet import UNet

    obj = read_seg_file(path)
    meta = obj["meta"]
    model = UNet(meta["encoder"], weights="none")
    try:
        model.load_state_dict(obj["state"])
    except RuntimeError as exc:
        raise BadInput(f"model {str(path)!r}: its weights do not fit a {meta['encoder']} U-Net "
                       f"({str(exc).splitlines()[0]}).") from None
    return model.eval(), meta
