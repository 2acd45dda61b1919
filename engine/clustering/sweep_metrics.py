"""Pure functions behind the sensitivity sweep: consistent ids across K, metrics, agreement across sizes.

Why relabel: k-means numbers its clusters arbitrarily (here by size), so
cluster 3 at K=5 and cluster 3 at K=6 are unrelated places and the maps of a
sweep cannot be compared by colour. ``relabel_like`` renames each K's clusters
after the previous K's by overlap: the Hungarian assignment
(``scipy.optimize.linear_sum_assignment``) on the contingency table gives
every previous id to the new cluster sharing most tiles with it (one to one),
and new clusters that match nothing get the next free ids, largest first. A
cluster that splits in two keeps its id for the child holding more of its
tiles, and the other child takes the new colour, which is what the lineage
plot shows.

Metrics per (tile size, K) follow scikit-learn: silhouette (on a seeded
sample of at most 5000 tiles, since it is quadratic), Calinski-Harabasz and
Davies-Bouldin on the reduced features (PCA, optional whitening, L2 norm: the
space k-means works in), and NMI/ARI against the previous K. Agreement across
tile sizes pairs each tile of the smaller size with the tile of the larger
size that contains its centre (the nearest-centred one when tiles overlap)
and compares their labels at the same K with NMI and ARI.
"""
from __future__ import annotations

import math

import numpy as np

SILHOUETTE_SAMPLE = 5000


def contingency(a: np.ndarray, b: np.ndarray, na: int | None = None, nb: int | None = None) -> np.ndarray:
    """(na, nb) counts of tiles with label i in ``a`` and j in ``b``."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    na = int(a.max(initial=-1)) + 1 if na is None else na
    nb = int(b.max(initial=-1)) + 1 if nb is None else nb
    return np.bincount(a * nb + b, minlength=na * nb).reshape(na, nb)


def relabel_like(prev: np.ndarray, new: np.ndarray) -> np.ndarray:
    """``new`` labels renamed so that each matches the ``prev`` cluster it overlaps most (one to one).

    Both arrays label the same tiles. Previous ids are kept by the matched new
    clusters; unmatched new clusters get ids ``max(prev)+1, ...`` in order of
    decreasing size (ties: smaller original label first). With ids 0..K'-1 in
    ``prev`` and K >= K' clusters in ``new`` the result uses exactly 0..K-1.
    """
    from scipy.optimize import linear_sum_assignment

    prev = np.asarray(prev)
    new = np.asarray(new)
    if prev.shape != new.shape:
        raise ValueError("prev and new must label the same tiles")
    new_ids = np.unique(new)
    dense = np.searchsorted(new_ids, new)
    table = contingency(prev, dense, nb=len(new_ids))            # (prev ids, new clusters)
    r, c = linear_sum_assignment(table, maximize=True)
    mapping = np.full(len(new_ids), -1, dtype=np.int64)
    mapping[c] = r
    free = np.flatnonzero(mapping < 0)
    if len(free):
        sizes = np.bincount(dense, minlength=len(new_ids))
        free = free[np.lexsort((free, -sizes[free]))]
        start = int(prev.max(initial=-1)) + 1
        mapping[free] = np.arange(start, start + len(free))
    return mapping[dense].astype(np.int32)


def consistent_labels(labels_by_k: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    """Relabel every K after the previous (smaller) K, the smallest K kept as it is."""
    out: dict[int, np.ndarray] = {}
    prev = None
    for k in sorted(labels_by_k):
        lab = np.asarray(labels_by_k[k], dtype=np.int32)
        out[k] = lab if prev is None else relabel_like(prev, lab)
        prev = out[k]
    return out


class SilhouetteSample:
    """Pairwise distances of a seeded sample of at most ``sample`` tiles, for the silhouette of many labellings.

    The silhouette is quadratic in the tiles, so it is taken on a sample, and
    in a k-means sweep every K clusters the same features: the distances are
    computed once (float64, stored float32) and each K costs one matrix
    product. The value is scikit-learn's ``silhouette_score`` on that sample.
    """

    def __init__(self, Z: np.ndarray, seed: int = 0, sample: int = SILHOUETTE_SAMPLE, chunk: int = 1024):
        n = len(Z)
        self.idx = np.sort(np.random.default_rng(seed).choice(n, sample, replace=False)) if n > sample \
            else np.arange(n)
        Zs = np.asarray(Z[self.idx], dtype=np.float64)
        sq = (Zs ** 2).sum(1)
        m = len(Zs)
        self.D = np.empty((m, m), dtype=np.float32)
        for s in range(0, m, chunk):
            d2 = sq[s: s + chunk, None] + sq[None, :] - 2.0 * (Zs[s: s + chunk] @ Zs.T)
            self.D[s: s + chunk] = np.sqrt(np.maximum(d2, 0.0))
        np.fill_diagonal(self.D, 0.0)

    def score(self, labels: np.ndarray) -> float:
        lab = np.asarray(labels)[self.idx]
        classes, enc = np.unique(lab, return_inverse=True)
        m, k = len(lab), len(classes)
        if not 2 <= k <= m - 1:
            return math.nan
        freqs = np.bincount(enc, minlength=k)
        onehot = np.zeros((m, k), dtype=np.float32)
        onehot[np.arange(m), enc] = 1.0
        sums = (self.D @ onehot).astype(np.float64)            # distance sums to each cluster
        rows = np.arange(m)
        intra = sums[rows, enc]
        sums[rows, enc] = np.inf
        inter = (sums / freqs).min(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            intra = intra / (freqs[enc] - 1)
            sil = (inter - intra) / np.maximum(intra, inter)
        return float(np.nan_to_num(sil).mean())


def cluster_metrics(Z: np.ndarray, labels: np.ndarray, seed: int = 0, sample: int = SILHOUETTE_SAMPLE,
                    silhouette: "SilhouetteSample | None" = None) -> dict[str, float]:
    """Silhouette (seeded sample), Calinski-Harabasz and Davies-Bouldin of ``labels`` on features ``Z``.

    ``silhouette``: the sample's distances when several labellings share ``Z``.
    NaN where a metric is undefined (one cluster only, or as many clusters as tiles).

    Calinski-Harabasz and Davies-Bouldin are scikit-learn's definitions, computed
    here from the cluster centres in one pass (``_centre_scores``): the
    library's functions spend most of their time checking their inputs, and a
    sweep calls them for every K and tile size.
    """
    labels = np.asarray(labels)
    n = len(labels)
    n_labels = len(np.unique(labels))
    out = {"silhouette": math.nan, "calinski_harabasz": math.nan, "davies_bouldin": math.nan}
    if not 2 <= n_labels <= n - 1:
        return out
    out["silhouette"] = (silhouette or SilhouetteSample(Z, seed, sample)).score(labels)
    out.update(_centre_scores(Z, labels))
    return out


def _centre_scores(Z: np.ndarray, labels: np.ndarray, chunk: int = 32768) -> dict[str, float]:
    """Calinski-Harabasz and Davies-Bouldin of ``labels`` (two or more clusters) on ``Z``.

    Sums in float64 over ``chunk`` rows at a time, so the only copies of ``Z`` are a chunk's (a sweep's
    reduced features can be millions of rows)."""
    enc = np.unique(labels, return_inverse=True)[1].ravel()
    n, k = len(enc), int(enc.max()) + 1
    spans = [slice(s, min(n, s + chunk)) for s in range(0, n, chunk)]
    counts = np.bincount(enc, minlength=k).astype(np.float64)
    centres = np.zeros((k, Z.shape[1]))
    for sl in spans:
        np.add.at(centres, enc[sl], np.asarray(Z[sl], dtype=np.float64))
    centres /= counts[:, None]
    to_centre = np.empty(n)
    for sl in spans:
        to_centre[sl] = np.linalg.norm(np.asarray(Z[sl], dtype=np.float64) - centres[enc[sl]], axis=1)
    # Calinski-Harabasz: dispersion between clusters over dispersion within, each over its degrees of freedom
    mean = counts @ centres / n
    between_disp = float((counts * ((centres - mean) ** 2).sum(axis=1)).sum())
    within_disp = float((to_centre ** 2).sum())
    ch = 1.0 if within_disp == 0.0 else between_disp * (n - k) / (within_disp * (k - 1.0))
    # Davies-Bouldin: the mean over clusters of the worst (spread i + spread j) / distance of centres i and j
    spread = np.bincount(enc, weights=to_centre, minlength=k) / counts
    apart = np.sqrt(((centres[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2))
    if np.allclose(spread, 0.0) or np.allclose(apart, 0.0):
        db = 0.0
    else:
        apart[apart == 0.0] = np.inf
        db = float(((spread[:, None] + spread[None, :]) / apart).max(axis=1).mean())
    return {"calinski_harabasz": float(ch), "davies_bouldin": db}


def agreement(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """NMI (arithmetic normalisation) and ARI between two labellings of the same tiles (NaN for no tiles).

    scikit-learn's ``normalized_mutual_info_score`` and ``adjusted_rand_score``, both from one contingency
    table: a sweep compares every K with the previous one and every tile size with the largest, and the
    library's input checks cost many times the arithmetic."""
    a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
    n = len(a)
    if n == 0:
        return {"nmi": math.nan, "ari": math.nan}
    ia = np.unique(a, return_inverse=True)[1].ravel()
    ib = np.unique(b, return_inverse=True)[1].ravel()
    table = contingency(ia, ib)
    rows, cols = table.sum(axis=1), table.sum(axis=0)
    # NMI: the mutual information over the mean of the two entropies; one cluster on both sides is a perfect match
    if table.shape == (1, 1):
        nmi = 1.0
    else:
        ri, ci = np.nonzero(table)
        nij = table[ri, ci].astype(np.float64)
        mi = max(float((nij / n * (np.log(nij * n) - np.log(rows[ri] * cols[ci].astype(np.float64)))).sum()), 0.0)

        def entropy(counts: np.ndarray) -> float:
            p = counts[counts > 0] / n
            return float(-(p * np.log(p)).sum())

        nmi = 0.0 if mi == 0.0 else mi / max((entropy(rows) + entropy(cols)) / 2.0, np.finfo(np.float64).eps)
    # ARI from the pair counts, in Python integers (exact for any number of tiles)
    squares = int((table.astype(np.int64) ** 2).sum())
    tp = squares - n
    fp = int((table @ cols).sum()) - squares
    fn = int((table.T @ rows).sum()) - squares
    tn = n * n - fp - fn - squares
    ari = 1.0 if fn == 0 and fp == 0 else 2.0 * (tp * tn - fn * fp) / ((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn))
    return {"nmi": float(nmi), "ari": float(ari)}


def containing_tile(centres_px: np.ndarray, rows: np.ndarray, cols: np.ndarray, size: int, stride: int,
                    shape: tuple[int, int]) -> np.ndarray:
    """For points in the pixel space of a grid, the index into (rows, cols) of the tile containing each.

    Of the tiles containing a point (several when tiles overlap) the one whose
    centre is nearest is taken; -1 where that tile is not among (rows, cols)
    (not valid) or no tile contains the point.
    """
    centres_px = np.asarray(centres_px, dtype=np.float64)
    x, y = centres_px[:, 0], centres_px[:, 1]
    c = np.rint((x - size / 2.0) / stride).astype(np.int64)
    r = np.rint((y - size / 2.0) / stride).astype(np.int64)
    c = np.clip(c, 0, shape[1] - 1)
    r = np.clip(r, 0, shape[0] - 1)
    inside = (x >= c * stride) & (x < c * stride + size) & (y >= r * stride) & (y < r * stride + size)
    lookup = np.full(shape, -1, dtype=np.int64)
    lookup[np.asarray(rows), np.asarray(cols)] = np.arange(len(rows))
    out = lookup[r, c]
    out[~inside] = -1
    return out


def cross_size_pairs(small: dict, large: dict) -> tuple[np.ndarray, np.ndarray]:
    """(small index, large index) of each small tile and the large tile containing its centre.

    ``small``/``large``: dicts with ``rows``, ``cols``, ``size``, ``stride``,
    ``shape``, ``transform`` (the grid's affine, pixel -> ground) and optionally
    ``crs`` (the grids' working CRS; centres are reprojected where they
    differ). Pairs whose large tile is missing are left out.
    """
    rows = np.asarray(small["rows"], dtype=np.float64)
    cols = np.asarray(small["cols"], dtype=np.float64)
    px = cols * small["stride"] + small["size"] / 2.0
    py = rows * small["stride"] + small["size"] / 2.0
    a = small["transform"]
    gx = a.a * px + a.b * py + a.c
    gy = a.d * px + a.e * py + a.f
    if small.get("crs") and large.get("crs") and small["crs"] != large["crs"]:
        from pyproj import Transformer

        gx, gy = Transformer.from_crs(small["crs"], large["crs"], always_xy=True).transform(gx, gy)
    inv = ~large["transform"]
    lx = inv.a * gx + inv.b * gy + inv.c
    ly = inv.d * gx + inv.e * gy + inv.f
    idx = containing_tile(np.stack([lx, ly], axis=1), large["rows"], large["cols"], large["size"],
                          large["stride"], large["shape"])
    keep = np.flatnonzero(idx >= 0)
    return keep, idx[keep]
