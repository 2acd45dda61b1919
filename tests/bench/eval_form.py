"""Do the clusters follow urban form? Feature recipes compared on every labelled real image (`make eval`).

For each variant, every real image with building footprints in ../shared/data
is cut into tiles of 19.2 m on the ground (64 px at 0.3 m: 65 px on Kampala
zoom 19, 129 on zoom 20 and Zanzibar, 38 on Atlanta's 0.5 m), clustered with
K=6 (seeds 0..N-1 with --seeds N: the seed of k-means and of the tiling's
stretch samples; every score is then the mean over the seeds, and "sd" the
standard deviation of the overall mean across them), and the clusters are
scored by the eta-squared (share of variance explained) of four building
statistics of engine.stats.measures:

- bldg_cov (footprint share) and bldg_count (footprints whose centroid is in
  the tile): over all tiles (0 where there is no building);
- bldg_mean (mean footprint area, m2) and bldg_orien (mean deviation of the
  footprints from the cardinal directions, 0-45 deg): over the tiles that
  hold at least one footprint, since neither is defined on an empty tile.
  bldg_orien is folded to 0-45 degrees (0 = aligned with N-S/E-W, 45 =
  diagonal), so it is not circular: 0 and 45 are the two ends of the scale.

"mean" is the mean of the four; "random" the same mean for randomly permuted
labels (same cluster sizes, median of 20 permutations), the chance level.
The synthetic city (tests/synthetic.py, 4 zones in 16 blocks, 64 px tiles,
K=4) gives the adjusted Rand index against the true zones.

Variants: colour statistics (mean and std of RGB, no CNN); the CNN's last
block at the tile's own pixels (the old default); multi-depth pooling
(--pool multi); tiles resized to 128 or 224 px before the CNN (--cnn-px);
context (eval only: the features of a window twice the tile, centred on it,
appended) or the mean features of the 8 neighbouring tiles (eval only);
scales (eval only: the default's features of the tile at 128 and at 64 px
side by side); colour-joined (eval only: the mean and standard deviation of
each band joined to the default's features as structure is); own (the
default's features made here, by FeatureExtractor on the tiles the run cut:
the baseline of the eval-only variants) and flips, rotations, d4 (eval only:
those features averaged over the tile and its horizontal flip, its four
rotations by 90 degrees, or all eight symmetries of the square; none of them
changes the four statistics); sharpen-G (eval only: each principal component
of the default's features times its standard deviation over the first's to
the power G, so G = 0 is the default and G = -1 whitening) and drop-pcN (the
first N principal directions projected out); other clusterers on the
default's features in k-means' space (eval only: a Gaussian mixture with full
covariances, Ward's agglomerative clustering, spectral clustering on a
10-nearest-neighbour graph, k-means on the principal components without the
L2 normalisation) and the default's labels smoothed spatially (each tile takes
the majority label of its 3 x 3 neighbourhood); sqrt, zscore, centred (eval
only: each depth's cached features signed-square-rooted, standardised per
feature, or centred on the image's mean, then normalised again); decolour
(eval only: the cached features less their least-squares fit on the tile's
colour statistics);
structure (eval only: five image measures beside the CNN features, joined as
--form joins morphometrics at weight 0.5: edge density at three scales, for
building size, and the dominant edge orientation folded to 0-45 degrees);
--whiten and --pca-dims 16 on the default features; --form with the
footprints at five weights; and form-segmented: --form with a building model
instead of footprints (Zanzibar only). For it, train-seg learns on the western
60 % of the image (the footprints given there only, --label-area;
efficientnet_lite0 from ImageNet, --seg-minutes of training, seed 0), then
``cluster --form MODEL.pt`` maps the whole image with it and clusters with
those buildings' morphometrics (weight 2); the clusters are scored against the
true footprints as every variant is, on all tiles and on the eastern tiles
alone (the part the model never saw). Its synthetic ARI is not measured (no
model of the synthetic city is trained).

Measured on Zanzibar (465 tiles), one run with a 4-minute training (6 epochs,
validation IoU 0.834; 114 buildings mapped for 121 true, east pixel IoU 0.710,
object F1 0.396), before the default weighted its depths (multi-128 was then
blocks-1-1-1):

    .venv/bin/python tests/bench/eval_form.py --only multi-128,form-2,form-segmented --seg-minutes 4

    variant         coverage count mean size orientation  mean  (random)  east tiles only
    multi-128         0.50   0.33    0.08      0.05      0.239 (0.030)   0.248 (0.129)
    form-2            0.64   0.83    0.00      0.00      0.368 (0.031)   0.377 (0.114)
    form-segmented    0.62   0.62    0.16      0.08      0.370 (0.026)   0.343 (0.102)

A second model trained the same way (``python -m engine train-seg`` with
--minutes 4 --label-area on the west, then --seg-model MODEL.pt here) gave
0.342 (east 0.367; 91 buildings mapped, east IoU 0.699): timed training on a
busy 2-core machine sees a different number of chips.

At other tile sizes (--tile-m; the synthetic city keeps 64 px tiles), five
seeds each (README, "Features that follow urban form"): 9.6 m tiles, 0.15 m
per CNN pixel (multi-64) 0.192 against 0.181 for 128 px; 38.4 m tiles, 0.351
(multi-256) against 0.441 for 128 px and 0.417 for tiles as read.

    .venv/bin/python tests/bench/eval_form.py [--out bench_out] [--data ../shared/data] [--only NAME,...]
        [--tile-m 19.2] [--seeds 1] [--seg-minutes 4] [--seg-model MODEL.pt]
        [--lite0-depths 4,10 --depth-weights 0.5,1,1]

Without --only every variant runs except those of ON_REQUEST (own, the
symmetries, scales, colour-joined, sharpen-G, drop-pcN, the other clusterers, the reshaped depths: measured once, README
"What did not help"). ``--only`` also takes multi-N (the default's features with --cnn-px N) and
blocks-A-B-C (the default's features with its three depths weighted A, B, C;
blocks-1-1-1 is the default before the depth weights) and pca-N (the default
with --pca-dims N). ``--lite0-depths B,... --depth-weights W,...`` makes --pool
multi tap other EfficientNet-Lite0 blocks for the whole run (default 4,10 with
0.5,1,1): every multi variant then uses them.
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

from engine.contract import defaults  # noqa: E402
from engine.tools.cluster import ClusterParams, run_cluster  # noqa: E402

TILE_M = 19.2
K = 6
STATS = ("bldg_cov", "bldg_count", "bldg_mean", "bldg_orien")
IMAGES = (  # (name, raster, footprints)
    ("kampala_z19", "kampala_ug_oam_rgb_z19_epsg3857.tif", "kampala_ug_osm_buildings.geojson"),
    ("kampala_z20", "kampala_ug_oam_rgb_z20_epsg3857.tif", "kampala_ug_osm_buildings.geojson"),
    ("zanzibar_z20", "zanzibar_tz_oam_rgb_z20_epsg3857.tif", "zanzibar_tz_osm_buildings.geojson"),
    ("atlanta_pan", "atlanta_us_spacenet4_pan_0p5m.tif", "atlanta_us_spacenet4_buildings.geojson"),
)
# (name, what, cluster parameters; "colour" and "context" are computed here, not by the engine)
VARIANTS = (
    ("colour", "k-means on mean and std of RGB (no CNN)", None),
    ("last-native", "last block, tiles as read (the old default)", {"pool": "last", "cnn_px": "native"}),
    ("multi-native", "--pool multi, tiles as read", {"pool": "multi", "cnn_px": "native"}),
    ("last-128", "last block, --cnn-px 128", {"pool": "last", "cnn_px": 128}),
    ("multi-128", "--pool multi --cnn-px 128, depths weighted 0.5, 1, 1 (the default)", {}),
    ("multi-224", "--pool multi --cnn-px 224", {"pool": "multi", "cnn_px": 224}),
    ("context", "multi-128 + features of a 2x window around the tile", "context"),
    ("scales", "multi-128 + the same features of the tile at 64 px (two scales side by side)", "scales"),
    ("neighbours", "multi-128 + mean features of the 8 neighbouring tiles", "neighbours"),
    ("structure", "multi-128 + image structure (edge density at 3 scales, edge orientation), weight 0.5",
     "structure"),
    ("own", "multi-128's features made here, as the symmetry variants make them (their baseline)", "own"),
    ("flips", "multi-128, features averaged over the tile and its horizontal flip", "flips"),
    ("rotations", "multi-128, features averaged over the tile's 4 rotations by 90 degrees", "rotations"),
    ("d4", "multi-128, features averaged over the 8 symmetries of the square", "d4"),
    ("colour-joined", "multi-128 + mean and std of each band, joined as structure is (weight 0.5)",
     "colour-joined"),
    ("drop-pc1", "multi-128 with its first principal direction projected out", "drop-pc1"),
    ("drop-pc2", "multi-128 with its first two principal directions projected out", "drop-pc2"),
    ("sharpen-0.5", "multi-128, each principal component scaled by (its sd / the first's) ** 0.5", "sharpen-0.5"),
    ("sharpen-1", "multi-128, each principal component scaled by its sd / the first's", "sharpen-1"),
    ("gmm", "multi-128's space, a Gaussian mixture (full covariances) instead of k-means", "clusterer-gmm"),
    ("ward", "multi-128's space, Ward's agglomerative clustering instead of k-means", "clusterer-ward"),
    ("spectral", "multi-128's space, spectral clustering (10-nearest-neighbour graph) instead of k-means",
     "clusterer-spectral"),
    ("no-l2", "multi-128, k-means on the principal components without the L2 normalisation", "clusterer-no-l2"),
    ("smoothed", "multi-128's labels, each tile given the majority label of its 3 x 3 tiles", "clusterer-smoothed"),
    ("sqrt", "multi-128, each depth's features signed-square-rooted, then L2-normalised again", "clusterer-sqrt"),
    ("zscore", "multi-128, each feature standardised over the image's tiles (each depth's block then scaled to "
     "unit mean norm)", "clusterer-zscore"),
    ("centred", "multi-128, each depth's features centred on the image's mean before the L2 normalisation",
     "clusterer-centred"),
    ("decolour", "multi-128, less what a least-squares fit on the tile's colour (mean and sd of each band) "
     "predicts of its features", "clusterer-decolour"),
    ("whiten", "multi-128, --whiten", {"whiten": True}),
    ("pca-16", "multi-128, --pca-dims 16", {"pca_dims": "16"}),
    ("form-0.5", "default + --form footprints --form-weight 0.5", {"form_weight": 0.5, "form": True}),
    ("form-1", "default + --form footprints (weight 1)", {"form_weight": 1.0, "form": True}),
    ("form-2", "default + --form footprints --form-weight 2", {"form_weight": 2.0, "form": True}),
    ("form-4", "default + --form footprints --form-weight 4", {"form_weight": 4.0, "form": True}),
    ("form-8", "default + --form footprints --form-weight 8", {"form_weight": 8.0, "form": True}),
    ("form-segmented", "default + --form MODEL.pt (buildings mapped by train-seg's model; Zanzibar only)",
     {"form_weight": 2.0, "form": "segmented"}),
)
# measured once (README, "What did not help") and run with --only only, so that make eval stays shorter
ON_REQUEST = ("own", "flips", "rotations", "d4", "scales", "colour-joined", "drop-pc1", "drop-pc2", "sharpen-0.5",
              "sharpen-1", "gmm", "ward", "spectral", "no-l2", "smoothed", "sqrt", "zscore", "centred",
              "decolour")
# --form with mapped buildings: a building model is trained on the western WEST share of the image (its
# footprints given there only, --label-area), then cluster --form MODEL.pt maps the whole image with it; the
# clusters are scored against the true footprints, on all tiles and on the eastern tiles (never seen in training)
SEGMENTED_IMAGES = ("zanzibar_z20",)
WEST = 0.6


def tile_px(raster: Path, tile_m: float = TILE_M) -> int:
    from engine.raster.tiling import ground_pixel_size

    return int(round(tile_m / ground_pixel_size(str(raster))))


def variant(name: str) -> tuple:
    """A named variant of VARIANTS, or ``multi-N`` for any CNN size N (for example multi-64 or multi-256 with
    --tile-m: the default's features at another size)."""
    for v in VARIANTS:
        if v[0] == name:
            return v
    if name.startswith("multi-") and name[6:].isdigit():
        return name, f"--pool multi --cnn-px {name[6:]}", {"pool": "multi", "cnn_px": int(name[6:])}
    if name.startswith("pca-") and name[4:].isdigit():
        return name, f"multi-128, --pca-dims {name[4:]}", {"pca_dims": name[4:]}
    if name.startswith("blocks-") and len(block_weights(name)) == 3:
        return name, f"multi-128 with its three depths weighted {', '.join(name[7:].split('-'))}", name
    raise SystemExit(f"eval_form: no variant {name!r}; use one of {', '.join(v[0] for v in VARIANTS)}, multi-N "
                     "or blocks-A-B-C")


def block_weights(name: str) -> list:
    """``blocks-0.5-1-1``: the weights of the default's three L2-normalised depths (blocks 4 and 10, last)."""
    try:
        return [float(w) for w in name[len("blocks-"):].split("-")]
    except ValueError:
        return []


def block_edges(manifest: Path) -> np.ndarray:
    """The column edges of each depth's block in a multi-128 run's cached features (taps, then the last)."""
    from engine.features.backbones import backbone_spec

    spec = backbone_spec(json.loads(manifest.read_text())["features"]["backbone"])
    return np.cumsum([0, *(c for _, c in spec.taps), spec.dim])


def reshaped_blocks(kind: str, X: np.ndarray, edges) -> np.ndarray:
    """The features of ``clusterer-sqrt|zscore|centred``, made from the cached ones (each depth's block
    L2-normalised times its weight): each block signed-square-rooted, standardised per column or centred on the
    image's mean, then brought back to the block's norm (per tile, or on average for zscore) times its weight."""
    out = np.empty_like(X, dtype=np.float64)
    for a, b in zip(edges[:-1], edges[1:]):
        block = X[:, a:b].astype(np.float64)
        w = float(np.median(np.linalg.norm(block, axis=1)))          # the depth's weight (unit rows times w)
        if kind == "sqrt":
            block = np.sign(block) * np.sqrt(np.abs(block))
        elif kind == "centred":
            block = block - block.mean(0)
        else:                                                       # zscore
            block = (block - block.mean(0)) / (block.std(0) + 1e-9)
            out[:, a:b] = block * w / np.sqrt(b - a)
            continue
        out[:, a:b] = block / (np.linalg.norm(block, axis=1, keepdims=True) + 1e-12) * w
    return out


def decoloured(X: np.ndarray, raster: Path, tiles, px: int) -> np.ndarray:
    """``clusterer-decolour``: the features less what the tile's colour predicts of them (the residual of a
    least-squares fit on the ``colour`` variant's statistics, intercept included), so k-means has to group tiles
    by what the colour does not explain."""
    C = tile_colour(raster, tiles, px)
    Xc = X.astype(np.float64) - X.mean(0)
    return Xc - C @ np.linalg.lstsq(C, Xc, rcond=None)[0]


def tile_colour(raster: Path, tiles, px: int) -> np.ndarray:
    """The ``colour`` variant's features: each tile's mean and standard deviation of each band, standardised over
    the image's tiles (rows in the order of ``tiles``, which the runs write grid row by grid row)."""
    from engine.raster.tiling import TiledRaster

    rows, cols = tiles.row.to_numpy(), tiles.col.to_numpy()
    with TiledRaster(str(raster), f"{px}px") as tr:
        parts = [tr.read_tiles(int(r), cols[rows == r].tolist()) for r in np.unique(rows)]
    X = colour_stats(np.concatenate(parts))
    return (X - X.mean(0)) / np.maximum(X.std(0), 1e-9)


def weighted_blocks(manifest: Path, workdir: Path, weights: "list | None" = None) -> np.ndarray:
    """The features a multi-128 run cached (its manifest names them), each depth's block times ``weights`` in
    place of the run's own depth weights (None: as the run weighted them)."""
    from engine.features.backbones import backbone_spec

    feats = json.loads(manifest.read_text())["features"]
    X = np.array(np.load(workdir / "cache" / f"{feats['cache_key']}.npy"))       # float32, as cluster reads it
    spec = backbone_spec(feats["backbone"])
    edges = np.cumsum([0, *(c for _, c in spec.taps), spec.dim])
    own = feats.get("depth_weights") or [1.0] * (len(edges) - 1)
    weights = own if weights is None else weights
    assert edges[-1] == X.shape[1] and len(weights) == len(edges) - 1, (X.shape, edges, weights)
    for w, o, a, b in zip(weights, own, edges[:-1], edges[1:]):
        X[:, a:b] *= w / o
    return X


def scores(labels, stats) -> dict:
    from engine.stats.measures import eta_squared

    out = {s: eta_squared(labels, stats[s]) for s in STATS}
    out["mean"] = float(np.mean([out[s] for s in STATS]))
    rng = np.random.default_rng(0)
    out["random"] = float(np.median([np.mean([eta_squared(rng.permutation(labels), stats[s]) for s in STATS])
                                     for _ in range(20)]))
    return {k: round(v, 3) for k, v in out.items()}


def tile_stats(tiles, footprints) -> dict:
    from engine.stats.measures import building_stats, read_buildings

    b = read_buildings(str(footprints), tiles.crs, warnings=[])
    st = building_stats(tiles.geometry.values, b.values, warnings=[])
    return {s: st[s].to_numpy(dtype=float) for s in STATS}


STRUCTURE_WEIGHT = 0.5      # of 0.3, 0.5, 1 (and 0.5, 1, 2 with the orientation columns alone) the best mean


def structure(tiles: np.ndarray) -> np.ndarray:
    """(n, 5) per tile: edge density (mean gradient over mean brightness) at Gaussian scales 1, 2 and 4 px,
    and the dominant edge orientation relative to the pixel grid folded to 0-45 degrees (the fourth power of
    the gradient: edges 90 degrees apart agree) as cos and coherence-weighted sin."""
    from scipy import ndimage

    out = []
    for t in tiles.astype(np.float32):
        g = t.mean(0)
        bright = max(float(g.mean()), 1.0)
        dens = []
        for sigma in (1.0, 2.0, 4.0):
            gx = ndimage.gaussian_filter(g, sigma, order=(0, 1))
            gy = ndimage.gaussian_filter(g, sigma, order=(1, 0))
            dens.append(float(np.hypot(gx, gy).mean()) * sigma / bright)
        gx = ndimage.sobel(g, 1)
        gy = ndimage.sobel(g, 0)
        m2 = gx * gx + gy * gy
        z = (gx + 1j * gy) ** 4 / np.maximum(m2, 1e-6)
        zz = z.sum() / max(float(m2.sum()), 1e-6)
        r, ang = abs(zz), np.angle(zz) / 4            # -45..45 degrees from the grid
        out.append([*dens, r * np.cos(4 * ang), r * abs(np.sin(4 * ang))])
    return np.asarray(out)


def colour_stats(tiles: np.ndarray) -> np.ndarray:
    """(n, 2 * bands) per tile: the mean and standard deviation of each band."""
    t = tiles.reshape(len(tiles), tiles.shape[1], -1).astype(np.float64)
    return np.concatenate([t.mean(2), t.std(2)], 1)


def symmetries(batch: np.ndarray, kind: str) -> list:
    """The views of a (n, bands, px, px) batch whose features a symmetry variant averages: the batch alone, or
    with its horizontal flip (flips), its 4 rotations (rotations) or all 8 symmetries of the square (d4). None
    changes the four building statistics (orientation is folded to 0-45 degrees from the grid)."""
    if kind not in ("flips", "rotations", "d4"):
        return [batch]
    turns = [np.rot90(batch, q, axes=(2, 3)) for q in range(1 if kind == "flips" else 4)]
    return turns if kind == "rotations" else turns + [v[..., ::-1] for v in turns]


def reshaped_components(kind: str, X: np.ndarray) -> tuple:
    """(features, PCA count for k-means) of ``sharpen-G`` (each principal component of ``X``, as k-means'
    automatic PCA finds them, times its standard deviation over the first's to the power G) or ``drop-pcN``
    (``X`` with its first N principal directions projected out; the automatic count)."""
    from engine.clustering.kmeans import KMeansTiles

    c = X - X.mean(0)
    if kind.startswith("drop-pc"):
        v = np.linalg.svd(c, full_matrices=False)[2][: int(kind[len("drop-pc"):])]
        return X - c @ v.T @ v, "auto"
    pca = KMeansTiles(2, "auto").fit_pca(X)
    sd = np.sqrt(pca.explained_variance_)
    return (c @ pca.components_.T) * (sd / sd[0]) ** float(kind[len("sharpen-"):]), int(pca.n_components_)


def grid_neighbours(tiles) -> list:
    """For each tile, the indices of the tiles of its 3 x 3 neighbourhood (itself included) that are there."""
    rows, cols = tiles.row.to_numpy(), tiles.col.to_numpy()
    where = {(int(r), int(c)): i for i, (r, c) in enumerate(zip(rows, cols))}
    return [[where[(int(r) + dr, int(c) + dc)] for dr in (-1, 0, 1) for dc in (-1, 0, 1)
             if (int(r) + dr, int(c) + dc) in where] for r, c in zip(rows, cols)]


def other_clusterer(kind: str, X: np.ndarray, tiles, k: int, seed: int) -> np.ndarray:
    """Labels of ``clusterer-NAME``: the default's features reduced as k-means reduces them (PCA with the
    automatic count, L2 normalisation), then clustered by another method; ``no-l2`` leaves out the
    normalisation, ``smoothed`` gives each tile the majority of the default's labels over its 3 x 3 tiles."""
    from sklearn.cluster import AgglomerativeClustering, KMeans, SpectralClustering
    from sklearn.mixture import GaussianMixture

    from engine.clustering.kmeans import KMeansTiles

    km = KMeansTiles(k, "auto", False, seed).fit(X)
    name = kind[len("clusterer-"):]
    if name == "gmm":
        return GaussianMixture(k, covariance_type="full", n_init=3, reg_covar=1e-4,
                               random_state=seed).fit_predict(km.reduce(X))
    if name == "ward":
        return AgglomerativeClustering(k, linkage="ward").fit_predict(km.reduce(X))
    if name == "spectral":
        return SpectralClustering(k, affinity="nearest_neighbors", n_neighbors=10,
                                  random_state=seed).fit_predict(km.reduce(X))
    if name == "no-l2":
        return KMeans(k, n_init=10, random_state=seed).fit_predict(km.project(X))
    labels, out = km.labels_, km.labels_.copy()
    for i, js in enumerate(grid_neighbours(tiles)):       # a tie keeps the tile's own label
        votes = np.bincount(labels[js], minlength=k)
        if votes.max() > votes[labels[i]]:
            out[i] = votes.argmax()
    return out


def own_labels(kind: str, raster: Path, tiles, px: int, k: int, seed: int = 0) -> np.ndarray:
    """Labels of the variants computed here (``kind``: VARIANTS' string): colour statistics alone, or the
    default's features made here (``own``) averaged over views (flips, rotations, d4), with something beside
    them (context, scales, neighbours, structure, colour-joined) or their principal components reshaped
    (sharpen-G, drop-pcN)."""
    from engine.clustering.kmeans import KMeansTiles
    from engine.features.extract import FeatureExtractor
    from engine.raster.tiling import TiledRaster

    rows, cols = tiles.row.to_numpy(), tiles.col.to_numpy()
    dims = "auto"
    if kind == "colour":
        return KMeansTiles(k, dims, False, seed).fit(tile_colour(raster, tiles, px)).labels_
    with TiledRaster(str(raster), f"{px}px") as tr:
        ex = FeatureExtractor(pool=defaults.DEFAULT_POOL, cnn_px=defaults.DEFAULT_CNN_PX)
        ex64 = FeatureExtractor(pool=defaults.DEFAULT_POOL, cnn_px=64) if kind == "scales" else None
        own, ctx = [], []
        for s in range(0, len(rows), 64):
            r, c = rows[s: s + 64], cols[s: s + 64]
            batch = np.stack([tr.read_window_rgb(int(cc) * px, int(rr) * px, px) for rr, cc in zip(r, c)])
            own.append(np.mean([ex(np.ascontiguousarray(v)) for v in symmetries(batch, kind)], 0))
            if kind == "scales":
                ctx.append(ex64(batch))
            if kind == "context":
                ctx.append(ex(np.stack([tr.read_window_rgb(int(cc) * px - px // 2, int(rr) * px - px // 2,
                                                           2 * px) for rr, cc in zip(r, c)])))
        own = np.concatenate(own)
        if kind in ("structure", "colour-joined"):
            from engine.clustering.formjoin import FormJoin

            measure = structure if kind == "structure" else colour_stats
            st = np.concatenate([measure(np.stack([tr.read_window_rgb(int(cc) * px, int(rr) * px, px)
                                                   for rr, cc in zip(rows[s: s + 64], cols[s: s + 64])]))
                                 for s in range(0, len(rows), 64)])
            X = FormJoin(STRUCTURE_WEIGHT).fit_transform(own, st)
        elif kind in ("context", "scales"):
            X = np.concatenate([own, np.concatenate(ctx)], 1)
        elif kind in ("own", "flips", "rotations", "d4"):
            X = own
        elif kind.startswith(("sharpen-", "drop-pc")):
            X, dims = reshaped_components(kind, own)
        else:                                   # the mean of the (up to 8) valid neighbours' features
            nb = np.empty_like(own)
            for i, block in enumerate(grid_neighbours(tiles)):
                js = [j for j in block if j != i]
                nb[i] = own[js].mean(0) if js else own[i]
            X = np.concatenate([own, nb], 1)
    return KMeansTiles(k, dims, False, seed).fit(X).labels_


def building_model(raster: Path, footprints: Path, folder: Path, minutes: float, given: "str | None") -> dict:
    """The building model of ``form-segmented``: ``given`` (a MODEL.pt trained already), or train-seg on the
    western WEST share of ``raster`` for ``minutes`` (efficientnet_lite0 from its ImageNet weights, seed 0)."""
    from tests.bench.eval_segment import split_areas

    folder.mkdir(parents=True, exist_ok=True)
    west, east = split_areas(str(raster), WEST, folder)
    record = {"west_area": west, "east_area": east}
    if given:
        return {**record, "model": given, "trained_here": False}
    from engine.tools.train_seg import TrainParams, run_train

    model, done = folder / "buildings.pt", folder / "training.json"
    if done.exists():                   # trained already for an earlier seed: every seed clusters with one model
        return json.loads(done.read_text())
    t0 = time.perf_counter()
    m = run_train(TrainParams(str(raster), str(footprints), str(model), minutes=minutes, label_area=west, seed=0))
    record = {**record, "model": str(model), "trained_here": True, "minutes": minutes, "epochs": m["epochs_done"],
              "best_epoch": m["best_epoch"], "val_iou": round(m["val_iou"], 3),
              "train_s": round(time.perf_counter() - t0, 1)}
    done.write_text(json.dumps(record))
    return record


def run_variant(name, params, raster: Path, footprints, workdir: Path, px: int, k: int, tag: str,
                form_model: "str | None" = None, seed: int = 0):
    import geopandas as gpd

    if isinstance(params, str) and params.startswith(("blocks-", "clusterer-")):   # the default's cached features
        from engine.clustering.kmeans import KMeansTiles

        tiles = run_variant("multi-128", {}, raster, footprints, workdir, px, k, tag, None, seed)[0]
        manifest = workdir / f"{tag}_s{seed}_multi-128_manifest.json"
        if params == "clusterer-decolour":
            X = decoloured(weighted_blocks(manifest, workdir), raster, tiles, px)
            return tiles, KMeansTiles(k, "auto", False, seed).fit(X).labels_
        if params in ("clusterer-sqrt", "clusterer-zscore", "clusterer-centred"):
            X = reshaped_blocks(params[len("clusterer-"):], weighted_blocks(manifest, workdir), block_edges(manifest))
            return tiles, KMeansTiles(k, "auto", False, seed).fit(X).labels_
        if params.startswith("clusterer-"):
            return tiles, other_clusterer(params, weighted_blocks(manifest, workdir), tiles, k, seed)
        X = weighted_blocks(manifest, workdir, block_weights(params))       # depths reweighted
        return tiles, KMeansTiles(k, "auto", False, seed).fit(X).labels_
    if isinstance(params, str) or params is None:           # labels computed here, on the default's tiles
        tiles = run_variant("multi-128", {}, raster, footprints, workdir, px, k, tag, None, seed)[0]
        return tiles, own_labels(params or "colour", raster, tiles, px, k, seed)
    kw = dict(params)
    form = kw.pop("form", False)
    if form:
        kw["form"] = form_model if form == "segmented" else str(footprints)
    out = workdir / f"{tag}_s{seed}_{name}.gpkg"
    if not out.exists():
        run_cluster(ClusterParams(raster=str(raster), out=str(out), k=k, tile_size=f"{px}px", seed=seed,
                                  quicklook=False, cache_dir=str(workdir / "cache"), **kw))
    tiles = gpd.read_file(out, layer="tiles")
    return tiles, tiles.cluster.to_numpy()


def east_of(raster: Path, tiles) -> np.ndarray:
    """Whether each tile's centre lies in the eastern 1 - WEST share of the raster (where form-segmented's model
    saw no footprint)."""
    import rasterio

    with rasterio.open(raster) as ds:
        b = ds.bounds
    return tiles.geometry.centroid.x.to_numpy() > b.left + WEST * (b.right - b.left)


def mapped_quality(manifest: Path, footprints: Path, east_area: str) -> dict:
    """How well form-segmented's buildings (the run's cached layer) match the footprints in the east."""
    from engine.segmentation.evaluate import evaluate

    src = json.loads(manifest.read_text())["features"]["form_source"]
    mask = Path(src["buildings"]).with_name(Path(src["buildings"]).stem + "_mask.tif")
    e = evaluate(mask, str(footprints), east_area)
    return {"n_buildings": src["n_buildings"], "cache_hit": src["cache_hit"], "buildings": src["buildings"],
            "east_iou": round(float(e["iou"]), 3), "east_obj_f1": round(float(e["obj_f1"]), 3)}


def evaluate(name, what, params, seed: int, data: Path, work: Path, args, city, city_fp, stats_of: dict) -> dict:
    """One variant with one seed (k-means and the tiling's) on every labelled image and the synthetic city."""
    from sklearn.metrics import adjusted_rand_score

    row = {"what": what, "seed": seed, "images": {}}
    segmented = isinstance(params, dict) and params.get("form") == "segmented"
    for img, raster, fp in IMAGES:
        if segmented and img not in SEGMENTED_IMAGES:
            continue
        raster, fp = data / raster, data / fp
        px = tile_px(raster, args.tile_m)
        form_model = None
        if segmented:
            seg = building_model(raster, fp, work / f"seg_{img}", args.seg_minutes, args.seg_model)
            form_model = seg["model"]
        tiles, labels = run_variant(name, params, raster, fp, work, px, K, img, form_model, seed)
        if (img, seed) not in stats_of:              # the seed moves the stretch's samples, not the tile grid
            stats_of[(img, seed)] = tile_stats(tiles, fp)
        st = stats_of[(img, seed)]
        east = east_of(raster, tiles)
        row["images"][img] = {"tiles": len(tiles), "tile_px": px, **scores(labels, st),
                              "east": scores(labels[east], {s: v[east] for s, v in st.items()})}
        if segmented:
            row["images"][img]["segmentation"] = {**seg, **mapped_quality(
                work / f"{img}_s{seed}_{name}_manifest.json", fp, seg["east_area"])}
    for key in (*STATS, "mean", "random"):
        row[key] = round(float(np.mean([r[key] for r in row["images"].values()])), 3)
    if segmented:                                  # no building model of the synthetic city is trained here
        row["ari_synthetic"] = None
    else:
        tiles, labels = run_variant(name, params, city.raster, city_fp, work, 64, 4, "city", None, seed)
        truth = city.zone_of_tiles(64)[tiles.row, tiles.col]
        row["ari_synthetic"] = round(float(adjusted_rand_score(truth, labels)), 3)
    return row


def over_seeds(runs: list) -> dict:
    """Several seeds of one variant as one row: every score averaged over the seeds (per image too), with the
    standard deviation of the overall mean across seeds (``mean_sd``), each seed's mean (``seed_means``) and the
    lowest synthetic ARI (``ari_min``)."""
    def avg(rows, key):
        return round(float(np.mean([r[key] for r in rows])), 3)

    means = [r["mean"] for r in runs]
    row = {"what": runs[0]["what"], "seeds": [r["seed"] for r in runs], "images": {}}
    for img, first in runs[0]["images"].items():
        per = [r["images"][img] for r in runs]
        row["images"][img] = {"tiles": first["tiles"], "tile_px": first["tile_px"],
                              **{k: avg(per, k) for k in (*STATS, "mean", "random")},
                              "mean_sd": round(float(np.std([p["mean"] for p in per], ddof=1)), 3),
                              "east": {k: avg([p["east"] for p in per], k) for k in (*STATS, "mean", "random")}}
        if "segmentation" in first:
            row["images"][img]["segmentation"] = first["segmentation"]
    row.update({k: avg(runs, k) for k in (*STATS, "mean", "random")})
    row["mean_sd"] = round(float(np.std(means, ddof=1)), 3)
    row["seed_means"] = [round(m, 3) for m in means]
    aris = [r["ari_synthetic"] for r in runs]
    row["ari_synthetic"] = None if aris[0] is None else round(float(np.mean(aris)), 3)
    row["ari_min"] = None if aris[0] is None else min(aris)
    return row


LITE0_BLOCK_CHANNELS = (16, 24, 24, 40, 40, 80, 80, 80, 112, 112, 112, 192, 192, 192, 192, 320)


def tap_lite0_blocks(blocks: list, weights: list) -> None:
    """Make ``--pool multi`` tap these EfficientNet-Lite0 blocks (their mean-pooled outputs beside the last
    block's), weighted ``weights`` (one per block, then the last block), for the rest of this process: the
    engine's backbone table is changed here, so every run of the script sees it. The feature cache's key does
    not name the taps; the script's cache is a folder of its own run, so no other run's features are read."""
    import dataclasses

    from engine.features import backbones

    if len(weights) != len(blocks) + 1 or not all(0 <= b < len(LITE0_BLOCK_CHANNELS) for b in blocks):
        raise SystemExit(f"eval_form: --lite0-depths takes blocks 0-{len(LITE0_BLOCK_CHANNELS) - 1} and "
                         "--depth-weights one weight per block and one for the last block")
    spec = dataclasses.replace(backbones.BACKBONES["efficientnet_lite0"], depth_weights=tuple(weights),
                               taps=tuple((f"net._blocks.{b}", LITE0_BLOCK_CHANNELS[b]) for b in blocks))
    backbones.BACKBONES["efficientnet_lite0"] = spec


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(REPO / "bench_out"))
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--only", default=None,
                    help="comma-separated variant names (also multi-N: --cnn-px N; blocks-A-B-C: the default's three "
                         "depths weighted A, B, C)")
    ap.add_argument("--tile-m", type=float, default=TILE_M,
                    help=f"tile size on the ground in metres for the real images (default {TILE_M}; the "
                         "synthetic city keeps 64 px tiles)")
    ap.add_argument("--seeds", type=int, default=1,
                    help="run each variant with seeds 0..N-1 (k-means and tiling) and report the mean over the "
                         "seeds with its standard deviation (default 1: seed 0 only)")
    ap.add_argument("--seg-minutes", type=float, default=4.0,
                    help="form-segmented: train-seg's time budget on the western part (minutes)")
    ap.add_argument("--seg-model", default=None,
                    help="form-segmented: a building model trained already (on the western part), not trained here")
    ap.add_argument("--lite0-depths", default=None,
                    help="EfficientNet-Lite0's intermediate blocks that --pool multi taps, for example 2,4,10 "
                         "(default 4,10), for the whole run; with --depth-weights (one per block, then the last)")
    ap.add_argument("--depth-weights", default=None, help="with --lite0-depths: for example 0.5,0.5,1,1")
    args = ap.parse_args(argv)
    if args.lite0_depths:
        tap_lite0_blocks([int(b) for b in args.lite0_depths.split(",")],
                         [float(w) for w in (args.depth_weights or "").split(",") if w])
    data, out = Path(args.data), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    only = args.only.split(",") if args.only else None
    variants = [v for v in VARIANTS if v[0] not in ON_REQUEST] if only is None else [variant(n) for n in only]
    if args.seeds < 1:
        raise SystemExit("eval_form: --seeds must be at least 1")
    results: dict = {"tile_m": args.tile_m, "k": K, "seeds": args.seeds, "variants": {}}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="urbanform-evalform-") as tmp:
        work = Path(tmp)
        from tests.synthetic import make_city

        city = make_city(work / "city.tif", zone_grid=(4, 4), zone_px=256, seed=3)
        city_fp = work / "city_buildings.gpkg"
        city.footprints.to_file(city_fp, driver="GPKG")
        stats_of: dict = {}
        for name, what, params in variants:
            runs = [evaluate(name, what, params, seed, data, work, args, city, city_fp, stats_of)
                    for seed in range(args.seeds)]
            row = runs[0] if len(runs) == 1 else over_seeds(runs)
            results["variants"][name] = row
            ari = "-" if row["ari_synthetic"] is None else f"{row['ari_synthetic']:.3f}"
            spread = f" sd {row['mean_sd']:.3f} over {args.seeds} seeds {row['seed_means']}" if len(runs) > 1 else ""
            print(f"{name:13s} cov {row['bldg_cov']:.2f} count {row['bldg_count']:.2f} size {row['bldg_mean']:.2f} "
                  f"orien {row['bldg_orien']:.2f} | mean {row['mean']:.3f} random {row['random']:.3f} | "
                  f"ARI {ari}{spread}   ({time.perf_counter() - t0:.0f} s)", flush=True)
    print(f"\neta-squared per image (mean of the four statistics; random level in brackets), K={K}, "
          f"{args.tile_m} m tiles:")
    imgs = [i[0] for i in IMAGES]
    print(f"{'variant':13s} " + " ".join(f"{i:>15s}" for i in imgs) + f" {'mean':>6s} {'random':>6s} {'ARI':>6s}")
    for name, row in results["variants"].items():
        cells = " ".join(f"{row['images'][i]['mean']:7.3f} ({row['images'][i]['random']:.3f})" if i in row["images"]
                         else f"{'-':>15s}" for i in imgs)
        ari = "-" if row["ari_synthetic"] is None else f"{row['ari_synthetic']:.3f}"
        print(f"{name:13s} {cells} {row['mean']:6.3f} {row['random']:6.3f} {ari:>6s}")
    print(f"\neast of {WEST:.0%} of the width (tiles form-segmented's model saw no footprint of): "
          "coverage, count, mean size, orientation, mean (random)")
    for name, row in results["variants"].items():
        for img, r in row["images"].items():
            if img in SEGMENTED_IMAGES:
                e = r["east"]
                print(f"{name:13s} {img}: {e['bldg_cov']:.2f} {e['bldg_count']:.2f} {e['bldg_mean']:.2f} "
                      f"{e['bldg_orien']:.2f} {e['mean']:.3f} ({e['random']:.3f})")
        seg = next((r.get("segmentation") for r in row["images"].values() if r.get("segmentation")), None)
        if seg:
            print(f"{'':13s} mapped buildings: {seg['n_buildings']} (cache hit {seg['cache_hit']}); east pixel IoU "
                  f"{seg['east_iou']:.3f}, object F1 {seg['east_obj_f1']:.3f}; model {seg['model']}")
    path = out / ("eval_form.json" if only is None else "eval_form_partial.json")
    path.write_text(json.dumps(results, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
