"""KMeansTiles' PCA: the Gram-matrix path (fewer tiles than features) and the float32 subset eigensolver give
the components of the full float64 eigendecomposition of the covariance."""
import numpy as np
import pytest

from engine.clustering.kmeans import KMeansTiles, auto_pca_dims


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
