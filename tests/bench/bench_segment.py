"""Building segmentation speed, memory and seams (`make bench` calls this).

One run measures, with one U-Net (``--encoder``: the default encoder,
efficientnet_lite0 from its packaged ImageNet weights, unless told; resnet18 is
trained from scratch) trained for ``--train-minutes`` on a generated city (so
that the mask and the polygons are realistic; speed does not depend on the
weights otherwise):

1. throughput: ``run_segment`` over a generated ``--size`` px raster (default
   4096) with the default 25 % overlap (64 px of 256) and with none, against the
   model alone on random uint8 chips of the same size and batch (warm-up
   excluded; each repeat runs the model alone over as many chips as segment
   feeds it right before segment, and the ratio is the median of those pairs).
   Raster Mpx/s counts each raster pixel once;
   chip Mpx/s counts every pixel the model saw, overlaps included, so
   ``chip Mpx/s / model-only Mpx/s`` is the pipeline's efficiency (target >= 0.8
   with segment's defaults; the naive tiles are for comparison).
2. memory: peak RSS (wait4 ru_maxrss of ``python -m engine segment``) on a
   2048 px raster versus a 16384 px one (the 2048 px city mosaicked, uncompressed
   512 px blocks); target: large within +10 % of small.
3. seams: the same model on the eastern part of its city (never trained on),
   blended 64 px overlap versus naive non-overlapping 256 px tiles: IoU against
   the true footprints within 4 px of the naive tiles' borders and elsewhere.

    .venv/bin/python tests/bench/bench_segment.py [--out bench_out] [--size 4096] [--train-minutes 2]
        [--repeats 3] [--sections throughput,memory,seams] [--quick] [--encoder resnet18]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from tests.bench.bench import (LAUNCHER, CpuMonitor, RssSampler, contention_note, environment, make_city_raster,  # noqa: E402
                               median, note, write_mosaic)

CHIP, OVERLAP, BATCH = 256, 64, 8
BORDER_PX = 4
SHIFT = 100          # px: see run_seams


def train_model(folder: Path, minutes: float, encoder: str) -> dict:
    """A U-Net (``encoder``: ImageNet weights where packaged, else from scratch) on the western 60 % of a
    generated city; returns paths and areas."""
    from engine.tools.train_seg import TrainParams, run_train
    from tests.bench.eval_segment import split_areas
    from tests.synthetic import make_city

    city = make_city(folder / "city.tif", zone_grid=(4, 6), zone_px=256, seed=1)
    fp = folder / "city_buildings.gpkg"
    city.footprints.to_file(fp, layer="buildings")
    west, east = split_areas(str(city.raster), 0.6, folder)
    model = folder / "model.pt"
    note(f"training the bench model for {minutes:g} min")
    weights = "imagenet" if encoder == "efficientnet_lite0" else "none"
    m = run_train(TrainParams(str(city.raster), str(fp), str(model), encoder=encoder, weights=weights,
                              chip=CHIP, minutes=minutes, label_area=west, seed=0))
    return {"raster": str(city.raster), "footprints": str(fp), "east": east, "model": str(model), "encoder": encoder,
            "val_iou": m["val_iou"], "epochs": m["epochs_done"]}


# ----------------------------------------------------------------------------- 1 throughput
def model_only(net, repeats: int, batches: int = 6) -> float:
    """Model Mpx/s on random uint8 chips through the same runner as segment (bf16/channels_last as chosen)."""
    runner = seg_runner(net)
    chips = np.random.default_rng(0).integers(0, 256, (BATCH * batches, 3, CHIP, CHIP), dtype=np.uint8)
    model_pass(runner, chips[:2 * BATCH])                               # warm-up
    return median([model_pass(runner, chips) for _ in range(repeats)])


def seg_runner(net):
    """The runner ``segment`` builds (device and precision chosen as it chooses them)."""
    from engine.features.extract import choose_device, choose_precision
    from engine.segmentation.infer import Runner

    device = choose_device("auto")
    return Runner(net, device, choose_precision(device, "auto"), BATCH)


def model_pass(runner, chips: np.ndarray) -> float:
    """Mpx/s of one pass of the model over ``chips``, in batches run as segment runs them (on CPU several at
    once, sharing the runner's batch: ``features.streams``, ``infer.chips_per_batch``)."""
    from engine.features.streams import map_batches
    from engine.segmentation.infer import chips_per_batch

    step = chips_per_batch(runner)
    t0 = time.perf_counter()
    for _ in map_batches(runner, ((i, chips[i:i + step]) for i in range(0, len(chips), step)), runner.device):
        pass
    return len(chips) * CHIP * CHIP / 1e6 / (time.perf_counter() - t0)


def n_chips(width: int, height: int, overlap: int) -> int:
    from engine.segmentation.infer import chip_starts

    return len(chip_starts(width, CHIP, CHIP - overlap)) * len(chip_starts(height, CHIP, CHIP - overlap))


def run_throughput(model: str, tmp: Path, size: int, repeats: int) -> dict:
    """Each repeat times ``run_segment`` and, right before it, the model alone over as many random chips as
    segment feeds it: the ratio of each pair (model-only time / segment time) is taken, then the median, so a
    machine that speeds up or slows down during the bench moves both sides of a ratio alike."""
    from engine.tools.segment import SegmentParams, run_segment
    from engine.segmentation.modelfile import load_seg_model

    raster = tmp / f"city_{size}.tif"
    note(f"generating a {size} px city")
    make_city_raster(raster, size, seed=2)
    net, meta = load_seg_model(model)
    run_segment(SegmentParams(str(raster), (net, meta), str(tmp / "warm.gpkg"), overwrite=True))   # imports, caches
    runner = seg_runner(net)
    rng = np.random.default_rng(0)
    rows, model_rates = [], []
    with CpuMonitor() as mon:
        for overlap in (OVERLAP, 0):
            chips = n_chips(size, size, overlap)
            random_chips = rng.integers(0, 256, (chips, 3, CHIP, CHIP), dtype=np.uint8)
            model_pass(runner, random_chips[:2 * BATCH])                 # warm-up
            times, rates, ratios = [], [], []
            for _ in range(repeats):
                rates.append(model_pass(runner, random_chips))
                t0 = time.perf_counter()
                m = run_segment(SegmentParams(str(raster), (net, meta), str(tmp / "tp.gpkg"), overlap=overlap,
                                              overwrite=True))
                times.append(time.perf_counter() - t0)
                ratios.append(chips * CHIP * CHIP / 1e6 / times[-1] / rates[-1])
            del random_chips
            t = median(times)
            model_rates.extend(rates)
            rows.append({"overlap": overlap, "seconds": round(t, 3), "chips": chips,
                         "raster_mpx_s": round(size * size / 1e6 / t, 3),
                         "chip_mpx_s": round(chips * CHIP * CHIP / 1e6 / t, 3),
                         "model_only_mpx_s": round(median(rates), 3),
                         "ratio": round(median(ratios), 3), "ratios": [round(r, 3) for r in ratios],
                         "buildings": m["n_buildings"], "precision": m["precision"]})
    return {"size": size, "model_only_mpx_s": round(median(model_rates), 3), "rows": rows,
            "contention": mon.as_dict()}


# ----------------------------------------------------------------------------- 2 memory
def segment_measured(raster: Path, model: str, work: Path, label: str) -> dict:
    """``python -m engine segment`` in its own process (via LAUNCHER: see bench.py), peak RSS from wait4."""
    out = work / f"{label}.gpkg"
    cmd = [sys.executable, "-m", "engine", "segment", str(raster), "--model", model, "--out", str(out),
           "--overwrite", "--progress", "none"]
    log = work / f"{label}.log"
    t0 = time.perf_counter()
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(log), *cmd], cwd=REPO,
                                env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, text=True)
    sampler = RssSampler(int(launcher.stdout.readline()))
    sampler.start()
    result = json.loads(launcher.stdout.readline())
    launcher.wait()
    sampler.stop.set()
    sampler.join()
    if result["rc"] != 0:
        raise RuntimeError(f"segment failed on {raster.name}: {log.read_text()[-2000:]}")
    manifest = json.loads(out.with_name(f"{label}_manifest.json").read_text())
    return {"raster_px": manifest["width"], "maxrss_mib": round(result["maxrss_kib"] / 1024, 1),
            "wall_s": round(time.perf_counter() - t0, 1), "mpx_per_s": manifest["mpx_per_s"],
            "buildings": manifest["n_buildings"], "command": "python -m engine " + " ".join(cmd[3:])}


def run_memory(model: str, tmp: Path, small: int, large: int) -> dict:
    base = tmp / f"base_{small}.tif"
    note(f"generating the {small} / {large} px memory rasters")
    make_city_raster(base, small, seed=1)
    rows = {}
    with CpuMonitor() as mon:
        for size in (small, large):
            raster = tmp / f"mosaic_{size}.tif"
            write_mosaic(raster, size, base)
            note(f"segmenting {size} px in a fresh process")
            rows[size] = segment_measured(raster, model, tmp, f"mem_{size}")
            raster.unlink()
    ratio = rows[large]["maxrss_mib"] / rows[small]["maxrss_mib"]
    return {"small": rows[small], "large": rows[large], "ratio": round(ratio, 3), "contention": mon.as_dict()}


# ----------------------------------------------------------------------------- 3 seams
def border_band(height: int, width: int, r0: int, c0: int) -> np.ndarray:
    """Pixels within BORDER_PX of a naive tile border (multiples of CHIP from the raster origin)."""
    rows = (np.arange(r0, r0 + height) % CHIP)
    cols = (np.arange(c0, c0 + width) % CHIP)
    near_r = np.minimum(rows, CHIP - rows) <= BORDER_PX
    near_c = np.minimum(cols, CHIP - cols) <= BORDER_PX
    return near_r[:, None] | near_c[None, :]


def run_seams(trained: dict, tmp: Path) -> dict:
    import geopandas as gpd
    import rasterio
    from rasterio.windows import from_bounds

    from engine.segmentation.evaluate import pixel_scores
    from engine.tools.segment import SegmentParams, run_segment
    from engine.segmentation.labels import rasterize_footprints

    # The city's zones and streets follow a 256 px grid from its corner; so that the naive tiles' borders do
    # not fall on streets, segment a copy that starts SHIFT px into the city.
    raster = tmp / "seams.tif"
    with rasterio.open(trained["raster"]) as src:
        win = rasterio.windows.Window(SHIFT, SHIFT, src.width - SHIFT, src.height - SHIFT)
        profile = {**src.profile, "width": win.width, "height": win.height,
                   "transform": src.window_transform(win)}
        with rasterio.open(raster, "w", **profile) as dst:
            dst.write(src.read(window=win))
    masks = {}
    for name, overlap in (("blended", OVERLAP), ("naive", 0)):
        m = run_segment(SegmentParams(str(raster), trained["model"], str(tmp / f"seam_{name}.gpkg"),
                                      overlap=overlap, overwrite=True))
        masks[name] = m["outputs"]["mask"]
    with rasterio.open(raster) as ds:
        east = gpd.read_file(trained["east"]).to_crs(ds.crs).total_bounds
        win = from_bounds(*east, transform=ds.transform).round_offsets().round_lengths().intersection(
            rasterio.windows.Window(0, 0, ds.width, ds.height))
        truth = rasterize_footprints(str(raster), trained["footprints"], win).astype(bool)
    band = border_band(truth.shape[0], truth.shape[1], int(win.row_off), int(win.col_off))
    out = {"window": [int(win.col_off), int(win.row_off), int(win.width), int(win.height)],
           "border_px": BORDER_PX, "border_share": round(float(band.mean()), 3)}
    for name, path in masks.items():
        with rasterio.open(path) as ds:
            pred = ds.read(1, window=win) == 1
        for part, sel in (("border", band), ("interior", ~band)):
            p, t = pred[sel], truth[sel]
            s = pixel_scores(int((p & t).sum()), int((p & ~t).sum()), int((~p & t).sum()), int((~p & ~t).sum()))
            out[f"{name}_{part}_iou"] = round(s["iou"], 4)
    out["border_gain"] = round(out["blended_border_iou"] - out["naive_border_iou"], 4)
    return out


# ----------------------------------------------------------------------------- report
def report(res: dict) -> str:
    enc = (res.get("trained") or {}).get("encoder", "?")
    lines = [f"Building segmentation bench ({enc} U-Net, 256 px chips, batch 8)"]
    t = res.get("trained")
    if t:
        lines.append(f"  model: trained {t['epochs']} epochs on the synthetic city, validation IoU {t['val_iou']:.3f}")
    tp = res.get("throughput")
    if tp:
        lines.append(f"1 throughput on a {tp['size']} px raster; model only {tp['model_only_mpx_s']:.2f} Mpx/s "
                     "(random chips, as many as segment's, each pass right before a segment run)")
        for r in tp["rows"]:
            verdict = (("meets" if r["ratio"] >= 0.8 else "MISSES") + " 0.8") if r["overlap"] == OVERLAP \
                else "naive tiles, for comparison"
            lines.append(f"  overlap {r['overlap']:3d} px: {r['seconds']:.2f} s, raster {r['raster_mpx_s']:.2f} Mpx/s, "
                         f"chips {r['chip_mpx_s']:.2f} Mpx/s ({r['chips']} chips), chips/model-only "
                         f"{r['ratio']:.2f} ({verdict}; median of the pairs {r.get('ratios')}), "
                         f"{r['buildings']} buildings, {r['precision']}")
        lines.append(contention_note(tp["contention"]))
    mem = res.get("memory")
    if mem:
        s, big = mem["small"], mem["large"]
        verdict = "meets" if mem["ratio"] <= 1.10 else "MISSES"
        lines.append(f"2 peak RSS: {s['raster_px']} px {s['maxrss_mib']:.0f} MiB ({s['wall_s']:.0f} s), "
                     f"{big['raster_px']} px {big['maxrss_mib']:.0f} MiB ({big['wall_s']:.0f} s, "
                     f"{big['mpx_per_s']:.2f} Mpx/s, {big['buildings']} buildings): ratio {mem['ratio']:.3f} "
                     f"({verdict} <= 1.10)")
        lines.append(contention_note(mem["contention"]))
    sm = res.get("seams")
    if sm:
        lines.append(f"3 seams (eastern part, pixels within {sm['border_px']} px of naive tile borders: "
                     f"{sm['border_share']:.0%} of the area): IoU blended {sm['blended_border_iou']:.3f} vs naive "
                     f"{sm['naive_border_iou']:.3f} at borders (gain {sm['border_gain']:+.3f}); elsewhere "
                     f"{sm['blended_interior_iou']:.3f} vs {sm['naive_interior_iou']:.3f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(REPO / "bench_out"))
    ap.add_argument("--size", type=int, default=4096, help="throughput raster side (multiple of 256)")
    ap.add_argument("--train-minutes", type=float, default=2.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sections", default="throughput,memory,seams")
    ap.add_argument("--mem-small", type=int, default=2048)
    ap.add_argument("--mem-large", type=int, default=16384)
    ap.add_argument("--quick", action="store_true", help="1 min training, 2048 px, 4096 px memory, 1 repeat")
    ap.add_argument("--encoder", default=None, help="U-Net encoder (default: train-seg's default)")
    args = ap.parse_args(argv)
    if args.quick:
        args.train_minutes, args.size, args.mem_large, args.repeats = 1.0, 2048, 4096, 1
    from engine.features.runtime import tune_malloc

    tune_malloc()
    sections = {s.strip() for s in args.sections.split(",") if s.strip()}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res: dict = {"environment": environment()}
    with tempfile.TemporaryDirectory(prefix="urbanform-benchseg-") as tmp:
        tmp = Path(tmp)
        from engine.contract.defaults import DEFAULT_SEG_ENCODER

        trained = train_model(tmp, args.train_minutes, args.encoder or DEFAULT_SEG_ENCODER)
        res["trained"] = trained
        if "throughput" in sections:
            res["throughput"] = run_throughput(trained["model"], tmp, args.size, args.repeats)
        if "memory" in sections:
            res["memory"] = run_memory(trained["model"], tmp, args.mem_small, args.mem_large)
        if "seams" in sections:
            res["seams"] = run_seams(trained, tmp)
    text = report(res)
    print(text)
    (out / "bench_segment.json").write_text(json.dumps(res, indent=2, default=str))
    (out / "bench_segment.txt").write_text(text + "\n")
    missed = [r for r in res.get("throughput", {}).get("rows", []) if r["overlap"] == OVERLAP and r["ratio"] < 0.8]
    missed += [res["memory"]] if "memory" in res and res["memory"]["ratio"] > 1.10 else []
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
