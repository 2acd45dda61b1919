"""KMeansTiles' PCA: the Gram-matrix path (fewer tiles than features) and the float32 subset eigensolver give
the components of the full float64 eigendecomposition of the covariance. Its k-means seeding
(``kmeans_plusplus``) chooses what scikit-learn's k-means++ chooses."""
import numpy as np
import pytest

from engine.clustering.kmeans import KMeansTiles, auto_pca_dims, kmeans_plusplus


def _reference(X: np.ndarray, pca_dims):
    """PCA as it was computed before: every eigenpair of the float64 covariance."""
    X = X.astype(np.float64)
    cov = np.cov(X, rowvar=False)
    evals, evecs = np.linalg.eigh(cov)
    order = np.argsort(evals)[::-1]
    evals, evecs = np.clip(evals[order], 0, None), evecs[:, order].T
    evecs *= np.sign(evecs[np.arange(len(evecs)), np.argmax(np.abs(evecs), axis=1)])[:, None]     # same signs
    ratio = evals / evals.sum()
    dims = auto_pca_dims(ratio, len(X)) if pca_dims == "auto" else min(int(pca_dims), len(evals))
    return X.mean(0), evecs[:dims], evals[:dims], ratio[:dims]


@pytest.mark.parametrize("n, f, pca_dims", [(120, 300, "auto"), (120, 300, 20), (900, 64, "auto"),
                                             (900, 64, 40), (900, 64, 64)])
def test_fit_pca_matches_the_full_float64_decomposition(n, f, pca_dims):
    rng = np.random.default_rng(0)
    scales = np.geomspace(10.0, 0.01, f)            # a decaying spectrum, like CNN features
    X = (rng.normal(size=(n, f)) * scales + 5.0).astype(np.float32)
    est = KMeansTiles(2, pca_dims=pca_dims, chunk=128).fit_pca(X)
    mean, comps, evals, ratio = _reference(X, pca_dims)
    assert est.n_components_ == len(comps)
    assert np.allclose(est.mean_, mean, atol=1e-4)
    assert np.allclose(est.explained_variance_, evals, rtol=1e-3)
    assert np.allclose(est.explained_variance_ratio_, ratio, rtol=1e-3, atol=1e-6)
    # the leading components (well-separated eigenvalues) are the same directions, signs fixed alike
    lead = min(8, len(comps))
    assert np.allclose(est.components_[:lead], comps[:lead], atol=2e-3)
    assert np.allclose(np.linalg.norm(est.components_, axis=1), 1.0, atol=1e-5)


def test_fit_pca_is_deterministic():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 500)).astype(np.float32)
    a, b = KMeansTiles(2).fit_pca(X), KMeansTiles(2).fit_pca(X)
    assert np.array_equal(a.components_, b.components_) and np.array_equal(a.mean_, b.mean_)


def _blobs_and_noise(seed: int):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(7, 12)) * 4
    blobs = (centres[rng.integers(0, 7, 1500)] + rng.normal(size=(1500, 12))).astype(np.float32)
    noise = rng.normal(size=(600, 30)).astype(np.float32)
    return blobs, noise


@pytest.mark.parametrize("k", [2, 3, 7, 12])
@pytest.mark.parametrize("seed", [0, 5])
def test_kmeans_plusplus_chooses_the_seeds_scikit_learn_chooses(k, seed):
    from sklearn.cluster import kmeans_plusplus as sklearn_plusplus

    for X in _blobs_and_noise(seed):
        ours = kmeans_plusplus(X, k, np.random.RandomState(seed))
        theirs, _ = sklearn_plusplus(X, k, random_state=np.random.RandomState(seed))
        assert ours.dtype == X.dtype and ours.shape == (k, X.shape[1])
        assert np.array_equal(ours, theirs)


def test_kmeans_tiles_clusters_as_scikit_learn_kmeans_on_the_reduced_tiles():
    """The whole fit, restarts included, gives the clusters of KMeans(init='k-means++') on the same rows (ids
    differ: KMeansTiles numbers them by size)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    blobs, _ = _blobs_and_noise(2)
    for k in (3, 7):
        est = KMeansTiles(k, pca_dims=8, seed=3).fit(blobs)
        Z = est.reduce(blobs)
        reference = KMeans(k, n_init=10, random_state=3).fit(Z)
        assert adjusted_rand_score(est.labels_, reference.labels_) == 1.0
        assert est.inertia_ == pytest.approx(reference.inertia_, rel=1e-6)
