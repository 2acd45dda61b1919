"""Seconds per DeepCluster epoch per 1000 tiles on this machine (`make bench` calls ``main``).

An epoch is one training pass over ``crops_per_tile`` offset crops per tile,
then the features of every tile with the new network, PCA and k-means: what
``DeepCluster.fit`` logs as an epoch's ``seconds``. Reported: the median over
the trained epochs, scaled to 1000 tiles, and for reference one feature pass
alone. Runs on a generated city (``make_city``, 64 px tiles by default).

    .venv/bin/python tests/bench/bench_deepcluster.py [--out bench_out] [--epochs 3] [--tile-px 64]
        [--crops-per-tile 8] [--backbone efficientnet_lite0] [--weights imagenet] [--zone-px 256]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402


def _cpu_busy() -> tuple[int, int]:
    with open("/proc/stat") as fh:
        v = [int(x) for x in fh.readline().split()[1:]]
    return v[0] + v[1] + v[2] + v[5] + v[6], sum(v)


def bench(epochs: int = 3, tile_px: int = 64, crops_per_tile: int = 8, backbone: str = "efficientnet_lite0",
          weights: str = "imagenet", zone_px: int = 256, batch_size: int = 64) -> dict:
    import torch

    from engine.clustering.deepcluster import DeepCluster
    from engine.features.extract import extract_features
    from engine.raster.tiling import TiledRaster
    from tests.synthetic import make_city

    with tempfile.TemporaryDirectory(prefix="urbanform-benchdc-") as tmp:
        city = make_city(Path(tmp) / "city.tif", zone_grid=(4, 4), zone_px=zone_px, seed=3)
        with TiledRaster(city.raster, f"{tile_px}px") as t:
            rows, cols = np.nonzero(np.ones(t.grid.shape, bool))
            n = len(rows)
            # coverage of zeros never improves, and patience = epochs keeps every epoch running
            dc = DeepCluster(4, backbone=backbone, weights=weights, epochs=epochs, patience=epochs,
                             crops_per_tile=crops_per_tile, batch_size=batch_size, seed=0)
            busy0, all0 = _cpu_busy()
            p0 = time.process_time()
            t0 = time.perf_counter()
            dc.fit(t, rows, cols, coverage=np.zeros(n))
            wall = time.perf_counter() - t0
            own = time.process_time() - p0
            busy1, all1 = _cpu_busy()
            out = np.empty((n, dc.extractor_.dim), dtype=np.float32)
            t1 = time.perf_counter()
            extract_features(t, rows, cols, dc.extractor_, out)
            feature_pass = time.perf_counter() - t1
    per_epoch = [h["seconds"] for h in dc.history_[1:]]
    ticks = os.sysconf("SC_CLK_TCK")
    other = max(0.0, (busy1 - busy0) / ticks - own) / wall   # cores other processes kept busy meanwhile
    return {
        "tiles": n, "tile_px": tile_px, "backbone": backbone, "weights": weights, "crops_per_tile": crops_per_tile,
        "batch_size": batch_size, "epochs": epochs, "lr": dc.lr_, "frozen_blocks": dc.frozen_blocks_,
        "precision": dc.extractor_.precision, "train_precision": dc.train_precision_,
        "device": dc.extractor_.device.type,
        "threads": torch.get_num_threads(), "epoch_seconds": per_epoch,
        "median_epoch_seconds": round(statistics.median(per_epoch), 2),
        "seconds_per_epoch_per_1000_tiles": round(statistics.median(per_epoch) * 1000 / n, 1),
        "feature_pass_seconds_per_1000_tiles": round(feature_pass * 1000 / n, 1),
        "other_load_cores": round(other, 2), "total_seconds": round(wall, 1),
    }


def report(r: dict) -> str:
    return (f"DeepCluster epoch ({r['backbone']} {r['weights']}, {r['tile_px']} px tiles, {r['crops_per_tile']} "
            f"crops/tile, batch {r['batch_size']}, lr {r['lr']}, {r['frozen_blocks']} blocks frozen, "
            f"{r['device']}, features {r['precision']}, training {r['train_precision']}, {r['threads']} threads): "
            f"{r['seconds_per_epoch_per_1000_tiles']} s per 1000 tiles (median of {r['epochs']} epochs over "
            f"{r['tiles']} tiles: {r['epoch_seconds']} s); one feature pass alone "
            f"{r['feature_pass_seconds_per_1000_tiles']} s per 1000 tiles; other processes kept "
            f"{r['other_load_cores']} cores busy meanwhile")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(REPO / "bench_out"))
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--tile-px", type=int, default=64)
    ap.add_argument("--crops-per-tile", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--weights", default="imagenet")
    ap.add_argument("--zone-px", type=int, default=256, help="city of 4x4 zones of this size (256: 1024 px)")
    args = ap.parse_args(argv)
    r = bench(args.epochs, args.tile_px, args.crops_per_tile, args.backbone, args.weights, args.zone_px,
              args.batch_size)
    print(report(r))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_deepcluster.json").write_text(json.dumps(r, indent=2))
    print(f"wrote {out / 'bench_deepcluster.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
