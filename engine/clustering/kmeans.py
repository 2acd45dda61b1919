"""Clustering estimators for tile features (scikit-learn style).

``KMeansTiles`` is the published recipe's clustering step: PCA, optional
whitening, L2 normalisation, k-means. Parameters go in ``__init__``, ``fit``
returns ``self``, learned state ends in ``_``, ``predict`` assigns new tiles,
and ``save``/``load`` keep the fitted state in one ``.npz`` file (plain arrays,
no pickles).

Why whitening is off and the PCA dimension is automatic: with a few hundred
tiles, 256 whitened dimensions amplify noise directions until k-means is no
better than random at separating building coverage, while the same features
unwhitened separate it well. ``pca_dims='auto'`` keeps the components that
explain 90% of the variance, at most one per ten tiles and at most 256.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..contract.problems import OUT_OF_RANGE
from ..errors import BadInput

AUTO_VARIANCE = 0.90
MAX_DIMS = 256
TILES_PER_DIM = 10


def auto_pca_dims(explained_variance_ratio: np.ndarray, n_samples: int) -> int:
    """Components explaining 90% of variance, capped by tile count (>= 2)."""
    cum = np.cumsum(explained_variance_ratio)
    d90 = int(np.searchsorted(cum, AUTO_VARIANCE) + 1)
    cap = max(2, min(MAX_DIMS, n_samples // TILES_PER_DIM))
    return int(max(2, min(d90, cap, len(explained_variance_ratio))))


def _l2(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def _top_eigh(sym: np.ndarray, top: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``top`` largest eigenvalues of a symmetric float64 matrix and their eigenvectors (as columns), largest
    first, float64.

    Why float32 (LAPACK ``ssyevr`` on the subset): it takes half the time of
    float64 here (0.2 s instead of 0.45 s for the top 256 of 1280), and the
    components kept explain most of the variance, far above float32's
    rounding; the sweep's labels on the generated city were the same for every
    K and tile size as with the full float64 decomposition. Falls back to
    float64 if float32 does not converge.
    """
    import scipy.linalg

    m = len(sym)
    top = int(min(top, m))
    try:
        w, v = scipy.linalg.eigh(sym.astype(np.float32), subset_by_index=[m - top, m - 1], driver="evr")
    except (np.linalg.LinAlgError, ValueError):
        w, v = scipy.linalg.eigh(sym, subset_by_index=[m - top, m - 1], driver="evr")
    return w[::-1].astype(np.float64), v[:, ::-1].astype(np.float64)


def kmeans_plusplus(X: np.ndarray, n_clusters: int, random_state: np.random.RandomState) -> np.ndarray:
    """Greedy k-means++ seeds for ``sklearn.cluster.KMeans(init=kmeans_plusplus)``: scikit-learn's own
    ``init='k-means++'`` choices, faster.

    The method (Arthur and Vassilvitskii, greedy variant): the first centre is
    a tile drawn at random; each next one is the best, by the total squared
    distance of every tile to its nearest centre, of ``2 + log(K)`` candidates
    drawn with probability proportional to that squared distance. The random
    draws are scikit-learn's, in the same order (so with the same
    ``random_state`` the clusters are the same, checked in
    ``tests/engine/clustering/test_kmeans.py``); what differs is that the distances
    of all candidates come from one float64 matrix product per centre, where
    scikit-learn's version validates and converts its arguments at every step
    and spent half of a sweep's k-means time there (18 fits of 10 restarts on
    the tiles of a 2048 px raster: 0.67 s, 0.50 s with this function).
    """
    X64 = np.asarray(X, dtype=np.float64)
    n = len(X64)
    sq = np.einsum("ij,ij->i", X64, X64)
    trials = 2 + int(np.log(n_clusters))
    chosen = np.empty(n_clusters, dtype=np.int64)
    chosen[0] = random_state.choice(n, p=np.full(n, 1.0 / n))
    closest = np.maximum(sq + sq[chosen[0]] - 2.0 * (X64 @ X64[chosen[0]]), 0.0)    # to the nearest centre
    potential = closest.sum()
    for c in range(1, n_clusters):
        candidates = np.searchsorted(np.cumsum(closest), random_state.uniform(size=trials) * potential)
        np.clip(candidates, None, n - 1, out=candidates)
        d = np.maximum(sq[candidates, None] + sq[None, :] - 2.0 * (X64[candidates] @ X64.T), 0.0)
        np.minimum(closest, d, out=d)                   # each row: nearest-centre distances with that candidate
        potentials = d.sum(axis=1)
        best = int(np.argmin(potentials))
        chosen[c], closest, potential = candidates[best], d[best], potentials[best]
    return np.asarray(X[chosen])


class KMeansTiles:
    """PCA (+ optional whitening) + L2 normalisation + k-means over tile features.

    Parameters
    ----------
    n_clusters : K, at least 2.
    pca_dims : 'auto' or a number of components.
    whiten : scale components to unit variance before normalising.
    seed : random state of PCA sampling and k-means (same seed, same clusters).
    n_init : k-means restarts.
    max_fit_samples : k-means is fitted on at most this many tiles (a seeded
        sample) so memory does not grow with the raster; PCA sees every tile
        (its covariance is accumulated in chunks) and every tile is assigned.
    chunk : tiles read, projected and assigned at a time (2048 x 1280 float32 is 10 MiB). With 8192 and
        the k-means sample read whole, these temporaries were part of what made peak memory grow with the
        raster (``tests/bench/bench.py --sections memory``).
    """

    def __init__(self, n_clusters: int = 8, pca_dims: "int | str" = "auto", whiten: bool = False,
                 seed: int = 0, n_init: int = 10, max_fit_samples: int = 20000, chunk: int = 2048):
        self.n_clusters = n_clusters
        self.pca_dims = pca_dims
        self.whiten = whiten
        self.seed = seed
        self.n_init = n_init
        self.max_fit_samples = max_fit_samples
        self.chunk = chunk

    # -- fitting --------------------------------------------------------------
    def _check(self, n: int) -> None:
        if int(self.n_clusters) < 2:
            raise BadInput(f"--k {self.n_clusters}: K must be at least 2.", param="k", code=OUT_OF_RANGE)
        if self.n_clusters > n:
            raise BadInput(f"--k {self.n_clusters} is larger than the number of valid tiles ({n}). "
                           "Use a smaller K, a smaller tile size or a lower --min-valid.", param="k", code=OUT_OF_RANGE)
        if self.pca_dims != "auto" and int(self.pca_dims) < 1:
            raise BadInput(f"--pca-dims {self.pca_dims}: use 'auto' or a positive number.")

    def fit(self, X, pca_from: "KMeansTiles | None" = None, reduced: "np.ndarray | None" = None) -> "KMeansTiles":
        """Fit on features X (n_tiles, n_features): an array, memmap or ``io.NpyFile``.

        Memory stays flat in the number of tiles: the PCA covariance is
        accumulated chunk by chunk over all tiles, k-means is fitted on at most
        ``max_fit_samples`` tiles (all of them when there are fewer) and every
        tile is then assigned to its nearest centre chunk by chunk.

        ``pca_from``: a KMeansTiles already fitted on the same X whose PCA is
        reused instead of refitted (a sweep over K fits the PCA once; the
        result is the same as refitting, since the PCA does not depend on K).

        ``reduced``: ``pca_from.reduce(X)``, already computed (a sweep over K
        reduces the features once): k-means is fitted on its rows and every
        tile assigned from it, without projecting X again; the result is the
        same as without it.
        """
        return self._fit(X, pca_from, reduced)[0]

    def _fit(self, X, pca_from, reduced) -> tuple["KMeansTiles", "tuple | None"]:
        """``fit``, returning also (labels, distances, scores) of every tile when X was projected for them."""
        from sklearn.cluster import KMeans

        n, f = X.shape
        self._check(n)
        if pca_from is not None:
            self._copy_pca(pca_from, f)
        else:
            self.fit_pca(X)
        if reduced is not None and (pca_from is None or reduced.shape != (n, self.n_components_)):
            raise ValueError("reduced must be pca_from.reduce(X): (n_tiles, pca_from.n_components_)")

        rng = np.random.default_rng(self.seed)
        sample = np.sort(rng.choice(n, self.max_fit_samples, replace=False)) if n > self.max_fit_samples \
            else slice(0, n)
        km = KMeans(n_clusters=int(self.n_clusters), init=kmeans_plusplus, n_init=self.n_init, random_state=self.seed)
        km.fit(self._reduce_rows(X, sample) if reduced is None else reduced[sample])
        self.cluster_centers_ = km.cluster_centers_.astype(np.float32)
        if reduced is None:
            labels, dist, scores = self._assign(X)
        else:
            labels = np.concatenate([self._distances(reduced[s: s + self.chunk]).argmin(1)
                                     for s in range(0, n, self.chunk)])
            dist = scores = None
        # order clusters by size (0 = largest), ties by first member, so ids are stable and readable
        counts = np.bincount(labels, minlength=self.n_clusters)
        first = np.array([np.argmax(labels == k) if counts[k] else n for k in range(self.n_clusters)])
        order = np.lexsort((first, -counts))
        self.cluster_centers_ = self.cluster_centers_[order]
        remap = np.empty_like(order)
        remap[order] = np.arange(len(order))
        self.labels_ = remap[labels].astype(np.int32)
        self.inertia_ = float(km.inertia_)
        return self, (None if dist is None else (self.labels_, dist, scores))

    def fit_assign(self, X) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``fit(X)`` then ``assign(X)``, reading and projecting X once: fitting already assigns every tile
        (to order the clusters by size), so its distances and scores are returned rather than computed again."""
        return self._fit(X, None, None)[1]

    def fit_pca(self, X) -> "KMeansTiles":
        """Fit only the PCA step (mean, components, variances); k-means is left unfitted.

        Only the components that can be kept are computed (at most one per ten
        tiles and 256 with ``'auto'``; ``pca_dims`` otherwise): see
        ``_covariance_eigen``.
        """
        n, f = X.shape
        self.n_features_in_ = int(f)
        auto = self.pca_dims == "auto"
        top = min(f, max(2, min(MAX_DIMS, n // TILES_PER_DIM)) if auto else int(self.pca_dims))
        evals, evecs, total = self._covariance_eigen(X, top)
        ratio = evals / (total or 1.0)
        dims = auto_pca_dims(ratio, n) if auto else min(int(self.pca_dims), len(evals))
        self.n_components_ = int(dims)
        self.components_ = evecs[:dims].astype(np.float32)
        self.explained_variance_ = evals[:dims].astype(np.float32)
        self.explained_variance_ratio_ = ratio[:dims].astype(np.float32)
        return self

    _PCA_STATE = ("n_features_in_", "n_components_", "mean_", "components_", "explained_variance_",
                  "explained_variance_ratio_")

    def _copy_pca(self, other: "KMeansTiles", n_features: int) -> None:
        if not hasattr(other, "components_"):
            raise RuntimeError("pca_from has no fitted PCA; call its fit or fit_pca first.")
        if other.n_features_in_ != n_features:
            raise BadInput(f"features have {n_features} dimensions but pca_from was fitted on "
                           f"{other.n_features_in_}; use the same backbone.")
        if (other.pca_dims, other.whiten) != (self.pca_dims, self.whiten):
            raise ValueError("pca_from must have the same pca_dims and whiten as this estimator.")
        for name in self._PCA_STATE:
            setattr(self, name, getattr(other, name))

    def _covariance_eigen(self, X, top: int) -> tuple[np.ndarray, np.ndarray, float]:
        """The ``top`` largest eigenpairs of the covariance over all rows (largest first) and the total variance.

        The mean and the products are accumulated in chunks: each chunk's
        products run in float32 (BLAS sgemm, about 4x faster than float64
        here) on data shifted by an early mean, so the sums stay small; chunks
        are accumulated in float64.

        Why not always the eigenpairs of the (f, f) covariance: the
        eigendecomposition of 1280 x 1280 costs ~0.5 s and a sweep needs one
        per tile size. With fewer tiles than features the (n, n) Gram matrix of
        the centred tiles has the same nonzero eigenvalues (times n - 1) and
        gives the same components (``Xc.T @ u / sqrt(mu)``): 256 tiles take
        ~0.01 s. Either way only the ``top`` eigenpairs are computed, in float32
        (``_top_eigh``).
        """
        n, f = X.shape
        top = int(min(top, f))
        shift = np.asarray(X[0: min(n, self.chunk)], dtype=np.float64).mean(axis=0)
        shift32 = shift.astype(np.float32)
        if n < f and top <= n - 1:
            block = np.asarray(X[0:n], dtype=np.float32) - shift32
            mean_shifted = block.sum(axis=0, dtype=np.float64) / n
            self.mean_ = (shift + mean_shifted).astype(np.float32)
            block -= mean_shifted.astype(np.float32)
            gram = (block @ block.T).astype(np.float64)
            total = float(np.trace(gram)) / max(n - 1, 1)
            mu, u = _top_eigh(gram, top)
            evals = np.clip(mu, 0, None) / max(n - 1, 1)
            evecs = (block.T.astype(np.float64) @ u).T
            evecs /= np.maximum(np.linalg.norm(evecs, axis=1, keepdims=True), 1e-300)
        else:
            total_sum = np.zeros(f)
            outer = np.zeros((f, f))
            for s in range(0, n, self.chunk):
                block = np.asarray(X[s: s + self.chunk], dtype=np.float32) - shift32
                total_sum += block.sum(axis=0, dtype=np.float64)
                outer += block.T @ block
            mean_shifted = total_sum / n
            cov = (outer - n * np.outer(mean_shifted, mean_shifted)) / max(n - 1, 1)
            self.mean_ = (shift + mean_shifted).astype(np.float32)
            total = float(np.trace(cov))
            evals, evecs = _top_eigh(cov, top)
            evals, evecs = np.clip(evals, 0, None), evecs.T
        # fix signs so results do not depend on the LAPACK build
        signs = np.sign(evecs[np.arange(len(evecs)), np.argmax(np.abs(evecs), axis=1)])
        return evals, evecs * signs[:, None], total

    # -- applying -------------------------------------------------------------
    def project(self, X: np.ndarray) -> np.ndarray:
        """PCA scores (n, n_components_), unwhitened, in chunks."""
        out = np.empty((len(X), self.n_components_), dtype=np.float32)
        for s in range(0, len(X), self.chunk):
            out[s: s + self.chunk] = (np.asarray(X[s: s + self.chunk], dtype=np.float32) - self.mean_) \
                @ self.components_.T
        return out

    def reduce(self, X: np.ndarray) -> np.ndarray:
        """The space k-means works in: PCA scores, whitened if asked, L2-normalised."""
        return self._normalise(self.project(X))

    def _normalise(self, scores: np.ndarray) -> np.ndarray:
        """PCA scores into the space k-means works in (a new array; ``scores`` is left as it is)."""
        if self.whiten:
            scores = scores / np.sqrt(np.maximum(self.explained_variance_, 1e-12))
        return _l2(scores)

    def _reduce_rows(self, X, rows: "np.ndarray | slice") -> np.ndarray:
        """``reduce(X[rows])`` read and reduced ``chunk`` rows at a time: the k-means sample never holds the
        raw features of all its tiles (20,000 x 1280 float32 would be 98 MiB), only their reduced scores."""
        index = np.arange(len(X))[rows] if isinstance(rows, slice) else np.asarray(rows)
        out = np.empty((len(index), self.n_components_), dtype=np.float32)
        for s in range(0, len(index), self.chunk):
            part = index[s: s + self.chunk]
            block = X[int(part[0]): int(part[-1]) + 1] if len(part) and part[-1] - part[0] == len(part) - 1 \
                else X[part]                              # consecutive rows: one read
            out[s: s + len(part)] = self.reduce(np.asarray(block))
        return out

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Distances (n, K) from each tile to each centroid in the reduced space."""
        return self._distances(self.reduce(X))

    def _distances(self, Z: np.ndarray) -> np.ndarray:
        """Distances (n, K) from reduced features Z to each centroid."""
        d2 = (Z ** 2).sum(1)[:, None] - 2 * Z @ self.cluster_centers_.T + (self.cluster_centers_ ** 2).sum(1)
        return np.sqrt(np.maximum(d2, 0))

    def predict(self, X: np.ndarray) -> np.ndarray:
        self._check_fitted(X)
        return self.assign(X)[0]

    def assign(self, X) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(cluster, distance to its centre, first two PCA scores) per tile, chunk by chunk."""
        self._check_fitted(X)
        return self._assign(X)

    def _assign(self, X) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = len(X)
        labels = np.empty(n, dtype=np.int32)
        dist = np.empty(n, dtype=np.float32)
        scores = np.zeros((n, 2), dtype=np.float32)
        for s in range(0, n, self.chunk):
            pcs = self.project(X[s: s + self.chunk])          # projected once: distances and scores
            d = self._distances(self._normalise(pcs))
            labels[s: s + len(d)] = d.argmin(axis=1)
            dist[s: s + len(d)] = d.min(axis=1)
            scores[s: s + len(d), : min(2, pcs.shape[1])] = pcs[:, :2]
        return labels, dist, scores

    def _check_fitted(self, X) -> None:
        if not hasattr(self, "cluster_centers_"):
            raise RuntimeError("KMeansTiles is not fitted yet; call fit first.")
        if X.shape[1] != self.n_features_in_:
            raise BadInput(f"features have {X.shape[1]} dimensions but the model was fitted on "
                           f"{self.n_features_in_}; use the same backbone.")

    # -- persistence ------------------------------------------------------------
    _ARRAYS = ("mean_", "components_", "explained_variance_", "explained_variance_ratio_", "cluster_centers_")

    def get_params(self) -> dict:
        return {k: getattr(self, k) for k in ("n_clusters", "pca_dims", "whiten", "seed", "n_init",
                                               "max_fit_samples", "chunk")}

    def get_state(self) -> tuple[dict, dict]:
        """The fitted state as (JSON-able metadata, named float32 arrays); see ``from_state``."""
        if not hasattr(self, "cluster_centers_"):
            raise RuntimeError("KMeansTiles is not fitted yet; call fit first.")
        meta = {"class": "KMeansTiles", "params": self.get_params(), "n_components_": self.n_components_,
                "n_features_in_": self.n_features_in_, "inertia_": self.inertia_}
        return meta, {k: np.asarray(getattr(self, k)) for k in self._ARRAYS}

    @classmethod
    def from_state(cls, meta: dict, arrays: dict) -> "KMeansTiles":
        if meta.get("class") != "KMeansTiles" or any(k not in arrays for k in cls._ARRAYS):
            raise ValueError("not the state of a fitted KMeansTiles")
        est = cls(**meta["params"])
        for k in cls._ARRAYS:
            setattr(est, k, np.asarray(arrays[k], dtype=np.float32))
        est.n_components_ = int(meta["n_components_"])
        est.n_features_in_ = int(meta["n_features_in_"])
        est.inertia_ = float(meta["inertia_"])
        return est

    def save(self, path: "str | Path", extra: dict | None = None) -> None:
        """Save the fitted state (and JSON-able ``extra``) to one .npz (plain arrays, no pickles).

        Runs save the whole model, CNN included, with ``engine.modelfile``;
        this is for the clustering step alone.
        """
        from ..io import atomic_path

        meta, arrays = self.get_state()
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, meta=np.array(json.dumps({**meta, "extra": extra or {}})), **arrays)

    @classmethod
    def load(cls, path: "str | Path") -> "KMeansTiles":
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            try:
                est = cls.from_state(meta, {k: z[k] for k in cls._ARRAYS if k in z})
            except ValueError:
                raise BadInput(f"{path!r} is not a saved KMeansTiles model.") from None
        est.extra_ = meta.get("extra", {})
        return est
