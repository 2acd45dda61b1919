#!/usr/bin/env python
"""Urban Form Mapper on a GPU (``make bench-gpu``): one prepared script, under 8 minutes.

Run from the repository root::

    .venv/bin/python tests/bench/bench_gpu.py [--cpu-sizes] [--out bench_out/]

On a machine with an NVIDIA GPU (``device=auto`` picks it) it measures, in one
run (compare figures only within a run):

1. clustering features: model only (random uint8 tiles through the engine's
   ``FeatureExtractor``) and end to end (``extract_features`` over every tile
   of a GeoTIFF on disk: reads, batching, the reader thread, the model), in
   tiles/s, and their ratio (target: end to end >= 0.9 of model only);
2. building segmentation: the U-Net runner on random chips (model only) and
   the ``segment`` tool end to end (reading, blending, the mask, polygons,
   writing), in Mpx/s of chips, and their ratio;
3. DeepCluster: seconds per epoch per 1,000 tiles (training + features);
4. the projection for 11 gigapixels at 0.3 m (about 1,000 km2): hours of
   clustering features and of segmentation at the measured end-to-end rates,
   on one GPU and on 4 (Dask workers, one per GPU: rates add up).

Without a GPU it runs the same steps on the CPU at small sizes (``--cpu-sizes``
is then implied), so CI keeps the script working; those figures are the CPU's,
not a GPU estimate. The report goes to stdout and OUT/bench_gpu.txt, the
figures to OUT/bench_gpu.json; progress notes to stderr.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.bench.bench import make_city_raster, measure_model, median, note  # noqa: E402

STUDY_PX = 11e9                  # 11 gigapixels: about 1,000 km2 at 0.3 m
TILE_PX = 64                     # the clustering default tile (about 19 m at 0.3 m)
SIZES = {   # raster sides (px), repeats; the GPU sizes keep the whole script under 8 minutes on an H100
    "gpu": {"features_raster": 8192, "segment_raster": 4096, "dc_zone_px": 512, "dc_epochs": 2, "repeats": 3,
            "model_batches": 40},
    "cpu": {"features_raster": 1024, "segment_raster": 512, "dc_zone_px": 96, "dc_epochs": 1, "repeats": 1,
            "model_batches": 4},
    "smoke": {"features_raster": 256, "segment_raster": 256, "dc_zone_px": 64, "dc_epochs": 1, "repeats": 1,
              "model_batches": 1},      # the CI test: every step runs, the figures mean nothing
}


def device_facts() -> dict:
    import torch

    from engine.features.extract import choose_device, choose_precision

    device = choose_device("auto")
    facts = {"device": device.type, "precision": choose_precision(device, "auto"), "torch": torch.__version__,
             "threads": torch.get_num_threads()}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        facts.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1), cuda=torch.version.cuda)
    return facts


def bench_features(tmp: Path, size: int, repeats: int, batches: int) -> dict:
    """Section 1: tiles/s of the default backbone, model only and end to end over a GeoTIFF."""
    from engine.features.extract import FeatureExtractor, default_batch_size, extract_features
    from engine.raster.tiling import TiledRaster

    ex = FeatureExtractor("efficientnet_lite0", "imagenet", device="auto")
    batch = default_batch_size(TILE_PX, ex.device)
    note(f"features: model only, batch {batch} on {ex.device.type}")
    model = measure_model(ex, TILE_PX, batch, warmup=3, batches=batches, repeats=repeats)
    raster = tmp / f"city_{size}.tif"
    note(f"features: a {size} px raster, end to end")
    make_city_raster(raster, size, seed=0)
    rates = []
    for _ in range(repeats + 1):                      # the first pass warms GDAL and the allocator, not timed
        with TiledRaster(str(raster), f"{TILE_PX}px") as tiled:
            rows, cols = np.nonzero(np.ones(tiled.grid.shape, dtype=bool))
            out = np.empty((len(rows), ex.dim), dtype=np.float32)
            t0 = time.perf_counter()
            extract_features(tiled, rows, cols, ex, out, batch_size=batch)
            rates.append(len(rows) / (time.perf_counter() - t0))
    e2e = median(rates[1:])
    return {"backbone": "efficientnet_lite0", "tile_px": TILE_PX, "batch_size": batch, "precision": ex.precision,
            "model_tiles_per_s": round(model["tiles_per_s"], 1), "e2e_tiles_per_s": round(e2e, 1),
            "ratio": round(e2e / model["tiles_per_s"], 3), "tiles": int(len(rows)), "raster_px": size}


def bench_segment(tmp: Path, size: int, repeats: int) -> dict:
    """Section 2: Mpx/s of chips through the U-Net runner and through the segment tool."""
    from engine.segmentation.modelfile import load_seg_model
    from engine.tools.segment import SegmentParams, run_segment
    from engine.tools.train_seg import TrainParams, run_train
    from tests.bench.bench_segment import CHIP, OVERLAP, model_only, n_chips
    from tests.synthetic import make_city

    note("segmentation: a model with the default encoder (one short epoch: speed does not depend on training)")
    city = make_city(tmp / "seg_city.tif", zone_grid=(3, 3), zone_px=256, seed=1)
    fp = tmp / "seg_buildings.gpkg"
    city.footprints.to_file(fp, layer="buildings")
    model = tmp / "seg.pt"
    run_train(TrainParams(str(city.raster), str(fp), str(model), chip=CHIP, epochs=1, chips_per_epoch=8, seed=0))
    net, meta = load_seg_model(str(model))
    raster = tmp / f"seg_{size}.tif"
    make_city_raster(raster, size, seed=2)
    note(f"segmentation: model only, then segment on a {size} px raster")
    model_rate = model_only(net, max(repeats, 2))
    run_segment(SegmentParams(str(raster), (net, meta), str(tmp / "warm.gpkg"), overwrite=True))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        m = run_segment(SegmentParams(str(raster), (net, meta), str(tmp / "seg.gpkg"), overwrite=True))
        times.append(time.perf_counter() - t0)
    t = median(times)
    chips = n_chips(size, size, OVERLAP)
    chip_rate = chips * CHIP * CHIP / 1e6 / t
    return {"encoder": meta.get("encoder"), "chip": CHIP, "overlap": OVERLAP, "precision": m["precision"],
            "model_mpx_s": round(model_rate, 2), "e2e_chip_mpx_s": round(chip_rate, 2),
            "e2e_raster_mpx_s": round(size * size / 1e6 / t, 2), "ratio": round(chip_rate / model_rate, 3),
            "raster_px": size, "buildings": m["n_buildings"]}


def bench_deepcluster(zone_px: int, epochs: int) -> dict:
    """Section 3: DeepCluster seconds per epoch per 1,000 tiles (tests/bench/bench_deepcluster.py's run)."""
    from tests.bench.bench_deepcluster import bench

    note(f"DeepCluster: {epochs} epochs on a {4 * zone_px} px city")
    r = bench(epochs=epochs, tile_px=TILE_PX, zone_px=zone_px, batch_size=64)
    return {k: r[k] for k in ("tiles", "tile_px", "epochs", "device", "train_precision", "median_epoch_seconds",
                              "seconds_per_epoch_per_1000_tiles", "feature_pass_seconds_per_1000_tiles")}


def projection(features: dict, segment: dict) -> dict:
    """Hours for 11 gigapixels at the end-to-end rates, on 1 and 4 GPUs (Dask: one worker per GPU)."""
    tiles = STUDY_PX / TILE_PX ** 2
    feat_h = tiles / features["e2e_tiles_per_s"] / 3600
    seg_h = STUDY_PX / 1e6 / segment["e2e_raster_mpx_s"] / 3600
    return {"study_px": STUDY_PX, "tiles": int(tiles), "features_hours_1": round(feat_h, 2),
            "features_hours_4": round(feat_h / 4, 2), "segment_hours_1": round(seg_h, 2),
            "segment_hours_4": round(seg_h / 4, 2)}


def report(res: dict) -> str:
    f, s, d, p, e = res["features"], res["segment"], res["deepcluster"], res["projection"], res["environment"]
    where = e.get("gpu") or f"CPU ({e['threads']} threads; no GPU here: small sizes, not a GPU estimate)"
    lines = [f"Urban Form Mapper, GPU bench on {where}; torch {e['torch']}, precision {e['precision']}",
             "",
             f"1. clustering features ({f['backbone']}, {f['tile_px']} px tiles, batch {f['batch_size']}, "
             f"{f['tiles']} tiles of a {f['raster_px']} px GeoTIFF)",
             f"   model only {f['model_tiles_per_s']:,.0f} tiles/s; end to end {f['e2e_tiles_per_s']:,.0f} tiles/s; "
             f"ratio {f['ratio']:.2f} (target >= 0.9)",
             f"2. segmentation ({s['encoder']} U-Net, {s['chip']} px chips, overlap {s['overlap']}, "
             f"{s['raster_px']} px raster, {s['buildings']} buildings)",
             f"   model only {s['model_mpx_s']:.2f} Mpx/s; segment {s['e2e_chip_mpx_s']:.2f} Mpx/s of chips "
             f"({s['e2e_raster_mpx_s']:.2f} of raster); ratio {s['ratio']:.2f}",
             f"3. DeepCluster ({d['tiles']} tiles of {d['tile_px']} px, {d['epochs']} epochs, {d['device']}, "
             f"training {d['train_precision']}): {d['seconds_per_epoch_per_1000_tiles']:.1f} s per epoch per "
             f"1,000 tiles (features alone {d['feature_pass_seconds_per_1000_tiles']:.1f})",
             f"4. 11 gigapixels at 0.3 m ({p['tiles']:,} tiles of {TILE_PX} px): features "
             f"{p['features_hours_1']:.2f} h on one device, {p['features_hours_4']:.2f} h on 4; segmentation "
             f"{p['segment_hours_1']:.2f} h on one, {p['segment_hours_4']:.2f} h on 4",
             f"(total {res['seconds']:.0f} s)"]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="bench_out", help="folder for bench_gpu.txt and bench_gpu.json")
    ap.add_argument("--cpu-sizes", action="store_true", help="the CPU's small sizes, also on a GPU")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: checks that every step runs (CI)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    env = device_facts()
    plan = "smoke" if args.smoke else "gpu" if env["device"] == "cuda" and not args.cpu_sizes else "cpu"
    sizes = SIZES[plan]
    with tempfile.TemporaryDirectory(prefix="urbanform-benchgpu-") as tmp:
        tmp = Path(tmp)
        res = {"environment": env, "plan": plan, "sizes": sizes,
               "features": bench_features(tmp, sizes["features_raster"], sizes["repeats"], sizes["model_batches"]),
               "segment": bench_segment(tmp, sizes["segment_raster"], sizes["repeats"]),
               "deepcluster": bench_deepcluster(sizes["dc_zone_px"], sizes["dc_epochs"])}
    res["projection"] = projection(res["features"], res["segment"])
    res["seconds"] = round(time.perf_counter() - t0, 1)
    text = report(res)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_gpu.txt").write_text(text + "\n", encoding="utf-8")
    (out / "bench_gpu.json").write_text(json.dumps(res, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
