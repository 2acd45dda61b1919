"""Quality of DeepCluster against its starting point (not part of the tests).

Measures, in one run:
- on the synthetic city (4 zone types in 16 blocks, K=4, 64 px tiles), the
  adjusted Rand index against the true zones of k-means on random-init
  ResNet-18 features, DeepCluster from them, k-means on pretrained
  EfficientNet-Lite0 features and DeepCluster from them, per epoch;
- on the real Kampala image with its OSM footprints (K=6, 64 px tiles), the
  same two DeepCluster runs' silhouette, NMI between successive epochs and
  eta-squared of building coverage, per epoch.

Both use building coverage for early stopping (patience 2) as a run with
``--buildings`` does; the epoch kept is marked. ``--compare`` adds the
pretrained run with the settings the issue measured drift with (lr 0.01,
nothing frozen), to show what the defaults guard against.

``--augment light,colour`` compares the training augmentations instead (issue
16: clusters that follow urban form, not colour): pretrained EfficientNet-Lite0
with each ``augment`` on the synthetic city (ARI) and on each image of
``--images`` (kampala, zanzibar: the 0.15 m z20 images, 64 px tiles, K=6),
scored per epoch by the eta-squared of the four building statistics of
tests/bench/eval_form.py (coverage, count, mean size, orientation; its
``scores`` and ``tile_stats``) and their mean. ``--patience`` defaults to the
number of epochs there, so every epoch is measured; the kept epoch is still
the one with the best eta-squared of coverage.

    .venv/bin/python tests/bench/eval_deepcluster.py [--out bench_out] [--data ../shared/data]
        [--epochs 4] [--crops-per-tile 8] [--raster z20|z19] [--compare]
    .venv/bin/python tests/bench/eval_deepcluster.py --augment light,colour [--images kampala,zanzibar]
        [--epochs 4] [--seeds 0,1,2] [--patience N]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from engine.clustering.deepcluster import DeepCluster  # noqa: E402
from engine.raster.tiling import TiledRaster  # noqa: E402
from tests.bench.eval_form import STATS, scores, tile_stats  # noqa: E402
from tests.truth import building_coverage, random_eta_squared  # noqa: E402

STARTS = [("resnet18", "none"), ("efficientnet_lite0", "imagenet")]
MIN_VALID = 0.5
IMAGES = {  # --images: (raster, footprints) in --data
    "kampala": ("kampala_ug_oam_rgb_z20_epsg3857.tif", "kampala_ug_osm_buildings.geojson"),
    "zanzibar": ("zanzibar_tz_oam_rgb_z20_epsg3857.tif", "zanzibar_tz_osm_buildings.geojson"),
}


def tiles_frame(tiled, rows, cols):
    """Tile polygons in the raster's working CRS (for the independent coverage overlay)."""
    import geopandas as gpd
    from shapely.geometry import box

    g = tiled.grid
    geoms = [box(*g.tile(int(r), int(c)).bounds) for r, c in zip(rows, cols)]
    return gpd.GeoDataFrame({"tile_id": rows * g.n_cols + cols}, geometry=geoms, crs=tiled.working_crs)


def fit(raster, footprints, k, truth=None, form=False, **params) -> dict:
    """One DeepCluster run; ``form``: also score every epoch by the four building statistics of eval_form."""
    from sklearn.metrics import adjusted_rand_score

    with TiledRaster(str(raster), "64px") as tiled:
        valid = tiled.valid_fraction()
        rows, cols = np.nonzero(valid >= MIN_VALID)
        frame = tiles_frame(tiled, rows, cols)
        coverage = building_coverage(frame, footprints)
        stats = tile_stats(frame, footprints) if form else None
        t0 = time.perf_counter()
        def show_epoch(stage, done, total, message="", **fields):
            if stage == "epoch" and message.startswith("epoch") and " loss " in f" {message} ":
                print(f"    {params.get('backbone')} {params.get('weights')}: {message}", flush=True)

        dc = DeepCluster(k, **{"seed": 0, **params}).fit(tiled, rows, cols, coverage=coverage, progress=show_epoch)
        seconds = time.perf_counter() - t0
    epochs = [dict(h) for h in dc.history_]
    for h in epochs:
        if truth is not None:
            h["ari"] = round(adjusted_rand_score(truth[rows, cols], dc.epoch_labels_[h["epoch"]]), 3)
        if stats is not None:
            h["form"] = scores(dc.epoch_labels_[h["epoch"]], stats)
    out = {"params": {k: v for k, v in params.items()}, "k": k, "tiles": len(rows), "epochs": epochs,
           "kept_epoch": dc.best_epoch_, "stopped_early": dc.stopped_early_, "lr": dc.lr_, "head_lr": dc.head_lr_,
           "frozen_blocks": dc.frozen_blocks_, "seconds": round(seconds, 1),
           "eta2_random": round(random_eta_squared(dc.labels_, coverage), 3)}
    if truth is not None:
        out["ari_start"] = epochs[0]["ari"]
        out["ari_final"] = round(adjusted_rand_score(truth[rows, cols], dc.labels_), 3)
    return out


def show(title: str, runs: list[dict], key: str) -> None:
    print(title)
    for r in runs:
        p = r["params"]
        aug = f" augment {p['augment']}" if "augment" in p else ""
        print(f"  {p['backbone']} weights {p['weights']}{aug} (lr {r['lr']}, head {r['head_lr']:g}, "
              f"{r['frozen_blocks']} blocks frozen, "
              f"{r['tiles']} tiles, {r['seconds']} s; eta2 of random labels {r['eta2_random']}):")
        for h in r["epochs"]:
            mark = " <- kept" if h["epoch"] == r["kept_epoch"] else ""
            cells = [f"epoch {h['epoch']}"]
            for name in dict.fromkeys((key, "eta2", "nmi", "silhouette", "loss")):
                v = h.get(name)
                cells.append(f"{name} {'  -  ' if v is None else f'{v:.3f}'}")
            print("    " + "  ".join(cells) + mark)


def synthetic_city(folder: Path):
    """(the synthetic city of 4 zone types in 4 x 4 blocks, its footprints file, the true zone of each 64 px tile)."""
    from tests.synthetic import make_city

    city = make_city(folder / "city.tif", zone_grid=(4, 4), zone_px=256, seed=3)
    fp = folder / "city_buildings.gpkg"
    city.footprints.to_file(fp)
    return city, fp, city.zone_of_tiles(64)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(REPO / "bench_out"))
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--crops-per-tile", type=int, default=8)
    ap.add_argument("--raster", choices=("z20", "z19"), default="z20")
    ap.add_argument("--compare", action="store_true")
    ap.add_argument("--skip-city", action="store_true")
    ap.add_argument("--skip-kampala", action="store_true")
    ap.add_argument("--augment", default=None, help="compare these training augmentations (e.g. light,colour)")
    ap.add_argument("--images", default="kampala", help="with --augment: kampala, zanzibar or both")
    ap.add_argument("--patience", type=int, default=None, help="default 2; with --augment: --epochs")
    ap.add_argument("--seeds", default="0", help="with --augment: run each case with these seeds (e.g. 0,1,2)")
    args = ap.parse_args(argv)
    if args.augment:
        return compare_augment(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    common = {"epochs": args.epochs, "crops_per_tile": args.crops_per_tile, "patience": args.patience or 2}
    result = {"settings": {**common, "raster": args.raster, "tile_size": "64px"}, "synthetic": [], "kampala": []}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="urbanform-evaldc-") as tmp:
        if not args.skip_city:
            city, fp, truth = synthetic_city(Path(tmp))
            for backbone, weights in STARTS:
                result["synthetic"].append(fit(city.raster, fp, 4, truth, backbone=backbone, weights=weights,
                                               **common))
            show("Synthetic city, K=4, 64 px tiles: ARI vs true zones per epoch (epoch 0 = k-means on the "
                 "starting network)", result["synthetic"], "ari")
        if not args.skip_kampala:
            data = Path(args.data)
            raster = (data / "kampala_ug_oam_rgb_z20_epsg3857.tif" if args.raster == "z20"
                      else REPO / "resources" / "sample" / "kampala_ug_oam_rgb_z19_epsg3857.tif")
            fp = data / "kampala_ug_osm_buildings.geojson"
            if not fp.exists():
                fp = REPO / "resources" / "sample" / "kampala_ug_osm_buildings.geojson"
            cases = [dict(backbone=b, weights=w) for b, w in STARTS]
            if args.compare:
                cases.append(dict(backbone="efficientnet_lite0", weights="imagenet", lr=0.01, freeze="none"))
            for case in cases:
                result["kampala"].append(fit(raster, fp, 6, **case, **common))
            show(f"Kampala {raster.name}, K=6, 64 px tiles: per epoch eta-squared of building coverage, NMI with "
                 "the previous epoch, silhouette", result["kampala"], "eta2")
    result["seconds"] = round(time.perf_counter() - t0, 1)
    (out / "eval_deepcluster.json").write_text(json.dumps(result, indent=2))
    print(f"total {result['seconds']} s (2 shared cores); wrote {out / 'eval_deepcluster.json'}")
    return 0


def show_form(title: str, runs: list[dict]) -> None:
    print(title)
    for r in runs:
        print(f"  augment {r['params']['augment']} seed {r['params'].get('seed', 0)} ({r['tiles']} tiles, "
              f"{r['seconds']} s; kept epoch {r['kept_epoch']}):")
        for h in r["epochs"]:
            f = h["form"]
            mark = " <- kept" if h["epoch"] == r["kept_epoch"] else ""
            print(f"    epoch {h['epoch']}  " + "  ".join(f"{s} {f[s]:.3f}" for s in STATS)
                  + f"  | mean {f['mean']:.3f} (random {f['random']:.3f})" + mark)


def compare_augment(args) -> int:
    """Pretrained EfficientNet-Lite0, one DeepCluster run per augmentation on the city and each image."""
    from engine.contract.defaults import AUGMENTS

    modes = args.augment.split(",")
    bad = [m for m in modes if m not in AUGMENTS]
    images = args.images.split(",")
    if bad or any(i not in IMAGES for i in images):
        raise SystemExit(f"--augment takes {', '.join(AUGMENTS)}; --images {', '.join(IMAGES)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    common = {"epochs": args.epochs, "crops_per_tile": args.crops_per_tile, "patience": args.patience or args.epochs,
              "backbone": "efficientnet_lite0", "weights": "imagenet"}
    result = {"settings": {**common, "tile_size": "64px", "augment": modes}, "synthetic": []}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="urbanform-evaldc-") as tmp:
        if not args.skip_city:
            city, fp, truth = synthetic_city(Path(tmp))
            for mode in modes:
                result["synthetic"].append(fit(city.raster, fp, 4, truth, augment=mode, **common))
            show("Synthetic city, K=4, 64 px tiles: ARI vs true zones per epoch", result["synthetic"], "ari")
    data = Path(args.data)
    seeds = [int(v) for v in args.seeds.split(",")]
    for name in images:
        raster, fp = (data / f for f in IMAGES[name])
        result[name] = [fit(raster, fp, 6, form=True, augment=mode, seed=seed, **common)
                        for seed in seeds for mode in modes]
        show_form(f"{raster.name}, K=6, 64 px tiles: eta-squared of the building statistics per epoch",
                  result[name])
    summary = result["summary"] = {}
    print("\nmean of the four statistics' eta-squared (mean over seeds " + args.seeds + "): start (epoch 0), "
          "the epoch kept (best coverage), the last epoch")
    for name in images:
        for mode in modes:
            runs = [r for r in result[name] if r["params"]["augment"] == mode]
            row = {}
            for key, pick in (("start", lambda r: r["epochs"][0]), ("kept", lambda r: r["epochs"][r["kept_epoch"]]),
                              ("last", lambda r: r["epochs"][-1])):
                row[key] = round(float(np.mean([pick(r)["form"]["mean"] for r in runs])), 3)
                row[key + "_cov"] = round(float(np.mean([pick(r)["form"]["bldg_cov"] for r in runs])), 3)
            row["seconds"] = round(float(np.mean([r["seconds"] for r in runs])), 1)
            summary[f"{name}/{mode}"] = row
            print(f"  {name:9s} {mode:7s} start {row['start']:.3f}  kept {row['kept']:.3f}  last {row['last']:.3f}   "
                  f"(coverage: {row['start_cov']:.3f} / {row['kept_cov']:.3f} / {row['last_cov']:.3f}; "
                  f"{row['seconds']} s per run)")
    result["seconds"] = round(time.perf_counter() - t0, 1)
    path = out / "eval_deepcluster_augment.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"total {result['seconds']} s (2 shared cores); wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
