"""Quality evaluation of tile clustering (`make eval`; not part of the tests).

Measures, in one run:
- eta-squared of building coverage explained by the clusters on the real
  Kampala 0.15 m image with its OSM footprints, for the default recipe
  (unwhitened, automatic PCA dimensions) and the published one (256 whitened
  dimensions), against the chance level of randomly permuted labels;
- the adjusted Rand index of the clusters against the true zones of the
  synthetic city, for pretrained and random weights.

    .venv/bin/python tests/bench/eval.py [--out bench_out] [--data ../shared/data]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from engine.tools.cluster import ClusterParams, run_cluster  # noqa: E402
from tests.truth import building_coverage, eta_squared, random_eta_squared  # noqa: E402

KAMPALA_CASES = [  # (label, tile size, extra parameters)
    ("default: auto PCA dims, unwhitened", "64px", {}),
    ("published: 256 whitened dims", "64px", {"pca_dims": "256", "whiten": True}),
    ("default: auto PCA dims, unwhitened", "48px", {}),
    ("published: 256 whitened dims", "48px", {"pca_dims": "256", "whiten": True}),
]


def cluster(raster, workdir: Path, name: str, **kw):
    import geopandas as gpd

    params = ClusterParams(raster=str(raster), out=str(workdir / f"{name}.gpkg"), quicklook=False,
                           cache_dir=str(workdir / "cache"), **kw)
    manifest = run_cluster(params)
    return gpd.read_file(params.out, layer="tiles"), manifest


def eval_kampala(data: Path, workdir: Path) -> list[dict]:
    raster = data / "kampala_ug_oam_rgb_z20_epsg3857.tif"
    footprints = data / "kampala_ug_osm_buildings.geojson"
    rows = []
    for i, (label, tile, extra) in enumerate(KAMPALA_CASES):
        tiles, manifest = cluster(raster, workdir, f"kampala{i}", k=6, tile_size=tile,
                                  backbone="efficientnet_lite0", weights="imagenet", **extra)
        y = building_coverage(tiles, footprints)
        labels = tiles.cluster.to_numpy()
        rows.append({"case": label, "tile_size": tile, "tiles": len(tiles),
                     "pca_dims": manifest["clustering"]["pca_dims"], "whiten": manifest["clustering"]["whiten"],
                     "eta2": round(eta_squared(labels, y), 3), "eta2_random": round(random_eta_squared(labels, y), 3)})
    return rows


def eval_synthetic(workdir: Path) -> list[dict]:
    from sklearn.metrics import adjusted_rand_score

    from tests.synthetic import make_city

    city = make_city(workdir / "city.tif", zone_grid=(4, 4), zone_px=256, seed=3)
    rows = []
    for backbone, weights in (("efficientnet_lite0", "imagenet"), ("resnet18", "none")):
        tiles, _ = cluster(city.raster, workdir, f"city_{backbone}", k=4, tile_size="64px", backbone=backbone,
                           weights=weights)
        truth = city.zone_of_tiles(64)[tiles.row, tiles.col]
        rows.append({"backbone": backbone, "weights": weights, "tiles": len(tiles), "k": 4,
                     "ari": round(adjusted_rand_score(truth, tiles.cluster), 3)})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(REPO / "bench_out"))
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="urbanform-eval-") as tmp:
        kampala = eval_kampala(Path(args.data), Path(tmp))
        synthetic = eval_synthetic(Path(tmp))
    print("Kampala 0.15 m (OAM) with OSM footprints, efficientnet_lite0 ImageNet, K=6:")
    print("  eta-squared of building coverage explained by the clusters (random labels in brackets)")
    for r in kampala:
        print(f"  {r['tile_size']:>5} tiles ({r['tiles']:4d}), {r['case']:38s} dims {r['pca_dims']:3d}: "
              f"{r['eta2']:.3f} ({r['eta2_random']:.3f})")
    print("Synthetic city, 4 zones (16 blocks), K=4, 64 px tiles: adjusted Rand index vs true zones")
    for r in synthetic:
        print(f"  {r['backbone']:18s} weights {r['weights']:8s}: ARI {r['ari']:.3f} ({r['tiles']} tiles)")
    (out / "eval.json").write_text(json.dumps({"kampala": kampala, "synthetic": synthetic}, indent=2))
    print(f"wrote {out / 'eval.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
