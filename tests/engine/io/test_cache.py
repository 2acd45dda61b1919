"""The feature cache's size budget (engine.io.cache): least recently used files go first, recent ones stay."""
from __future__ import annotations

import os
import time

import pytest

from engine.errors import BadInput
from engine.io import cache

MB = 2 ** 20


def put(folder, name, size_mb, used):
    """A cache file of ``size_mb`` MiB last used at time ``used``."""
    path = folder / name
    path.write_bytes(b"\0" * int(size_mb * MB))
    os.utime(path, (used, used))
    return path


def test_trim_deletes_least_recently_used_feature_files_until_under_budget(tmp_path):
    now = 1_000_000.0
    old = put(tmp_path, "a.npy", 3, now - 9000)
    older = put(tmp_path, "b.npy", 3, now - 10000)
    newer = put(tmp_path, "c.npy", 3, now - 8000)
    partial = put(tmp_path, ".d.part-123.npy", 5, now - 20000)     # a run's partial file: its own to remove
    other = put(tmp_path, "e.json", 5, now - 20000)
    (tmp_path / "parts").mkdir()
    removed = cache.trim(tmp_path, 4 * MB, now=now)
    assert [p for p, _ in removed] == [older, old]
    assert [size for _, size in removed] == [3 * MB, 3 * MB]
    assert newer.exists() and partial.exists() and other.exists() and (tmp_path / "parts").is_dir()


def test_trim_keeps_recently_used_files_even_over_budget(tmp_path):
    now = 1_000_000.0
    stale = put(tmp_path, "stale.npy", 2, now - cache.GRACE_S - 1)
    recent = put(tmp_path, "recent.npy", 2, now - 10)
    fresh = put(tmp_path, "fresh.npy", 2, now)
    assert [p for p, _ in cache.trim(tmp_path, 0, now=now)] == [stale]
    assert recent.exists() and fresh.exists()
    assert cache.trim(tmp_path, 0, now=now) == []
    assert cache.trim(tmp_path, None, now=now + 10 * cache.GRACE_S) == []          # no budget: keep all
    assert cache.trim(tmp_path / "missing", 0) == []


def test_touch_makes_a_file_the_most_recently_used(tmp_path):
    now = 1_000_000.0
    a = put(tmp_path, "a.npy", 1, now - 9000)
    b = put(tmp_path, "b.npy", 1, now - 8000)
    cache.touch(a)                                  # a cache hit
    assert [p for p, _ in cache.trim(tmp_path, 1 * MB, now=os.stat(a).st_mtime + cache.GRACE_S)] == [b]
    cache.touch(tmp_path / "gone.npy")              # no error for a file removed meanwhile


def buildings(folder, key, size_mb, used):
    """The three files of a mapped buildings layer (``buildings/KEY.gpkg``, mask, manifest), last used at
    ``used`` (the manifest) and before."""
    (folder / cache.BUILDINGS).mkdir(exist_ok=True)
    return [put(folder / cache.BUILDINGS, f"{key}{end}", size_mb / 3, used - lag)
            for end, lag in ((".gpkg", 50), ("_mask.tif", 40), ("_manifest.json", 0))]


def test_mapped_buildings_count_against_the_budget_and_go_together_manifest_first(tmp_path):
    now = 1_000_000.0
    oldest = put(tmp_path, "a.npy", 3, now - 10000)
    layer = buildings(tmp_path, "0123abcd", 3, now - 9000)          # last used when its manifest was
    newer = put(tmp_path, "b.npy", 3, now - 8000)
    lock = put(tmp_path / cache.BUILDINGS, ".0123abcd.gpkg.lock", 1, now - 20000)
    part = put(tmp_path / cache.BUILDINGS, ".9999.gpkg.part-12.gpkg", 1, now - 20000)
    other = put(tmp_path / cache.BUILDINGS, "notes.txt", 1, now - 20000)
    ((used, size, files),) = cache.building_groups(tmp_path)
    assert used == now - 9000 and size == 3 * MB and files[0].name == "0123abcd_manifest.json"
    assert {f.name for f in files} == {p.name for p in layer}
    assert [e[2][0] for e in cache.entries(tmp_path)] == [oldest, files[0], newer]

    removed = cache.trim(tmp_path, 3 * MB, now=now)
    assert removed == [(oldest, 3 * MB), (files[0], 3 * MB)]
    assert not any(p.exists() for p in layer) and newer.exists()
    assert lock.exists() and part.exists() and other.exists()      # locks, partial files, others: not the cache's
    assert cache.trimmed_message(removed, 3 * MB).endswith(
        "removed the least recently used 1 feature file(s) and 1 mapped buildings layer(s), 0.01 GB")


def test_a_mapped_layer_used_recently_stays_and_a_hit_marks_all_its_files(tmp_path):
    now = 1_000_000.0
    layer = buildings(tmp_path, "feed", 3, now - cache.GRACE_S - 100)
    put(tmp_path, "a.npy", 3, now - cache.GRACE_S - 50)
    cache.touch(*layer)                                            # a cache hit: the layer is the newest now
    hit = os.stat(layer[0]).st_mtime
    assert all(os.stat(p).st_mtime == pytest.approx(hit, abs=5) for p in layer)
    assert [p.name for p, _ in cache.trim(tmp_path, 0, now=hit + 10)] == ["a.npy"]
    assert all(p.exists() for p in layer)


def store(folder, name, written):
    """A Dask run's store: a folder holding a partition, written at ``written``, and a sub-folder."""
    path = folder / name
    (path / "epoch-000").mkdir(parents=True)
    put(path, "part-000000.npy", 0.01, written)
    put(path / "epoch-000", "part-000000.npy", 0.01, written)
    os.utime(path / "epoch-000", (written, written))
    os.utime(path, (written, written))
    return path


def test_prune_stores_removes_only_stores_untouched_for_a_week_and_never_the_runs_own(tmp_path):
    now = time.time()
    week = cache.STORE_MAX_AGE_S
    abandoned = store(tmp_path, "a" * 32, now - week - 60)
    own = store(tmp_path, "b" * 32, now - week - 60)                 # the run's own: --resume wants it
    recent = store(tmp_path, "c" * 32, now - week + 60)
    deep = store(tmp_path, "deepcluster-0123456789ab", now - week - 60)
    os.utime(deep / "epoch-000" / "part-000000.npy", (now - 5, now - 5))  # one file written just now
    loose = put(tmp_path, "notes.txt", 0.01, now - 2 * week)             # not a store: left alone
    removed = cache.prune_stores(tmp_path, keep="b" * 32, now=now)
    assert removed == [abandoned]
    assert not abandoned.exists() and own.is_dir() and recent.is_dir() and deep.is_dir() and loose.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([own.name, recent.name, deep.name, loose.name])
    msg = cache.pruned_message(removed)
    assert "removed 1 store(s) of interrupted Dask runs" in msg and "7 days" in msg and "a" * 32 in msg
    assert cache.prune_stores(tmp_path / "missing") == []
    said = []                                         # as a run does it: its own store kept, what went said
    late = store(tmp_path, "d" * 32, 1000.0)
    assert cache.prune_run_stores(tmp_path, "b" * 32, lambda *a: said.append(a), "segment") == [late]
    assert said == [("segment", 0, 1, cache.pruned_message([late]))] and own.is_dir()
    assert cache.prune_run_stores(tmp_path, "b" * 32, lambda *a: said.append(a), "segment") == [] and len(said) == 1


def test_budget_from_the_environment():
    assert cache.budget_bytes({}) == int(cache.DEFAULT_MAX_GB * 2 ** 30)
    assert cache.budget_bytes({cache.ENV: "0.5"}) == 2 ** 29
    assert cache.budget_bytes({cache.ENV: "0"}) is None
    for bad in ("lots", "-1", "nan", "inf"):
        with pytest.raises(BadInput, match=f"{cache.ENV}=.*gigabytes.*or 0 to keep") as e:
            cache.budget_bytes({cache.ENV: bad})
        assert e.value.param == "cache_dir"


def test_cluster_trims_the_cache_after_a_new_file_and_refuses_a_bad_budget_first(city, tmp_path, monkeypatch):
    """Two tilings of one raster with a budget of one file: the second run removes the first's file (the grace
    period set to 0 here) and says so; a hit marks its file used. A bad budget stops before the scan."""
    from engine.progress import Progress
    from engine.tools.cluster import ClusterParams, run_cluster

    store = tmp_path / "store"
    monkeypatch.setattr(cache, "GRACE_S", 0.0)
    events = []

    class Events(Progress):
        def __init__(self):
            super().__init__("none")

        def __call__(self, stage, done=0, total=0, message="", **fields):
            events.append((stage, message))

    def go(size, name):
        return run_cluster(
            ClusterParams(raster=str(city.raster), out=str(tmp_path / name), k=2, tile_size=size, weights="none",
                          backbone="resnet18", pool="last", cnn_px="native", quicklook=False, cache_dir=str(store)),
            Events())

    go("96px", "a.gpkg")
    (used, size, first), = cache.feature_files(store)
    os.utime(first, (used - 100, used - 100))                      # last used a while ago
    monkeypatch.setenv(cache.ENV, repr(size * 1.2 / 2 ** 30))      # room for either file, not for both
    go("128px", "b.gpkg")
    (used, _, second), = cache.feature_files(store)
    assert second != first and not first.exists()
    assert any("least recently used 1 feature file(s)" in m and cache.ENV in m for s, m in events if s == "features")
    os.utime(second, (used - 100, used - 100))
    assert go("128px", "c.gpkg")["features"]["cache_hit"]
    assert cache.feature_files(store)[0][0] > used - 50           # the hit marked it used now

    monkeypatch.setenv(cache.ENV, "many")
    events.clear()
    with pytest.raises(BadInput, match=cache.ENV):
        go("64px", "d.gpkg")
    assert events == [] and not (tmp_path / "d.gpkg").exists() and second.exists()
