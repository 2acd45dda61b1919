"""The feature store: whole partition files, kept for --resume only with the same layout, gathered in order."""
from __future__ import annotations

import numpy as np

from engine.distributed.partitions import tile_partitions
from engine.distributed.store import FeatureStore
from engine.io import NpyFile


def _fill(store, parts, dim):
    for p in parts:
        NpyFile(store.part_path(p), shape=(p.size, dim))[0: p.size] = np.full((p.size, dim), p.index, np.float32)


def test_gather_writes_the_partitions_in_order(tmp_path):
    rows, cols = np.divmod(np.arange(50), 10)
    parts = tile_partitions(50, 4, batches=4)              # 16 tiles each: 16, 16, 16, 2
    store = FeatureStore(tmp_path / "parts" / "key")
    store.prepare(rows, cols, 3, 16, resume=False)
    assert [store.positions(p)[0].tolist() for p in parts[-1:]] == [[4, 4]]
    _fill(store, parts, 3)
    assert all(store.done(p, 3) for p in parts) and not store.done(parts[0], 4)
    feats = store.gather(parts, 3, tmp_path / "key.npy")
    np.testing.assert_array_equal(feats[0:50][:, 0], np.repeat(np.arange(4), [16, 16, 16, 2]))
    store.remove()
    assert not (tmp_path / "parts").exists() and (tmp_path / "key.npy").is_file()


def test_resume_keeps_partitions_of_the_same_layout_only(tmp_path):
    rows, cols = np.divmod(np.arange(40), 8)
    parts = tile_partitions(40, 4, batches=4)
    store = FeatureStore(tmp_path / "s")
    store.prepare(rows, cols, 2, 16, resume=False)
    _fill(store, parts[:2], 2)
    store.prepare(rows, cols, 2, 16, resume=True)                    # the interrupted run's partitions stay
    assert [store.done(p, 2) for p in parts] == [True, True, False]
    store.prepare(rows, cols, 2, 8, resume=True)                     # partitioned otherwise: start afresh
    assert not any(store.done(p, 2) for p in parts)
    _fill(store, parts[:1], 2)
    store.prepare(rows, cols, 2, 16, resume=False)                   # without --resume: start afresh
    assert not store.done(parts[0], 2)
