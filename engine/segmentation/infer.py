"""Apply a segmentation model to a whole raster: blended sliding windows, streamed, mask + polygons.

Chips of ``chip`` px start every ``stride = chip - overlap`` px from the
raster's first pixel, the last one flush with the far edge (:func:`chip_starts`),
so neighbours overlap by at least ``overlap`` px and no chip is spent on
padding. Each chip's probabilities are weighted by a separable raised-cosine
window (``sin^2`` ramps over ``overlap`` px, 1 in the middle; the ramps of two
regular neighbours sum to exactly 1) and the accumulated sum is divided by the
summed weights, so there are no seams where chips meet: a chip's edge pixels,
which saw zero padding, weigh almost nothing next to a neighbour's interior.
``overlap=0`` gives naive non-overlapping tiles (for comparison).

Streaming: one row of chips is run at a time into accumulators ``chip`` rows
high and the raster's width; after each chip row the rows no later chip
touches are final, so they are thresholded and written to the mask (and
probability) GeoTIFF at once and passed to the block polygoniser
(:mod:`.polygons`). Memory depends on the raster's width and the chip size,
never on its height. The tiled mask is then rewritten as a COG.

A model whose resolution differs from the raster's by more than 10% is
refused unless ``resample``: then the raster is read through a WarpedVRT at
the model's pixel size and the outputs are on that grid.

:func:`segment_raster` writes the buildings layer (``buildings``: area m2,
orien deg), the mask (COG, uint8 1 building / 0 background / 255 nodata) and
optionally the probabilities (float32 0-1, nodata -1) to the paths it is given;
the ``segment`` tool (``engine.tools.segment``) checks the inputs, names the
files and commits them with the manifest, atomically.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..errors import BadInput
from ..raster.tiling import finite_pixels, to_rgb8

MASK_NODATA = 255
SEGMENT_GDAL_CACHE = 16 * 1024 * 1024      # bytes: GDAL's block cache during segment (see run_segment)
PROB_NODATA = -1.0


def blend_weights(chip: int, overlap: int) -> np.ndarray:
    """1-D window: sin^2 ramps over ``overlap`` px at both ends, 1 in between (all ones without overlap)."""
    w = np.ones(chip, np.float64)
    if overlap > 0:
        i = np.arange(overlap)
        ramp = np.sin(0.5 * np.pi * (i + 0.5) / overlap) ** 2
        w[:overlap] = ramp
        w[chip - overlap:] = ramp[::-1]
    return w


def load_model(model):
    """(network in eval mode, meta) from a MODEL.pt path or a (network, meta) pair already in memory."""
    if isinstance(model, (tuple, list)):
        net, meta = model
        return net.eval(), dict(meta)
    from .modelfile import load_seg_model

    return load_seg_model(model)


class Reader:
    """Reads raster windows that may hang over any edge as uint8 RGB (model normalisation) + validity."""

    def __init__(self, path: str, meta: dict, resample: bool):
        import rasterio
        from rasterio.enums import Resampling
        from rasterio.vrt import WarpedVRT

        from ..raster.tiling import Stretch, ground_pixel_size, inspect_raster

        self.info = inspect_raster(path)
        self._src = rasterio.open(path)
        ds = self._src
        bands = meta.get("bands") or None
        n_model = int(meta.get("n_bands") or (len(bands) if bands else 3))
        self.bands = [int(b) for b in bands] if bands else list(range(1, min(n_model, ds.count) + 1))
        if max(self.bands) > ds.count or len(self.bands) != n_model:
            raise BadInput(f"raster {path!r} has {ds.count} band(s) but the model was trained on band(s) "
                           f"{self.bands} ({n_model} band(s)) of its training raster; give imagery with the same "
                           "bands as the training raster, or train a model on this one.")
        self.stretch = Stretch.from_list(meta.get("stretch"))
        if self.stretch is None and ds.dtypes[0] != "uint8":
            from ..raster.tiling import TiledRaster

            with TiledRaster(path, bands=self.bands) as tr:          # model without a stretch: estimate one
                self.stretch = tr.stretch
        self.ds = ds
        # resolutions compare in ground metres (Web Mercator units are not, away from the equator);
        # models from before ground_pixel_m recorded only CRS units
        self.pixel_size_m = ground_pixel_size(path)
        want = meta.get("ground_pixel_m") or meta.get("pixel_size_m")
        self.resampled = False
        if want and abs(self.pixel_size_m / float(want) - 1) > 0.1:
            if not resample:
                raise BadInput(f"raster {path!r} has {self.pixel_size_m:.3g} m pixels but the model was trained "
                               f"at {float(want):.3g} m; pass --resample to read the raster at the model's "
                               "resolution, or train a model at this one.")
            scale = float(want) / self.pixel_size_m           # the same ratio in the raster's own units
            t = ds.transform * ds.transform.scale(scale, scale)
            w, h = max(1, int(round(ds.width / scale))), max(1, int(round(ds.height / scale)))
            self.ds = WarpedVRT(ds, crs=ds.crs, transform=t, width=w, height=h, resampling=Resampling.bilinear)
            self.pixel_size_m = float(want)
            self.resampled = True
        # NaN and infinities in a float raster are invalid pixels, with or without a nodata value
        self.checks_finite = np.dtype(ds.dtypes[0]).kind in "fc"
        self.all_valid = not self.resampled and not self.checks_finite and all(
            "all_valid" in [f.name for f in flags] for flags in ds.mask_flag_enums)

    @property
    def width(self) -> int:
        return self.ds.width

    @property
    def height(self) -> int:
        return self.ds.height

    def read(self, r0: int, c0: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        from rasterio.windows import Window

        data = np.zeros((3, h, w), np.uint8)
        valid = np.zeros((h, w), bool)
        rr0, cc0 = max(r0, 0), max(c0, 0)
        rr1, cc1 = min(r0 + h, self.height), min(c0 + w, self.width)
        if rr1 <= rr0 or cc1 <= cc0:
            return data, valid
        win = Window(cc0, rr0, cc1 - cc0, rr1 - rr0)
        raw = self.ds.read(self.bands, window=win)
        sl = (slice(rr0 - r0, rr1 - r0), slice(cc0 - c0, cc1 - c0))
        valid[sl] = True if self.all_valid else self.ds.dataset_mask(window=win) > 0
        if self.checks_finite:
            valid[sl] &= finite_pixels(raw)
        data[(slice(None),) + sl] = to_rgb8(raw, self.stretch)[:3]
        return data, valid

    def close(self) -> None:
        if self.ds is not self._src:
            self.ds.close()
        self._src.close()


class Runner:
    """Batched forward passes with autocast; on GPU out-of-memory the batch is halved and retried."""

    # test-time augmentation: the flips each chip is also run with (``tta``); their probabilities are averaged
    FLIPS = ((), (3,), (2,), (2, 3))

    def __init__(self, net, device, precision: str, batch_size: int, tta: bool = False):
        import torch

        self.torch = torch
        self.flips = self.FLIPS if tta else ((),)
        # channels_last: measured 1.9x faster with bf16 on this CPU for the resnet18 U-Net (2.75 -> 5.29 Mpx/s)
        self.net = net.to(device, memory_format=torch.channels_last).eval()
        self.device = device
        self.precision = precision
        self.batch = batch_size

    def __call__(self, chips: np.ndarray) -> np.ndarray:
        torch = self.torch
        out = np.empty((len(chips),) + chips.shape[-2:], np.float32)
        i = 0
        while i < len(chips):
            n = min(self.batch, len(chips) - i)
            try:
                x = torch.from_numpy(chips[i:i + n]).to(self.device).contiguous(memory_format=torch.channels_last)
                dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
                with torch.inference_mode(), torch.autocast(self.device.type, dtype=dtype or torch.float32,
                                                            enabled=dtype is not None):
                    y = 0.0
                    for f in self.flips:           # flipped input, its probabilities flipped back
                        pf = torch.sigmoid(self.net(x.flip(f) if f else x).float())
                        y = y + (pf.flip(f) if f else pf)
                    y = y[:, 0] / len(self.flips)
                out[i:i + n] = y.cpu().numpy()
                i += n
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                if self.batch == 1:
                    raise BadInput("the GPU ran out of memory even with batch 1; use --device cpu or a smaller "
                                   "--chip.") from None
                self.batch = max(1, self.batch // 2)
        return out


def write_profile(width, height, transform, crs, dtype, nodata) -> dict:
    """The creation options of segment's GeoTIFFs (tiled, deflate)."""
    return {"driver": "GTiff", "width": width, "height": height, "count": 1, "dtype": dtype, "crs": crs,
            "transform": transform, "nodata": nodata, "tiled": True, "blockxsize": 256, "blockysize": 256,
            "compress": "deflate", "BIGTIFF": "IF_SAFER"}


def to_cog(src: Path, dst: Path) -> None:
    """The mask as a Cloud Optimized GeoTIFF (what ``segment`` writes)."""
    import rasterio.shutil

    from ..features.runtime import usable_cores

    # deflate level 3, not GDAL's default 6: a somewhat bigger file, written in about half the time (cProfile of
    # segment on the segment bench's city: see the README); the blocks are compressed on every core the
    # engine may use (the COG is made after the model has finished)
    rasterio.shutil.copy(str(src), str(dst), driver="COG", COMPRESS="DEFLATE", LEVEL=3, BLOCKSIZE=256,
                         OVERVIEW_RESAMPLING="NEAREST", BIGTIFF="IF_SAFER", NUM_THREADS=str(usable_cores()))


def chip_starts(n: int, chip: int, stride: int) -> list[int]:
    """Chip offsets along one axis of ``n`` px: every ``stride`` px from 0, the last one flush with the end
    (so no chip is spent on padding; neighbours overlap by at least ``chip - stride``)."""
    if n <= chip:
        return [0]
    return list(range(0, n - chip, stride)) + [n - chip]


def predict_stream(reader: Reader, runner: Runner, chip: int, overlap: int, chip_rows: "range | None" = None):
    """Yield (r0, prob rows (float32), valid rows) top to bottom, one chip row's worth of final rows at a time.

    Chips are read a batch at a time (the next batch while the model runs the current ones); on CPU
    several batches run at once (``features.streams``) and their probabilities are added in the chips'
    order. Held at any time: the probability accumulator (``chip`` rows x width, float32, which also
    carries the yielded rows), the validity of the same rows, and up to 9 batches of chips and their
    probabilities (``chips_per_batch`` chips each). The summed blending weights are not stored but
    computed: every chip of the grid adds ``outer(w1, w1)``, so they are a row sum times a column sum.

    ``chip_rows``: run only these chip rows (indices into :func:`chip_starts` down the raster), as a band of
    a partitioned run does (``engine.distributed``). The rows after the first chip row of the range get the
    contributions of every chip over them in the same order as in a whole run, hence the same values; the
    rows before it lack the chips above the range.
    """
    from ..features.streams import map_batches

    stride = chip - overlap
    W, H = reader.width, reader.height
    xs, ys = chip_starts(W, chip, stride), chip_starts(H, chip, stride)
    wp = max(W, chip)                 # accumulator width (padded only for a raster narrower than a chip)
    w1 = blend_weights(chip, overlap).astype(np.float32)
    w2 = np.outer(w1, w1)
    col_w = np.zeros(wp, np.float32)                  # summed weights along a row of chips
    for x in xs:
        col_w[x:x + chip] += w1
    row_w = np.zeros(max(H, chip), np.float32)        # summed weights down a column of chips
    for y in ys:
        row_w[y:y + chip] += w1
    acc_p = np.zeros((chip, wp), np.float32)
    acc_v = np.zeros((chip, wp), bool)
    step = chips_per_batch(runner)
    ks = range(len(ys)) if chip_rows is None else chip_rows
    jobs = [(k, ys[k], xs[i:i + step], i + step >= len(xs)) for k in ks for i in range(0, len(xs), step)]

    def run(chips):
        return None if chips is None else runner(chips)

    # up to a chip row of batches ahead (at most 8, so memory does not grow with the raster's width): the
    # streams keep running while the rows that became final are polygonised and written
    ahead = min(8, -(-len(xs) // step) + 1)
    for (k, y0, row_end, valids, kept), probs in map_batches(run, chip_batches(reader, jobs, chip), runner.device,
                                                             ahead=ahead):
        for x, valid in valids:
            acc_v[:, x:x + chip] |= valid
        if probs is not None:
            for x, p in zip(kept, probs, strict=True):
                acc_p[:, x:x + chip] += p * w2
        del probs
        if not row_end:
            continue
        y1 = min(ys[k + 1] if k + 1 < len(ys) else H, H)    # rows y0 .. y1 are final: no later chip reaches them
        n = y1 - y0
        prob = acc_p[:n, :W]
        prob /= row_w[y0:y1, None]
        prob /= col_w[None, :W]
        yield y0, prob, acc_v[:n, :W]
        acc_p[:chip - n] = acc_p[n:].copy()
        acc_p[chip - n:] = 0
        acc_v[:chip - n] = acc_v[n:].copy()
        acc_v[chip - n:] = False


def chips_per_batch(runner: Runner) -> int:
    """Chips in each batch handed to the model: on CPU the streams share the runner's batch (its memory
    budget), so several batches at once hold no more chips than one did; and a stream of one thread ran
    4 chips no slower than 8 (bench_segment's model-only, 2 cores: 6.80 vs 6.67 Mpx/s)."""
    from ..features.streams import stream_batch

    return stream_batch(runner.batch, runner.device)


def chip_batches(reader: Reader, jobs: list, chip: int):
    """Yield ((chip row, y0, row_end, [(x, valid)], [x of the chips to run]), chips or None) for the jobs of
    :func:`predict_stream`, reading each job's chips in a thread while the one before is handed on (GDAL
    frees the GIL). Chips without a valid pixel are not run."""
    from concurrent.futures import ThreadPoolExecutor

    def read(job):
        _, y0, bx, _ = job
        return [(x,) + reader.read(y0, x, chip, chip) for x in bx]

    pool = ThreadPoolExecutor(1, thread_name_prefix="chip-reader")
    try:
        nxt = pool.submit(read, jobs[0])
        for j, (k, y0, _, row_end) in enumerate(jobs):
            got = nxt.result()
            if j + 1 < len(jobs):
                nxt = pool.submit(read, jobs[j + 1])
            kept = [(x, data) for x, data, valid in got if valid.any()]
            chips = np.stack([data for _, data in kept]) if kept else None
            yield (k, y0, row_end, [(x, valid) for x, _, valid in got], [x for x, _ in kept]), chips
            del got, kept, chips
    finally:
        pool.shutdown(wait=True)


@contextmanager
def segment_env():
    """GDAL settings for a segmentation: a small block cache.

    GDAL's block cache defaults to 5 % of RAM and keeps every block read or written until it is full, so
    peak memory grew with the raster (input, mask and probability blocks). Rows are read and written once
    in order, so a small cache is enough: peak RSS 2048 px -> 4096 px raster +92 MB uncapped, +30 MB at
    64 MB, +12 MB at 8 MB (one run each).
    """
    import rasterio

    from ..raster.tiling import GDAL_ENV

    with rasterio.Env(**{**GDAL_ENV, "GDAL_CACHEMAX": SEGMENT_GDAL_CACHE}):
        yield


def segment_raster(reader: Reader, runner: Runner, chip: int, overlap: int, *, gpkg: Path, mask: Path,
                   staging: Path, prob: "Path | None" = None, threshold: float = 0.5, min_area: float = 4.0,
                   simplify: float = 0.5, regularize: bool = False, block: int = 512, progress=None) -> dict:
    """Run the model over the raster and write the buildings layer to ``gpkg``, the mask COG to ``mask`` (via
    the plain GeoTIFF ``staging``, removed after) and with ``prob`` the probabilities; returns the counts
    (``n_buildings``, ``building_px``, ``valid_px``) and the inference time."""
    import geopandas as gpd  # noqa: F401 - fail early if missing
    import rasterio
    from rasterio.windows import Window

    from .polygons import BlockPolygonizer, buildings_frame, to_crs_coords

    progress = progress or (lambda *a, **k: None)
    ds = reader.ds
    W, H, crs, transform = reader.width, reader.height, ds.crs, ds.transform
    poly = BlockPolygonizer(W, H, block)
    stats = {"building_px": 0, "valid_px": 0}
    t_inf = time.perf_counter()

    def in_crs(polys: list) -> list:
        return list(to_crs_coords(np.array(polys, dtype=object), transform)) if polys else []

    def frames():
        n_rows = len(chip_starts(H, chip, chip - overlap))
        pdst = rasterio.open(prob, "w", **write_profile(W, H, transform, crs, "float32", PROB_NODATA)) \
            if prob else None
        try:
            # the staging file only lives until the COG is made: deflate level 3, which writes faster
            with rasterio.open(staging, "w", **write_profile(W, H, transform, crs, "uint8", MASK_NODATA),
                               ZLEVEL=3) as mdst:
                k = 0
                for r0, p, valid in predict_stream(reader, runner, chip, overlap):
                    k += 1
                    build, m = mask_rows(p, valid, threshold)
                    win = Window(0, r0, W, len(p))
                    mdst.write(m, 1, window=win)
                    if pdst is not None:
                        pdst.write(np.where(valid, p, PROB_NODATA).astype(np.float32), 1, window=win)
                    stats["building_px"] += int(build.sum())
                    stats["valid_px"] += int(valid.sum())
                    done = poly.add(build)
                    if done:
                        yield buildings_frame(in_crs(done), crs, min_area, simplify, regularize)
                    progress("segment", k, n_rows, f"rows {r0 + len(p)}/{H}")
        finally:
            if pdst is not None:
                pdst.close()
        rest = poly.finish()
        yield buildings_frame(in_crs(rest), crs, min_area, simplify, regularize)

    try:
        n_buildings = write_buildings(gpkg, frames(), crs)
        t_inf = time.perf_counter() - t_inf
        progress("write", 0, 1, "mask COG")
        to_cog(staging, mask)
    finally:
        remove_staging(staging)
    return {"n_buildings": int(n_buildings), **stats, "inference_s": t_inf}


def write_buildings(gpkg: Path, frames, crs) -> int:
    """The buildings layer of ``gpkg`` from GeoDataFrames (``buildings_frame``), one after another; returns the
    count. Without any building it is still a polygon layer (not 'Unknown') with its fields, for QGIS."""
    from ..io import write_gpkg_chunks
    from .polygons import buildings_frame

    n_buildings = write_gpkg_chunks(gpkg, "buildings", (f for f in frames if len(f)), crs)
    if n_buildings == 0:
        import pyogrio

        from ..io import GPKG_OPTIONS

        pyogrio.write_dataframe(buildings_frame([], crs), str(gpkg), layer="buildings", driver="GPKG",
                                geometry_type="Polygon", dataset_options=GPKG_OPTIONS,
                                layer_options={"SPATIAL_INDEX": "YES"})
    return n_buildings


def remove_staging(staging: Path) -> None:
    """The plain GeoTIFF the mask COG is made from, and GDAL's side file."""
    for extra in ("", ".aux.xml"):
        Path(str(staging) + extra).unlink(missing_ok=True)


def mask_rows(prob: np.ndarray, valid: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(building rows (bool), mask rows (uint8: 1 building, 0 background, MASK_NODATA where invalid))."""
    build = (prob >= threshold) & valid
    return build, np.where(valid, build.astype(np.uint8), np.uint8(MASK_NODATA))

