"""The sensitivity sweep over K and tile size: parsing, relabelling, metrics, outputs, interruption and resume.

Real rasters (the synthetic city with known 256 px zones, the Kampala sample)
and the real efficientnet_lite0 network; extractor calls are counted by
wrapping the real ``FeatureExtractor.__call__``, nothing is mocked.
"""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pyogrio
import pytest
from sklearn.metrics import (adjusted_rand_score, calinski_harabasz_score, davies_bouldin_score,
                             normalized_mutual_info_score, silhouette_score)
from threadpoolctl import threadpool_limits

from engine.clustering.sweep_metrics import (SilhouetteSample, _centre_scores, agreement, cluster_metrics,
                                             consistent_labels, containing_tile, cross_size_pairs, relabel_like)
from engine.errors import BadInput, Cancelled
from engine.progress import Progress
from engine.tools.sweep import SweepParams, layer_name, parse_k_list, parse_tile_sizes, run_sweep

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class Recorder(Progress):
    """A progress sink that keeps every event (and can stop the run at a chosen stage)."""

    def __init__(self, stop_at: str | None = None):
        super().__init__("none")
        self.events: list[tuple] = []
        self.stop_at = stop_at

    def __call__(self, stage, done=0, total=0, message="", **fields):
        self.events.append((stage, done, total, message))
        if self.stop_at is not None and stage == self.stop_at:
            raise Cancelled("stopped by the test")


@pytest.fixture
def count_tiles(monkeypatch):
    """Tiles passed through the real FeatureExtractor, per tile size (px)."""
    from engine.features.extract import FeatureExtractor

    seen: dict[int, int] = {}
    real = FeatureExtractor.__call__

    def counting(self, tiles):
        seen[tiles.shape[-1]] = seen.get(tiles.shape[-1], 0) + len(tiles)
        return real(self, tiles)

    monkeypatch.setattr(FeatureExtractor, "__call__", counting)
    return seen


def read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def is_png(path) -> bool:
    from PIL import Image

    with open(path, "rb") as fh:
        if fh.read(8) != PNG_MAGIC:
            return False
    with Image.open(path) as im:
        im.verify()
        return im.size[0] > 100 and im.size[1] > 100


# ----------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("text, ks", [("2..12", list(range(2, 13))), ("2,4,6", [2, 4, 6]),
                                      ("2..6,8,12", [2, 3, 4, 5, 6, 8, 12]), (" 4 , 2,2..3 ", [2, 3, 4]),
                                      ("2..254", list(range(2, 255)))])
def test_parse_k_list(text, ks):
    assert parse_k_list(text) == ks


@pytest.mark.parametrize("text", ["", "a", "5..2", "2..", "2,,3", "2.5", "2-5", "..4"])
def test_parse_k_list_rejects_malformed_text(text):
    with pytest.raises(BadInput, match="--k"):
        parse_k_list(text)


@pytest.mark.parametrize("text", ["1..3", "1", "0,4", "-2..5", "2..255", "2,300", "2..100000000"])
def test_parse_k_list_refuses_k_out_of_range(text):
    """K below 2 or above 254 is refused before any work (the plugin refuses the same text)."""
    with pytest.raises(BadInput, match="--k.*between 2 and 254"):
        parse_k_list(text)


def test_sweep_refuses_k_below_two_before_any_work(city, tmp_path):
    out = tmp_path / "s.gpkg"
    rec = Recorder()
    with pytest.raises(BadInput, match="between 2 and 254"):
        run_sweep(SweepParams(str(city.raster), str(out), k="1..5", tile_size="128px"), rec)
    assert rec.events == [] and not list(tmp_path.iterdir())


def test_parse_tile_sizes():
    assert parse_tile_sizes("32px, 64px,32px,20m") == ["32px", "64px", "20m"]
    assert layer_name("64px") == "tiles_64px" and layer_name("2.5m") == "tiles_2_5m"
    with pytest.raises(BadInput, match="--tile-size"):
        parse_tile_sizes("64px,big")


# ----------------------------------------------------------------------------- relabelling and metrics


def test_split_cluster_keeps_parent_id_for_larger_child():
    prev = np.array([0] * 6 + [1] * 4)
    # cluster 1 splits 3 + 1; k-means numbered the new clusters arbitrarily
    new = np.array([2] * 6 + [0, 0, 0, 1])
    assert relabel_like(prev, new).tolist() == [0] * 6 + [1, 1, 1, 2]
    # cluster 0 splits 4 + 2: the 4 keep 0, the 2 get the new id
    new = np.array([5, 5, 5, 5, 7, 7, 3, 3, 3, 3])
    assert relabel_like(prev, new).tolist() == [0, 0, 0, 0, 2, 2, 1, 1, 1, 1]


def test_two_new_clusters_get_next_ids_largest_first():
    prev = np.array([0] * 8 + [1] * 4)
    new = np.array([4] * 5 + [9] * 3 + [1] * 2 + [6] * 2)      # 0 -> 5 + 3, 1 -> 2 + 2 (K 2 -> 4)
    out = relabel_like(prev, new)
    assert out.tolist() == [0] * 5 + [2] * 3 + [1] * 2 + [3] * 2
    assert sorted(set(out.tolist())) == [0, 1, 2, 3]


def test_consistent_labels_chain_uses_zero_to_k_minus_one():
    rng = np.random.default_rng(0)
    labels = {k: rng.integers(0, k, 500) for k in (2, 3, 5, 6)}
    out = consistent_labels(labels)
    for k in labels:
        assert sorted(set(out[k].tolist())) == list(range(k))
        assert sorted(np.bincount(labels[k]).tolist()) == sorted(np.bincount(out[k]).tolist())
    # already consistent: relabelling again changes nothing
    for a, b in ((2, 3), (3, 5), (5, 6)):
        assert np.array_equal(relabel_like(out[a], out[b]), out[b])


def test_cluster_metrics_equal_sklearn():
    rng = np.random.default_rng(1)
    Z = np.concatenate([rng.normal(c, 1, (60, 5)) for c in (0, 4, 8)]).astype(np.float32)
    labels = np.repeat([0, 1, 2], 60)
    m = cluster_metrics(Z, labels)
    assert m["silhouette"] == pytest.approx(silhouette_score(Z, labels))
    assert m["calinski_harabasz"] == pytest.approx(calinski_harabasz_score(Z, labels))
    assert m["davies_bouldin"] == pytest.approx(davies_bouldin_score(Z, labels))
    sample = SilhouetteSample(Z, seed=3, sample=90)         # seeded sample: sklearn's value on that sample
    assert len(sample.idx) == 90 and np.array_equal(sample.idx, SilhouetteSample(Z, seed=3, sample=90).idx)
    assert sample.score(labels) == pytest.approx(silhouette_score(Z[sample.idx], labels[sample.idx]))
    assert cluster_metrics(Z, labels, seed=3, sample=90)["silhouette"] == pytest.approx(sample.score(labels))
    assert math.isnan(cluster_metrics(Z, np.zeros(180, int))["silhouette"])


def test_centre_scores_equal_sklearn_on_uneven_and_degenerate_clusters():
    rng = np.random.default_rng(4)
    # uneven sizes, labels that are not 0..k-1, float32 features as the sweep gives them
    Z = np.concatenate([rng.normal(c, s, (n, 7)) for c, s, n in ((0, 1, 5), (3, 2, 120), (1, 0.5, 40), (9, 1, 2))])
    Z = Z.astype(np.float32)
    labels = np.repeat([7, -1, 30, 4], [5, 120, 40, 2])
    for lab in (labels, rng.permutation(labels), rng.integers(0, 12, len(labels))):
        m = cluster_metrics(Z, lab)
        assert m["calinski_harabasz"] == pytest.approx(calinski_harabasz_score(Z, lab), rel=1e-5)
        assert m["davies_bouldin"] == pytest.approx(davies_bouldin_score(Z, lab), rel=1e-5)
        assert _centre_scores(Z, lab, chunk=7) == pytest.approx(_centre_scores(Z, lab))   # summed chunk by chunk
    same = np.repeat(np.eye(3, dtype=np.float32), 4, axis=0)           # no spread inside the clusters
    lab = np.repeat([0, 1, 2], 4)
    m = cluster_metrics(same, lab)
    assert m["calinski_harabasz"] == calinski_harabasz_score(same, lab) == 1.0
    assert m["davies_bouldin"] == davies_bouldin_score(same, lab) == 0.0
    twin = np.concatenate([same[:8], same[:4]])                          # clusters 0 and 2 share their centre
    twin = twin + np.tile(rng.normal(0, 0.1, (4, 3)), (3, 1)).astype(np.float32)
    assert cluster_metrics(twin, lab)["davies_bouldin"] == pytest.approx(davies_bouldin_score(twin, lab), rel=1e-5)


def test_agreement_equals_sklearn():
    rng = np.random.default_rng(5)
    a = rng.integers(0, 6, 500)
    cases = [(a, a), (a, (a + 3) % 6), (a, rng.integers(0, 9, 500)), (a, np.where(a < 2, 0, a)),
             (a, np.zeros(500, int)), (np.zeros(9, int), np.zeros(9, int)), (np.array([3]), np.array([-2])),
             (a.astype(str), rng.integers(0, 2, 500))]
    for x, y in cases:
        got = agreement(x, y)
        assert got["nmi"] == pytest.approx(normalized_mutual_info_score(x, y), abs=1e-12)
        assert got["ari"] == pytest.approx(adjusted_rand_score(x, y), abs=1e-12)
    empty = agreement(np.array([], int), np.array([], int))
    assert math.isnan(empty["nmi"]) and math.isnan(empty["ari"])


def test_kmeans_reusing_a_fitted_pca_gives_the_same_clusters():
    from engine.clustering.kmeans import KMeansTiles

    rng = np.random.default_rng(2)
    X = np.concatenate([rng.normal(c, 1.0, (80, 32)) for c in (0, 3, 6, 9)]).astype(np.float32)
    pca = KMeansTiles(2, seed=0).fit_pca(X)
    assert not hasattr(pca, "cluster_centers_")
    with threadpool_limits(1):           # tiny fits: two threads on a busy 2-core machine only wait on each other
        for k in (3, 4, 5):
            a = KMeansTiles(k, seed=0).fit(X)
            b = KMeansTiles(k, seed=0).fit(X, pca_from=pca)
            assert np.array_equal(a.labels_, b.labels_) and np.allclose(a.cluster_centers_, b.cluster_centers_)
            c = KMeansTiles(k, seed=0).fit(X, pca_from=pca, reduced=pca.reduce(X))     # the sweep's shortcut
            assert np.array_equal(a.labels_, c.labels_) and np.array_equal(b.cluster_centers_, c.cluster_centers_)
    with pytest.raises(ValueError, match="same pca_dims"):
        KMeansTiles(3, pca_dims=4).fit(X, pca_from=pca)
    with pytest.raises(ValueError, match="reduced must be"):
        KMeansTiles(3).fit(X, pca_from=pca, reduced=X)


def test_containing_tile_with_and_without_overlap():
    # 4x4 grid of 64 px tiles, stride 64; tile (1, 2) missing
    rows, cols = np.nonzero(np.ones((4, 4), bool))
    keep = ~((rows == 1) & (cols == 2))
    rows, cols = rows[keep], cols[keep]
    pts = np.array([[16.0, 16.0], [100.0, 70.0], [150.0, 80.0], [255.0, 255.0], [300.0, 10.0]])
    idx = containing_tile(pts, rows, cols, 64, 64, (4, 4))
    assert [(rows[i], cols[i]) if i >= 0 else None for i in idx] == [(0, 0), (1, 1), None, (3, 3), None]
    # stride 32: a point is in several tiles; the nearest-centred one is chosen
    rows, cols = np.nonzero(np.ones((3, 3), bool))
    idx = containing_tile(np.array([[40.0, 40.0], [20.0, 70.0]]), rows, cols, 64, 32, (3, 3))
    assert [(rows[i], cols[i]) for i in idx] == [(0, 0), (1, 0)]


def test_cross_size_pairs_on_shared_transform():
    from affine import Affine

    t = Affine(0.5, 0, 1000.0, 0, -0.5, 2000.0)
    small = {"rows": np.repeat(np.arange(4), 4), "cols": np.tile(np.arange(4), 4), "size": 32, "stride": 32,
             "shape": (4, 4), "transform": t}
    large = {"rows": np.array([0, 0, 1, 1]), "cols": np.array([0, 1, 0, 1]), "size": 64, "stride": 64,
             "shape": (2, 2), "transform": t}
    si, li = cross_size_pairs(small, large)
    assert si.tolist() == list(range(16))
    expect = [(r // 2) * 2 + c // 2 for r, c in zip(small["rows"], small["cols"])]
    assert li.tolist() == expect


# ----------------------------------------------------------------------------- the sweep on the city


@pytest.fixture(scope="module")
def city_sweep(city, tmp_path_factory):
    """One k-means sweep over the city: 64 and 128 px tiles, K 1..5 and 65 (more than the 64 tiles of 128 px)."""
    from engine.features.extract import FeatureExtractor

    out = tmp_path_factory.mktemp("sweep") / "city_sweep.gpkg"
    cache = tmp_path_factory.mktemp("sweep_cache")
    seen: dict[int, int] = {}
    real = FeatureExtractor.__call__

    def counting(self, tiles):
        seen[tiles.shape[-1]] = seen.get(tiles.shape[-1], 0) + len(tiles)
        return real(self, tiles)

    FeatureExtractor.__call__ = counting
    rec = Recorder()
    try:
        manifest = run_sweep(SweepParams(str(city.raster), str(out), k="2..5,65", tile_size="128px,64px",
                                         cache_dir=str(cache)), rec)
    finally:
        FeatureExtractor.__call__ = real
    return {"out": out, "manifest": manifest, "events": rec.events, "seen": seen, "cache": cache, "city": city}


def test_layers_columns_and_consistent_ids(city_sweep):
    out, m = city_sweep["out"], city_sweep["manifest"]
    assert {name for name, _ in pyogrio.list_layers(out)} == {"tiles_64px", "tiles_128px"}
    assert m["complete"] is True and m["missing"] == []
    assert m["layers"] == {"tiles_64px": [2, 3, 4, 5, 65], "tiles_128px": [2, 3, 4, 5]}
    for layer, ks, n in (("tiles_64px", [2, 3, 4, 5, 65], 256), ("tiles_128px", [2, 3, 4, 5], 64)):
        df = pyogrio.read_dataframe(out, layer=layer)
        assert list(df.columns) == ["tile_id", "row", "col", "valid_frac", "pc1", "pc2",
                                    *[f"k{k}" for k in ks], "geometry"]
        assert len(df) == n and df.crs.to_epsg() == 32630
        for a, b in zip(ks, ks[1:]):
            la, lb = df[f"k{a}"].to_numpy(), df[f"k{b}"].to_numpy()
            assert sorted(set(lb.tolist())) == list(range(b))
            assert np.array_equal(relabel_like(la, lb), lb)          # already matched to the previous K
    # tile polygons where runs.tile_frames puts them: tile (r, c) of 128 px at 0.3 m
    df = pyogrio.read_dataframe(out, layer="tiles_128px")
    first = df.iloc[0]
    assert (first.row, first.col) == (0, 0)
    minx, miny, maxx, maxy = first.geometry.bounds
    assert maxx - minx == pytest.approx(128 * 0.3) and maxy - miny == pytest.approx(128 * 0.3)


def test_skipped_k_warned_and_recorded(city_sweep):
    m, events = city_sweep["manifest"], city_sweep["events"]
    skipped = {(s["tile_size"], s["k"]) for s in m["skipped"]}
    assert skipped == {("128px", 65)}            # K=1 is refused before any work: test_sweep_refuses_k_below_two...
    warnings = [e[3] for e in events if e[3].startswith("warning")]
    assert any("K=65 skipped" in w and "64 valid tiles of 128px" in w for w in warnings)


def test_features_computed_once_per_tile_size(city_sweep):
    assert city_sweep["seen"] == {64: 256, 128: 64}                    # every tile through the CNN once
    parts = city_sweep["manifest"]["parts"]
    assert not parts["tiles_64px"]["cache_hit"] and not parts["tiles_128px"]["cache_hit"]
    assert len(list(city_sweep["cache"].glob("*.npy"))) == 2


def test_metrics_csv_in_range_and_equal_to_sklearn(city_sweep):
    from engine.clustering.kmeans import KMeansTiles
    from engine.io import NpyFile

    out, m = city_sweep["out"], city_sweep["manifest"]
    rows = read_csv(out.with_name("city_sweep_metrics.csv"))
    assert list(rows[0]) == ["tile_size", "k", "tiles", "silhouette", "calinski_harabasz", "davies_bouldin",
                             "nmi_prev", "ari_prev", "nmi_128px", "ari_128px"]
    assert [(r["tile_size"], int(r["k"])) for r in rows] == [("64px", k) for k in (2, 3, 4, 5, 65)] + \
        [("128px", k) for k in (2, 3, 4, 5)]
    for r in rows:
        assert -1 <= float(r["silhouette"]) <= 1 and float(r["calinski_harabasz"]) > 0
        assert float(r["davies_bouldin"]) >= 0
        if int(r["k"]) != 2:
            assert 0 <= float(r["nmi_prev"]) <= 1 and -1 <= float(r["ari_prev"]) <= 1
        else:
            assert r["nmi_prev"] == "" and r["ari_prev"] == ""
    # one case against scikit-learn, from the cached features and the written labels
    key = m["parts"]["tiles_64px"]["cache_key"]
    feats = NpyFile(city_sweep["cache"] / f"{key}.npy")
    Z = KMeansTiles(2, seed=0).fit_pca(feats).reduce(feats)
    df = pyogrio.read_dataframe(out, layer="tiles_64px", read_geometry=False)
    row = next(r for r in rows if r["tile_size"] == "64px" and r["k"] == "4")
    assert float(row["silhouette"]) == pytest.approx(silhouette_score(Z, df["k4"]), rel=1e-4)
    assert float(row["calinski_harabasz"]) == pytest.approx(calinski_harabasz_score(Z, df["k4"]), rel=1e-4)
    assert float(row["davies_bouldin"]) == pytest.approx(davies_bouldin_score(Z, df["k4"]), rel=1e-4)


def test_cross_size_agreement_is_high_on_the_city(city_sweep):
    rows = read_csv(city_sweep["out"].with_name("city_sweep_metrics.csv"))
    ari = {int(r["k"]): float(r["ari_128px"]) for r in rows if r["tile_size"] == "64px" and r["ari_128px"]}
    assert sorted(ari) == [2, 3, 4, 5]                      # K=65 has no 128 px partner
    assert max(ari.values()) >= 0.9 and np.mean(list(ari.values())) >= 0.7, ari
    assert all(r["ari_128px"] == "" for r in rows if r["tile_size"] == "128px")


def test_plots_are_pngs_and_manifest_complete(city_sweep):
    out, m = city_sweep["out"], city_sweep["manifest"]
    for name in ("metrics", "lineage_64px", "lineage_128px", "pca_64px", "pca_128px"):
        assert is_png(out.with_name(f"city_sweep_{name}.png")), name
    on_disk = json.loads(out.with_name("city_sweep_manifest.json").read_text())
    assert on_disk["complete"] is True and on_disk["inputs"]["sha256"] == m["inputs"]["sha256"]
    assert on_disk["parts"]["tiles_64px"]["ks"] == [2, 3, 4, 5, 65]
    assert {"features", "pca", "kmeans", "metrics", "plots", "write"} <= set(on_disk["parts"]["tiles_64px"]
                                                                              ["timings_s"])
    assert [mm["k"] for mm in on_disk["parts"]["tiles_128px"]["metrics"]] == [2, 3, 4, 5]
    assert not list(out.parent.glob(".*part*"))                 # no temporary files left


def test_progress_stages(city_sweep):
    stages = [e[0] for e in city_sweep["events"]]
    for s in ("open", "scan", "features", "tiles_64px", "tiles_128px", "plots", "write"):
        assert s in stages
    per_k = [e for e in city_sweep["events"] if e[0] == "tiles_64px" and e[3].endswith("done")]
    assert [e[1] for e in per_k] == [1, 2, 3, 4, 5] and all(e[2] == 5 for e in per_k)


def test_existing_outputs_are_not_overwritten(city_sweep):
    with pytest.raises(BadInput, match="already exists"):
        run_sweep(SweepParams(str(city_sweep["city"].raster), str(city_sweep["out"]), k="2..3",
                              tile_size="128px,64px"))


# ----------------------------------------------------------------------------- bad input


def test_all_k_skipped_is_bad_input(city, tmp_path):
    out = tmp_path / "s.gpkg"
    with pytest.raises(BadInput, match="no K value can be used"):
        run_sweep(SweepParams(str(city.raster), str(out), k="5..6", tile_size="512px"))
    with pytest.raises(BadInput, match="not a K value") as bad:
        run_sweep(SweepParams(str(city.raster), str(out), k="2..x", tile_size="512px"))
    assert (bad.value.param, bad.value.code) == ("k", "bad_format")
    with pytest.raises(BadInput, match="'dbscan' is not one of kmeans, deepcluster") as bad:
        run_sweep(SweepParams(str(city.raster), str(out), method="dbscan"))
    assert (bad.value.param, bad.value.code) == ("method", "bad_choice")
    assert not list(tmp_path.glob("s*")) and not list(tmp_path.glob(".s*"))


# ----------------------------------------------------------------------------- interruption and resume


def test_interrupted_sweep_keeps_finished_parts_and_resume_completes(city, tmp_path, count_tiles):
    out = tmp_path / "sw.gpkg"
    params = SweepParams(str(city.raster), str(out), k="2..3", tile_size="64px,128px")
    with pytest.raises(Cancelled) as err:
        run_sweep(params, Recorder(stop_at="tiles_128px"))
    msg = str(err.value)
    assert "finished: tiles_64px" in msg and "missing: tiles_128px" in msg and "--resume" in msg
    assert [name for name, _ in pyogrio.list_layers(out)] == ["tiles_64px"]
    m = json.loads(out.with_name("sw_manifest.json").read_text())
    assert m["complete"] is False and m["missing"] == ["tiles_128px"]
    assert m["parts"]["tiles_64px"]["done"] and not m["parts"]["tiles_128px"]["done"]
    assert not out.with_name("sw_lineage_128px.png").exists()
    assert not list(tmp_path.glob(".*part*"))
    before = pyogrio.read_dataframe(out, layer="tiles_64px", read_geometry=False)
    assert count_tiles == {64: 256}

    # other parameters: refused with a clear message
    with pytest.raises(BadInput, match="other parameters.*k:"):
        run_sweep(SweepParams(str(city.raster), str(out), k="2..4", tile_size="64px,128px", resume=True))
    # without --resume the finished part is not overwritten
    with pytest.raises(BadInput, match="already exists"):
        run_sweep(params)

    count_tiles.clear()
    params.resume = True
    m = run_sweep(params, Recorder())
    assert count_tiles == {128: 64}                                 # only the missing tile size
    assert m["complete"] is True and m["missing"] == []
    assert {name for name, _ in pyogrio.list_layers(out)} == {"tiles_64px", "tiles_128px"}
    after = pyogrio.read_dataframe(out, layer="tiles_64px", read_geometry=False)
    assert after.equals(before)
    rows = read_csv(out.with_name("sw_metrics.csv"))
    assert len(rows) == 4 and all(r["ari_128px"] for r in rows if r["tile_size"] == "64px")
    assert is_png(out.with_name("sw_metrics.png")) and is_png(out.with_name("sw_pca_128px.png"))


# ----------------------------------------------------------------------------- real imagery, metric sizes


def test_kampala_metric_tile_sizes(kampala_z19, tmp_path):
    out = tmp_path / "kla.gpkg"
    m = run_sweep(SweepParams(str(kampala_z19), str(out), k="2..4", tile_size="20m,10m"), Recorder())
    assert m["complete"] and m["tile_sizes"] == ["10m", "20m"]
    for layer in ("tiles_10m", "tiles_20m"):
        df = pyogrio.read_dataframe(out, layer=layer)
        assert df.crs.to_epsg() == 3857 and {"k2", "k3", "k4", "pc1", "pc2"} <= set(df.columns)
    rows = read_csv(out.with_name("kla_metrics.csv"))
    small = [r for r in rows if r["tile_size"] == "10m"]
    assert len(small) == 3 and all(0 <= float(r["nmi_20m"]) <= 1 for r in small)
    assert is_png(out.with_name("kla_lineage_10m.png")) and is_png(out.with_name("kla_pca_20m.png"))


def test_fractional_metre_tile_sizes_write_the_contracts_names(city, tmp_path):
    """'38.5m' and '76.5m' (128 and 255 px at 0.3 m): the layers and plots are where the contract (and so the
    plugin) says, e.g. tiles_38_5m and sw_lineage_38_5m.png, not tiles_38.5m."""
    from engine.contract.outputs import sweep_layer_name, sweep_outputs

    out = tmp_path / "sw.gpkg"
    m = run_sweep(SweepParams(str(city.raster), str(out), k="2..3", tile_size="38.5m,76.5m"), Recorder())
    labels = ["38.5m", "76.5m"]
    assert m["complete"] and m["tile_sizes"] == labels
    layers = {name for name, _ in pyogrio.list_layers(out)}
    assert layers == {sweep_layer_name(label) for label in labels} == {"tiles_38_5m", "tiles_76_5m"}
    files = sweep_outputs(out, labels)
    assert files["lineage_38.5m"].name == "sw_lineage_38_5m.png"
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == sorted(p.name for p in files.values())
    assert all(is_png(p) for p in files.values() if p.suffix == ".png")


# ----------------------------------------------------------------------------- DeepCluster


def test_deepcluster_sweep(kampala_z19, tmp_path):
    pytest.importorskip("engine.clustering.deepcluster")
    out = tmp_path / "dc.gpkg"
    rec = Recorder()
    m = run_sweep(SweepParams(str(kampala_z19), str(out), k="2..3", tile_size="128px", method="deepcluster",
                              epochs=1, crops_per_tile=1), rec)
    assert m["complete"] and m["layers"] == {"tiles_128px": [2, 3]}
    df = pyogrio.read_dataframe(out, layer="tiles_128px", read_geometry=False)
    assert sorted(set(df["k3"])) == [0, 1, 2]
    assert np.array_equal(relabel_like(df["k2"].to_numpy(), df["k3"].to_numpy()), df["k3"].to_numpy())
    history = m["parts"]["tiles_128px"]["history"]
    assert set(history) == {"2", "3"} and len(history["2"]) >= 2             # epoch 0 and epoch 1
    assert any(e[0] == "epoch" for e in rec.events)
    assert is_png(out.with_name("dc_pca_128px.png"))
