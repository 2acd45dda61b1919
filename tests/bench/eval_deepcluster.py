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

    .venv/bin/python tests/bench/eval_deepcluster.py [--out bench_out] [--data ../shared/data]
        [--epochs 4] [--crops-per-tile 8] [--raster z20|z19] [--compare]
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
from tests.truth import building_coverage, random_eta_squared  # noqa: E402

STARTS = [("resnet18", "none"), ("efficientnet_lite0", "imagenet")]
MIN_VALID = 0.5


def tiles_frame(tiled, rows, cols):
    """Tile polygons in the raster's working CRS (for the independent coverage overlay)."""
    import geopandas as gpd
    from shapely.geometry import box

    g = tiled.grid
    geoms = [box(*g.tile(int(r), int(c)).bounds) for r, c in zip(rows, cols)]
    return gpd.GeoDataFrame({"tile_id": rows * g.n_cols + cols}, geometry=geoms, crs=tiled.working_crs)


def fit(raster, footprints, k, truth=None, **params) -> dict:
    from sklearn.metrics import adjusted_rand_score

    with TiledRaster(str(raster), "64px") as tiled:
        valid = tiled.valid_fraction()
        rows, cols = np.nonzero(valid >= MIN_VALID)
        coverage = building_coverage(tiles_frame(tiled, rows, cols), footprints)
        t0 = time.perf_counter()
        def show_epoch(stage, done, total, message="", **fields):
            if stage == "epoch" and message.startswith("epoch") and " loss " in f" {message} ":
                print(f"    {params.get('backbone')} {params.get('weights')}: {message}", flush=True)

        dc = DeepCluster(k, seed=0, **params).fit(tiled, rows, cols, coverage=coverage, progress=show_epoch)
        seconds = time.perf_counter() - t0
    epochs = [dict(h) for h in dc.history_]
    for h in epochs:
        if truth is not None:
            h["ari"] = round(adjusted_rand_score(truth[rows, cols], dc.epoch_labels_[h["epoch"]]), 3)
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
        print(f"  {p['backbone']} weights {p['weights']} (lr {r['lr']}, head {r['head_lr']:g}, {r['frozen_blocks']} blocks frozen, "
              f"{r['tiles']} tiles, {r['seconds']} s; eta2 of random labels {r['eta2_random']}):")
        for h in r["epochs"]:
            mark = " <- kept" if h["epoch"] == r["kept_epoch"] else ""
            cells = [f"epoch {h['epoch']}"]
            for name in dict.fromkeys((key, "eta2", "nmi", "silhouette", "loss")):
                v = h.get(name)
                cells.append(f"{name} {'  -  ' if v is None else f'{v:.3f}'}")
            print("    " + "  ".join(cells) + mark)


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
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    common = {"epochs": args.epochs, "crops_per_tile": args.crops_per_tile, "patience": 2}
    result = {"settings": {**common, "raster": args.raster, "tile_size": "64px"}, "synthetic": [], "kampala": []}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="urbanform-evaldc-") as tmp:
        if not args.skip_city:
            from tests.synthetic import make_city

            city = make_city(Path(tmp) / "city.tif", zone_grid=(4, 4), zone_px=256, seed=3)
            fp = Path(tmp) / "city_buildings.gpkg"
            city.footprints.to_file(fp)
            truth = city.zone_of_tiles(64)
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


if __name__ == "__main__":
    sys.exit(main())
