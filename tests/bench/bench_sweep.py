#!/usr/bin/env python
"""Bench: what a k-means sweep costs over the feature extraction it needs (issue 4, item 7).

Run from the repository root::

    .venv/bin/python tests/bench/bench_sweep.py [--size 2048] [--k 2,4,6,8,10,12]
        [--tile-sizes 32px,64px,128px] [--repeats 1] [--out bench_out/]

On a generated raster (``tests.synthetic.make_city``, ``--size`` px square)
with efficientnet_lite0 (packaged ImageNet weights) it times

1. features alone: building the extractor, the validity scan and the feature
   extraction of every tile at each tile size (``runs._compute_features``,
   the same code the sweep uses), in a fresh cache folder;
2. the whole sweep (``engine.tools.sweep.run_sweep``): the same features (another
   fresh cache folder, so nothing is reused from step 1), PCA once per tile
   size, k-means for every K, metrics, relabelling, the GeoPackage layers, the
   CSV, the plots and the manifest;

and reports the ratio sweep / features (target: at most 1.3) and the sweep's
own timings per stage. With ``--repeats N`` the two are measured N times,
alternating (odd rounds sweep first), and the medians are compared. Because
the two are separate runs, load from other processes moves the ratio; the
report adds the same ratio from the sweep's own stage timings (total over
total less clustering, metrics, plots and writing), which one load shapes. Every figure comes with how many
cores other processes used meanwhile (the machine is shared; above ~0.2 the
figures are disturbed). The report goes to stdout, the figures to
OUT/bench_sweep.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
for p in (str(ROOT), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

TARGET = 1.3


def note(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


RECIPE: dict = {}      # --pool/--cnn-px given on the command line (default: the sweep's own defaults)


def features_alone(raster: str, sizes: list[str], cache: Path, backbone: str, weights: str) -> dict:
    """Extractor + scan + feature extraction of every tile size, as the sweep does them."""
    import numpy as np

    from engine.io import sha256_file
    from engine.progress import Progress
    from engine.raster.tiling import TiledRaster
    from engine.tools.cluster import _compute_features, feature_extractor, feature_key
    from engine.tools.sweep import SweepParams

    params = SweepParams(raster, "unused.gpkg", backbone=backbone, weights=weights, cache_dir=str(cache), **RECIPE)
    progress = Progress("none")
    t0 = time.perf_counter()
    checksum = sha256_file(raster)
    extractor = feature_extractor(params)          # the sweep's own recipe (--pool, --cnn-px defaults)
    per_size = {}
    for size in sizes:
        t = time.perf_counter()
        with TiledRaster(raster, size, seed=params.seed) as tiled:
            valid = tiled.valid_fraction()
            rows, cols = np.nonzero(valid >= params.min_valid)
            key = feature_key(checksum, tiled, extractor, params, rows, cols)
            _, hit, _ = _compute_features(tiled, rows, cols, extractor, params, cache, key, progress)
            assert not hit, "the feature cache must be fresh"
        per_size[size] = {"tiles": int(len(rows)), "seconds": round(time.perf_counter() - t, 3)}
    return {"seconds": round(time.perf_counter() - t0, 3), "per_size": per_size}


def sweep(raster: str, sizes: list[str], ks: str, cache: Path, out: Path, backbone: str, weights: str,
          n_init: int | None) -> dict:
    from engine.tools.sweep import SweepParams, run_sweep

    kw = {} if n_init is None else {"n_init": n_init}
    params = SweepParams(raster, str(out), k=ks, tile_size=",".join(sizes), backbone=backbone, weights=weights,
                         cache_dir=str(cache), overwrite=True, **RECIPE, **kw)
    t0 = time.perf_counter()
    manifest = run_sweep(params)
    seconds = time.perf_counter() - t0
    assert manifest["complete"]
    assert not any(p.get("cache_hit") for p in manifest["parts"].values()), "the feature cache must be fresh"
    return {"seconds": round(seconds, 3), "timings_s": manifest["timings_s"],
            "ks": manifest["layers"], "tiles": {k: v["tiles"] for k, v in manifest["parts"].items()}}


def warm_up(backbone: str, weights: str) -> None:
    """One small batch first, so neither measurement pays torch's one-time start-up."""
    import numpy as np

    from engine.features.extract import FeatureExtractor

    ex = FeatureExtractor(backbone, weights)
    ex(np.zeros((8, 3, 64, 64), dtype=np.uint8))


def stage_split(timings: dict) -> dict:
    """Seconds per stage summed over the tile sizes (features, pca, kmeans, metrics, plots, write, commit)."""
    out: dict[str, float] = {}
    for part in timings.get("parts", {}).values():
        for k, v in part.items():
            if k != "total":
                out[k] = round(out.get(k, 0.0) + v, 3)
    out["final (metric plot, csv, manifest)"] = timings.get("final", 0.0)
    return out


def within_ratio(run: dict) -> float:
    """Sweep time over the sweep time less what it spends beyond features (clustering, metrics, plots, writes).

    Both sides come from one run under one load, so this is robust where the
    separate measurement of features alone is disturbed by other processes.
    """
    extra = sum(v for k, v in stage_split(run["timings_s"]).items() if k != "features")
    return run["seconds"] / max(run["seconds"] - extra, 1e-9)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=2048, help="side of the generated raster in px (default 2048)")
    ap.add_argument("--k", default="2,4,6,8,10,12", help="K values (default 2,4,6,8,10,12)")
    ap.add_argument("--tile-sizes", default="32px,64px,128px")
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--weights", default="imagenet")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--n-init", type=int, default=None, help="k-means restarts (default: the sweep's)")
    ap.add_argument("--pool", default=None, help="feature depths, multi or last (default: the sweep's)")
    ap.add_argument("--cnn-px", default=None, help="CNN input size or 'native' (default: the sweep's)")
    ap.add_argument("--out", default="bench_out", help="folder for bench_sweep.json")
    ap.add_argument("--tmp", default=None, help="folder for the generated raster (default: system temp)")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    from bench import CpuMonitor, contention_note

    from engine.tools.sweep import parse_tile_sizes
    from tests.synthetic import make_city

    args = parse_args(argv)
    RECIPE.update({k: v for k, v in (("pool", args.pool), ("cnn_px", args.cnn_px)) if v is not None})
    sizes = parse_tile_sizes(args.tile_sizes)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-sweep-", dir=args.tmp) as tmp:
        tmp = Path(tmp)
        zones = max(1, args.size // 256)
        note(f"generating a {zones * 256} px city")
        city = make_city(tmp / "city.tif", zone_grid=(zones, zones), zone_px=256, seed=3)
        raster = str(city.raster)
        warm_up(args.backbone, args.weights)
        feats, sweeps = [], []
        for r in range(args.repeats):
            # odd rounds measure the sweep first, so a trend in the machine's load favours neither
            for what in (("features", "sweep") if r % 2 == 0 else ("sweep", "features")):
                if what == "features":
                    note(f"round {r + 1}/{args.repeats}: features alone")
                    with CpuMonitor() as mon:
                        f = features_alone(raster, sizes, tmp / f"cache_f{r}", args.backbone, args.weights)
                    f["cpu"] = mon.as_dict()
                    feats.append(f)
                    note(f"  {f['seconds']:.1f} s")
                else:
                    note(f"round {r + 1}/{args.repeats}: the sweep")
                    (tmp / f"sweep{r}").mkdir()
                    with CpuMonitor() as mon:
                        s = sweep(raster, sizes, args.k, tmp / f"cache_s{r}", tmp / f"sweep{r}" / "SWEEP.gpkg",
                                  args.backbone, args.weights, args.n_init)
                    s["cpu"] = mon.as_dict()
                    sweeps.append(s)
                    note(f"  {s['seconds']:.1f} s")
    f_med = statistics.median(f["seconds"] for f in feats)
    s_med = statistics.median(s["seconds"] for s in sweeps)
    ratio = s_med / f_med
    # the same question under one load: the sweep's own stage timings, beyond its feature extraction
    inner = statistics.median(within_ratio(s) for s in sweeps)
    result = {
        "raster_px": zones * 256, "tile_sizes": sizes, "k": args.k, "backbone": args.backbone,
        "weights": args.weights, "repeats": args.repeats, "features_alone_s": f_med, "sweep_s": s_med,
        "ratio": round(ratio, 3), "target": TARGET, "pass": ratio <= TARGET,
        "ratio_within_sweep": round(inner, 3),
        "features_runs": feats, "sweep_runs": sweeps, "sweep_stages_s": stage_split(sweeps[-1]["timings_s"]),
        "command": "python tests/bench/bench_sweep.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    (out_dir / "bench_sweep.json").write_text(json.dumps(result, indent=2) + "\n")
    tiles = ", ".join(f"{k}: {v}" for k, v in sweeps[-1]["tiles"].items())
    print(f"k-means sweep vs feature extraction ({zones * 256} px city, {args.backbone}, K {args.k})")
    print(f"  tiles: {tiles}")
    print(f"  features alone: {f_med:7.2f} s  (median of {args.repeats})")
    for size, v in feats[-1]["per_size"].items():
        print(f"      {size:>6}: {v['seconds']:6.2f} s")
    print(f"  whole sweep:    {s_med:7.2f} s")
    for k, v in result["sweep_stages_s"].items():
        print(f"      {k:>6}: {v:6.2f} s")
    print(f"  ratio sweep / features: {ratio:.2f} (target <= {TARGET}): {'PASS' if ratio <= TARGET else 'FAIL'}")
    print(f"  within the sweep (same load): total / (total - clustering, metrics, plots, writing) = {inner:.2f}")
    print(contention_note(feats[-1]["cpu"]).replace("this section", "features alone"))
    print(contention_note(sweeps[-1]["cpu"]).replace("this section", "the sweep"))
    print(f"  figures in {out_dir / 'bench_sweep.json'}")
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
