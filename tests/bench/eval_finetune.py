"""Does ``classify --finetune`` beat the ImageNet features at a few labels? (not part of the tests)

For several draws of the labels (seeds), with and without --finetune, logistic regression:
- the synthetic city (tests/synthetic.py): 5 labelled tiles per zone (4 zones), as tests/engine/tools/
  test_classify.py draws them; the spatially cross-validated accuracy and the accuracy of all 256 tiles
  against the true zones;
- Kampala built vs unbuilt (the sample image and its OSM footprints): 10 tiles the footprints cover most
  (coverage >= 0.35) and 10 they do not touch (<= 0.02), as the test draws them; the cross-validated accuracy
  and the agreement on the tiles that are plainly one or the other (coverage >= 0.2 or <= 0.05).

    .venv/bin/python tests/bench/eval_finetune.py [--seeds 0 1 2] [--out bench_out]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from engine.tools.classify import ClassifyParams, run  # noqa: E402
from tests.synthetic import ZONES, make_city  # noqa: E402
from tests.truth import building_coverage, zone_labels  # noqa: E402

TILE = 64
SAMPLE = REPO / "resources" / "sample"


def centres(transform, rows, cols):
    from shapely.geometry import Point

    return [Point(*(transform * ((c + 0.5) * TILE, (r + 0.5) * TILE))) for r, c in zip(rows, cols, strict=True)]


def classify(raster, labels, field, out, finetune, cache):
    import geopandas as gpd

    started = time.perf_counter()
    m = run(ClassifyParams(raster=str(raster), out=str(out), labels=str(labels), field=field, finetune=finetune,
                           cache_dir=str(cache), overwrite=True))
    return m["classify"]["accuracy"], gpd.read_file(out, layer="tiles"), time.perf_counter() - started


def city_case(work: Path, seed: int, city) -> list[dict]:
    import geopandas as gpd

    zone = city.zone_of_tiles(TILE)
    names, points = zone_labels(city, TILE, 5, seed)
    labels = work / f"city_labels_{seed}.gpkg"
    gpd.GeoDataFrame({"zone": names}, geometry=points, crs=city.crs).to_file(labels)
    out = []
    for finetune in (False, True):
        acc, tiles, secs = classify(city.raster, labels, "zone", work / "city.gpkg", finetune, work / "cache")
        truth = np.array(ZONES)[zone[tiles.row, tiles.col]]
        out.append({"data": "synthetic city, 4 zones, 20 labels", "seed": seed, "finetune": finetune,
                    "cv_accuracy": acc, "all_tiles": float((tiles["class"].to_numpy() == truth).mean()),
                    "seconds": round(secs, 1)})
    return out


def kampala_case(work: Path, seed: int) -> list[dict]:
    import geopandas as gpd
    import rasterio
    from shapely.geometry import Point

    raster = SAMPLE / "kampala_ug_oam_rgb_z19_epsg3857.tif"
    with rasterio.open(raster) as src:
        transform, crs, n_rows, n_cols = src.transform, src.crs, src.height // TILE, src.width // TILE
    rows, cols = np.indices((n_rows, n_cols)).reshape(2, -1)
    squares = [Point(p).buffer(TILE * transform.a / 2, cap_style=3) for p in centres(transform, rows, cols)]
    grid = gpd.GeoDataFrame({"tile_id": rows * n_cols + cols}, geometry=squares, crs=crs)
    coverage = building_coverage(grid, SAMPLE / "kampala_ug_osm_buildings.geojson")
    rng = np.random.default_rng(seed)
    built = rng.choice(np.flatnonzero(coverage >= 0.35), 10, replace=False)
    bare = rng.choice(np.flatnonzero(coverage <= 0.02), 10, replace=False)
    picked = np.concatenate([built, bare])
    labels = work / f"kampala_labels_{seed}.gpkg"
    gpd.GeoDataFrame({"kind": ["built"] * 10 + ["unbuilt"] * 10},
                     geometry=centres(transform, rows[picked], cols[picked]), crs=crs).to_crs("EPSG:4326").to_file(
        labels)
    clear = (coverage >= 0.2) | (coverage <= 0.05)
    out = []
    for finetune in (False, True):
        acc, tiles, secs = classify(raster, labels, "kind", work / "kampala.gpkg", finetune, work / "cache")
        tiles = tiles.set_index("tile_id").loc[grid.tile_id]
        agree = ((tiles["class"].to_numpy() == "built") == (coverage >= 0.2))[clear].mean()
        out.append({"data": "Kampala built vs unbuilt, 20 labels", "seed": seed, "finetune": finetune,
                    "cv_accuracy": acc, "all_tiles": float(agree), "seconds": round(secs, 1)})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", default=None, help="folder for eval_finetune.json")
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="eval-finetune-") as tmp:
        work = Path(tmp)
        city = make_city(work / "city.tif", zone_grid=(4, 4), zone_px=256, seed=3)
        for seed in args.seeds:
            rows += city_case(work, seed, city) + kampala_case(work, seed)
            for r in rows[-4:]:
                print(json.dumps(r), flush=True)
    import pandas as pd

    frame = pd.DataFrame(rows)
    summary = frame.groupby(["data", "finetune"])[["cv_accuracy", "all_tiles", "seconds"]].mean().round(3)
    print(summary.to_string())
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "eval_finetune.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
