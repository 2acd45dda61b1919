"""KMeansTiles: a scikit-learn style estimator over tile features."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from engine.clustering.kmeans import KMeansTiles, auto_pca_dims
from engine.errors import BadInput


@pytest.fixture
def blobs():
    """Three well separated groups of 100 points in 64 dimensions, with their truth."""
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 10, size=(3, 64))
    truth = np.repeat(np.arange(3), 100)
    X = centres[truth] + rng.normal(0, 1, size=(300, 64))
    return X.astype(np.float32), truth


def test_recovers_separated_groups(blobs):
    X, truth = blobs
    est = KMeansTiles(3, seed=0).fit(X)
    assert est is not None and adjusted_rand_score(truth, est.labels_) == 1.0
    assert est.cluster_centers_.shape == (3, est.n_components_)
    assert np.bincount(est.labels_).tolist() == sorted(np.bincount(est.labels_).tolist(), reverse=True)


def test_same_seed_same_clusters(blobs):
    X, _ = blobs
    X = X + np.random.default_rng(1).normal(0, 8, X.shape).astype(np.float32)   # make it ambiguous
    a = KMeansTiles(5, seed=3).fit(X).labels_
    b = KMeansTiles(5, seed=3).fit(X).labels_
    assert np.array_equal(a, b)


def test_save_load_predict(blobs, tmp_path):
    X, _ = blobs
    est = KMeansTiles(3, pca_dims=8, whiten=True, seed=0).fit(X)
    est.save(tmp_path / "m.npz", extra={"tile_px": 64})
    back = KMeansTiles.load(tmp_path / "m.npz")
    assert np.array_equal(back.predict(X), est.labels_)
    assert back.extra_ == {"tile_px": 64} and back.whiten and back.n_components_ == 8
    with pytest.raises(BadInput, match="features have 10 dimensions"):
        back.predict(X[:, :10])


class RowsRead:
    """An array that counts the feature rows read from it (as from a memmap on disk)."""

    def __init__(self, X):
        self.X, self.rows = X, 0
        self.shape = X.shape

    def __len__(self):
        return len(self.X)

    def __getitem__(self, index):
        part = self.X[index]
        self.rows += len(part)
        return part


def test_fit_assign_is_fit_then_assign_reading_the_features_one_time_less(blobs):
    X, _ = blobs
    X = X + np.random.default_rng(1).normal(0, 8, X.shape).astype(np.float32)   # ambiguous: distances matter
    a = KMeansTiles(5, seed=3, chunk=64)
    a.fit(X)
    labels, dist, scores = a.assign(X)
    b = KMeansTiles(5, seed=3, chunk=64)
    got = b.fit_assign(X)
    assert np.array_equal(got[0], labels) and np.array_equal(got[0], b.labels_)
    np.testing.assert_array_equal(got[1], dist)
    np.testing.assert_array_equal(got[2], scores)
    assert got[1].dtype == np.float32 and got[2].shape == (len(X), 2)

    separate, once = RowsRead(X), RowsRead(X)
    KMeansTiles(5, seed=3, chunk=64).fit(separate).assign(separate)
    KMeansTiles(5, seed=3, chunk=64).fit_assign(once)
    assert separate.rows - once.rows == len(X)


def test_fits_a_memmap(blobs, tmp_path):
    X, truth = blobs
    mm = np.lib.format.open_memmap(tmp_path / "f.npy", mode="w+", dtype=np.float32, shape=X.shape)
    mm[:] = X
    est = KMeansTiles(3, seed=0, max_fit_samples=120, chunk=50).fit(np.load(tmp_path / "f.npy", mmap_mode="r"))
    assert adjusted_rand_score(truth, est.labels_) == 1.0


def test_k_checks(blobs):
    X, _ = blobs
    with pytest.raises(BadInput, match="K must be at least 2"):
        KMeansTiles(1).fit(X)
    with pytest.raises(BadInput, match="larger than the number of valid tiles"):
        KMeansTiles(301).fit(X)


def test_auto_pca_dims_rule():
    ratio = np.full(100, 0.01)                     # flat spectrum: 90 dims reach 90%
    assert auto_pca_dims(ratio, n_samples=10000) == 90
    assert auto_pca_dims(ratio, n_samples=300) == 30   # at most one dimension per 10 tiles
    steep = np.array([0.95] + [0.05 / 99] * 99)
    assert auto_pca_dims(steep, n_samples=10000) == 2  # never fewer than 2
