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

Reading checks the file whole before any work: missing, empty, damaged or
truncated, another kind of file (a cluster model, a state dict of weights, a
random or booby-trapped pickle), a newer format, an unknown encoder, weights
that do not fit the U-Net: each a BadInput naming the file and the fix.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

from ..clustering.modelfile import SEG_FORMAT as FORMAT
from ..errors import BadInput

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


HINT = "Give the MODEL.pt written by `train-seg`."
MODEL_SUFFIXES = (".pt", ".pth")


def is_model_file(path: "str | Path") -> bool:
    """Whether ``path`` is meant as a model file rather than a vector layer (``cluster --form`` takes either).

    By its bytes first, so that a model uploaded under another name is known: what ``torch.save`` writes (a
    zip archive holding a ``data.pkl``, or a bare pickle); then by its name (``.pt``, ``.pth``), so that a
    damaged or truncated model is refused as a model, in a model's words. Reads a few bytes and the zip's
    directory only: nothing is unpickled.
    """
    p = Path(path)
    named = p.suffix.lower() in MODEL_SUFFIXES
    try:
        with open(p, "rb") as fh:
            head = fh.read(4)
    except OSError:                     # missing, a folder, unreadable: the caller's checks say so
        return named
    if head[:1] == b"\x80":              # a pickle (torch.save's legacy format)
        return True
    if head == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(p) as z:
                if any(n == "data.pkl" or n.endswith("/data.pkl") for n in z.namelist()):
                    return True
        except (zipfile.BadZipFile, OSError):
            pass
    return named


def read_seg_file(path: "str | Path") -> dict:
    """The raw container of a model file (weights_only=True), or BadInput saying why it is not ours."""
    import torch

    from ..clustering.modelfile import read_container
    from ..contract.defaults import SEG_ENCODERS

    obj = read_container(path, FORMAT, VERSION, "segmentation model", HINT)
    try:
        obj["meta"] = json.loads(obj["meta"])
        encoder = obj["meta"]["encoder"]
        if not all(torch.is_tensor(v) for v in obj["state"].values()):
            raise TypeError("state")
    except Exception:  # noqa: BLE001
        raise BadInput(f"model {str(path)!r} is damaged (meta or state missing). {HINT}") from None
    if encoder not in SEG_ENCODERS:
        raise BadInput(f"model {str(path)!r} was made with encoder {encoder!r}, which this version does not know "
                       f"({', '.join(SEG_ENCODERS)}); update Urban Form Mapper. {HINT}")
    return obj


def load_seg_model(path: "str | Path"):
    """(UNet in eval mode on the CPU, meta dict) from a file written by ``save_seg_model``."""
    from .unet import UNet

    obj = read_seg_file(path)
    meta = obj["meta"]
    model = UNet(meta["encoder"], weights="none")
    try:
        model.load_state_dict(obj["state"])
    except (RuntimeError, TypeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInput(f"model {str(path)!r} is damaged: its weights do not fit a {meta['encoder']} U-Net "
                       f"({first[:200]}). {HINT}") from None
    return model.eval(), meta
