"""CNN features of tiles: devices, precision, batching and extraction (the backbones and their weights are
in ``backbones``).

On CPUs with bf16 support the model runs under bf16 autocast in channels_last
layout; on CUDA under fp16/bf16 autocast. On CPU several batches run at once,
each on some of the cores (``streams``), while the caller's thread reads the
next tiles (on two cores a reader thread of its own only steals time from the
model); on GPUs tiles are read in a background thread, as reading is the bound.
"""
from __future__ import annotations

import os
import queue
import threading
from typing import Iterable, Iterator

import numpy as np

from ..contract import defaults
from ..contract.problems import BAD_CHOICE
from ..contract.tools import DEVICES, PRECISIONS
from ..errors import BadInput
from .backbones import build_backbone, state_digest
from .runtime import tune_malloc
from .streams import map_batches, stream_batch


def available_devices() -> list[str]:
    """Devices this machine can run on, best first, always ending with 'cpu'."""
    import torch

    out = []
    if torch.cuda.is_available():
        out.append("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        out.append("mps")
    return out + ["cpu"]


def choose_device(device: str = "auto"):
    import torch

    from .runtime import configure_threads

    configure_threads()                   # torch's threads from the cores this process may really use
    device = device or "auto"
    if device == "auto":
        return torch.device(available_devices()[0])
    if device not in DEVICES and not device.startswith("cuda:"):
        raise BadInput(f"--device {device!r} is unknown; use {', '.join(DEVICES[:-1])} or {DEVICES[-1]}.",
                       param="device", code=BAD_CHOICE)
    kind = device.split(":")[0]
    if kind not in available_devices():
        raise BadInput(
            f"--device {device}: no {kind.upper()} device is available on this machine "
            f"(available: {', '.join(available_devices())}). Use --device auto or cpu."
        )
    return torch.device(device)


def cpu_supports_bf16() -> bool:
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def choose_precision(device, precision: str = "auto") -> str:
    """'fp32', 'bf16' or 'fp16' for this device."""
    import torch

    if precision not in PRECISIONS:
        raise BadInput(f"--precision {precision!r} is unknown; use {', '.join(PRECISIONS[:-1])} or "
                       f"{PRECISIONS[-1]}.", param="precision", code=BAD_CHOICE)
    if precision != "auto":
        if device.type == "cpu" and precision == "fp16":
            raise BadInput("--precision fp16 is for GPUs; on CPU use bf16 or fp32.")
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu":
        return "bf16" if cpu_supports_bf16() else "fp32"
    return "fp32"


def default_batch_size(tile_px: int, device) -> int:
    """A batch of about 1 Mpx on CPU (measured best on 2 cores), 16 Mpx on GPU."""
    budget = (1 << 24) if device.type == "cuda" else (1 << 20)
    return int(max(4, min(1024, budget // (tile_px * tile_px))))


class FeatureExtractor:
    """Callable turning uint8 tiles (n, 3, h, w) into float32 features (n, dim)."""

    def __init__(self, backbone: str = defaults.DEFAULT_BACKBONE, weights: str = defaults.DEFAULT_WEIGHTS,
                 device: str = "auto", precision: str = "auto", channels_last: bool = True, seed: int = 0,
                 sobel: bool = False, state_dict: dict | None = None, pool: str = "last",
                 cnn_px: "int | str | None" = None, depth_weights: "tuple | list | None" = None):
        """``pool``: 'last' or 'multi' (``backbones.multi_depth``, its depths weighted by ``depth_weights``,
        None: the backbone's own); ``cnn_px``: every tile is resized to this many pixels before the CNN (None or
        'native': as read)."""
        import torch

        tune_malloc()
        self.device = choose_device(device)
        self.sobel = sobel
        self.pool = pool
        self.cnn_px = None if cnn_px in (None, "native") else int(cnn_px)
        self.model, self.spec, self.weights_path = build_backbone(backbone, weights, seed, sobel, state_dict, pool,
                                                                  depth_weights)
        # the weights of --pool multi's depths as used (the feature cache's key has them); None with 'last'
        self.depth_weights = self.spec.pool_weights(pool, depth_weights)
        self.state_digest = state_digest(state_dict)      # the network given as weights, for the feature cache
        self.precision = choose_precision(self.device, precision)
        self.channels_last = channels_last and self.device.type != "mps"
        self.dim = self.spec.feature_dim(pool)
        self.model = self.model.to(self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self._mean = torch.tensor(self.spec.mean, device=self.device).view(1, 3, 1, 1) * 255.0
        self._std = torch.tensor(self.spec.std, device=self.device).view(1, 3, 1, 1) * 255.0

    @property
    def autocast_dtype(self):
        import torch

        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        import torch

        if self.cnn_px is None:
            check_cnn_input(self.spec, None, min(tiles.shape[-2:]))
        x = torch.from_numpy(np.ascontiguousarray(tiles))
        if self.cnn_px is not None and tuple(x.shape[-2:]) != (self.cnn_px, self.cnn_px):
            x = resize_tiles(x, self.cnn_px)
        if self.device.type == "cuda":
            x = x.pin_memory().to(self.device, non_blocking=True)
        else:
            x = x.to(self.device)
        x = (x.float() - self._mean) / self._std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        dtype = self.autocast_dtype
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=dtype or torch.float32,
                                                    enabled=dtype is not None):
            y = self.model(x)
        return y.float().cpu().numpy()


def check_cnn_input(spec, cnn_px: "int | None", tile_px: int) -> None:
    """BadInput naming the fix when the CNN would see tiles smaller than backbone ``spec`` takes (EfficientNet
    and VGG need 32 px: smaller inputs vanish in their strided layers). ``cnn_px`` None: tiles as read."""
    px = int(cnn_px) if cnn_px is not None else int(tile_px)
    if px >= spec.min_px:
        return
    if cnn_px is not None:
        raise BadInput(f"--cnn-px {cnn_px}: {spec.name} needs tiles of at least {spec.min_px} px. "
                       f"Use --cnn-px {spec.min_px} or more (the default is {defaults.DEFAULT_CNN_PX}).",
                       param="cnn_px")
    raise BadInput(f"--cnn-px native: the tiles are {px} px and {spec.name} needs at least {spec.min_px} px. "
                   f"Use --cnn-px {defaults.DEFAULT_CNN_PX} (the default: tiles are resized), a larger "
                   f"--tile-size, or --backbone resnet18 (it takes tiles from 16 px).", param="cnn_px")


def resize_tiles(x, px: int):
    """uint8 tiles (n, 3, h, w) as a tensor resized to (n, 3, px, px): bilinear, antialiased, rounded back to
    uint8 (the same values whatever device the CNN runs on)."""
    import torch
    import torch.nn.functional as F

    y = F.interpolate(x.float(), size=(px, px), mode="bilinear", antialias=True, align_corners=False)
    return y.round().clamp(0, 255).to(torch.uint8)


class ResizedExtractor:
    """A FeatureExtractor seen through a resize of every tile to ``px`` (for --resample)."""

    def __init__(self, extractor, px: int):
        self.extractor, self.px = extractor, int(px)
        self.device, self.dim, self.precision = extractor.device, extractor.dim, extractor.precision

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        import torch

        return self.extractor(resize_tiles(torch.from_numpy(np.ascontiguousarray(tiles)), self.px).numpy())


def prefetch(items: Iterable, depth: int = 2) -> Iterator:
    """Iterate ``items`` produced by a background thread, ``depth`` ahead."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    errors: list[BaseException] = []

    def work():
        try:
            for it in items:
                q.put(it)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            errors.append(exc)
        finally:
            q.put(done)

    t = threading.Thread(target=work, daemon=True, name="tile-reader")
    t.start()
    while True:
        it = q.get()
        if it is done:
            break
        yield it
    t.join()
    if errors:
        raise errors[0]


def tile_batches(tiled, rows: np.ndarray, cols: np.ndarray, batch_size: int) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (start index, uint8 tiles) for the (row, col) positions in order.

    Positions must be sorted row-major; a batch is read as one window per grid
    row it touches.
    """
    n = len(rows)
    for start in range(0, n, batch_size):
        stop = min(n, start + batch_size)
        parts = []
        i = start
        while i < stop:
            j = i
            while j < stop and rows[j] == rows[i]:
                j += 1
            parts.append(tiled.read_tiles(int(rows[i]), cols[i:j].tolist()))
            i = j
        yield start, parts[0] if len(parts) == 1 else np.concatenate(parts)


def extract_features(tiled, rows: np.ndarray, cols: np.ndarray, extractor: FeatureExtractor,
                     out: np.ndarray, batch_size: int | None = None, progress=None,
                     overlap_reads: bool | None = None) -> np.ndarray:
    """Fill ``out`` (n, dim; may be a memmap) with the features of the tiles at (rows, cols).

    On CPU the streams share the batch (``batch_size``, or the default for the tile and CNN size): each runs
    ``stream_batch`` tiles, so the batches in flight at once hold no more activations than one batch did
    (with a whole batch per stream, peak memory depended on whether the streams' peaks met, and rose with
    the raster's tile count: bench.py's memory section read 1,263 and 1,452 MiB from 2048 to 16384 px)."""
    batch_size = batch_size or default_batch_size(max(tiled.grid.size, getattr(extractor, "cnn_px", None) or 0),
                                                  extractor.device)
    batches: Iterable = tile_batches(tiled, rows, cols, stream_batch(batch_size, extractor.device))
    if overlap_reads is None:
        overlap_reads = extractor.device.type != "cpu" or (os.cpu_count() or 1) > 4
    if overlap_reads:
        batches = prefetch(batches)
    n = len(rows)
    for start, feats in map_batches(extractor, batches, extractor.device):
        out[start: start + len(feats)] = feats
        if progress is not None:
            progress(start + len(feats), n)
    return out
