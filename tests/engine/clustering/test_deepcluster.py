"""DeepCluster: quality against its starting point on the synthetic city, and the mechanics
(checkpoint/resume, determinism, Sobel, augmentation, bad input) on a tiny generated city. Real torch throughout."""
from __future__ import annotations

import json

import numpy as np
import pytest

from engine.clustering.deepcluster import DeepCluster, augment, balanced_samples, recolour
from engine.contract import defaults
from engine.errors import BadInput, Cancelled
from engine.raster.tiling import TiledRaster
from tests.engine.helpers import REPO
from tests.truth import building_coverage

RESULTS = REPO / ".test-results"


def tiles_frame(tiled, rows, cols):
    import geopandas as gpd
    from shapely.geometry import box

    g = tiled.grid
    geoms = [box(*g.tile(int(r), int(c)).bounds) for r, c in zip(rows, cols)]
    return gpd.GeoDataFrame({"tile_id": rows * g.n_cols + cols}, geometry=geoms, crs=tiled.working_crs)


@pytest.fixture(scope="module")
def city_coverage(city, tmp_path_factory):
    """Building coverage per 64 px tile of the city, from its footprints (independent overlay)."""
    fp = tmp_path_factory.mktemp("fp") / "buildings.gpkg"
    city.footprints.to_file(fp)
    with TiledRaster(city.raster, "64px") as t:
        rows, cols = np.nonzero(np.ones(t.grid.shape, bool))
        return rows, cols, building_coverage(tiles_frame(t, rows, cols), fp)


@pytest.fixture(scope="module")
def small_city(tmp_path_factory):
    """256 x 256 px, 4 blocks: 64 tiles of 32 px, enough for the mechanics and cheap to train."""
    from tests.synthetic import make_city

    return make_city(tmp_path_factory.mktemp("small") / "small.tif", zone_grid=(2, 2), zone_px=128, seed=5)


def small_fit(raster, checkpoint=None, resume=False, progress=None, workdir=None, **kw):
    params = dict(n_clusters=3, backbone="resnet18", weights="none", epochs=2, crops_per_tile=2, batch_size=16,
                  seed=1)
    params.update(kw)
    with TiledRaster(raster, "32px") as t:
        rows, cols = np.nonzero(np.ones(t.grid.shape, bool))
        return DeepCluster(**params).fit(t, rows, cols, progress=progress, checkpoint=checkpoint, resume=resume,
                                         workdir=workdir)


@pytest.mark.parametrize("backbone, weights", [("resnet18", "none"), ("efficientnet_lite0", "imagenet")])
def test_not_worse_than_its_start_on_the_city(city, city_coverage, backbone, weights):
    """ARI vs the true zones of k-means on the starting network (epoch 0) and of DeepCluster from it.

    The run uses building coverage for early stopping, so the kept epoch explains at least as much
    coverage as the start; ARI may move by a tile or two (one tile of 256 is ~0.01 ARI), hence 0.02.
    """
    from sklearn.metrics import adjusted_rand_score

    rows, cols, coverage = city_coverage
    truth = city.zone_of_tiles(64)[rows, cols]
    events = []
    with TiledRaster(city.raster, "64px") as t:
        dc = DeepCluster(4, backbone=backbone, weights=weights, epochs=3, crops_per_tile=4, seed=0).fit(
            t, rows, cols, coverage=coverage, progress=lambda *a, **k: events.append(a))
    start = adjusted_rand_score(truth, dc.epoch_labels_[0])
    final = adjusted_rand_score(truth, dc.labels_)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"deepcluster_ari_{backbone}.json").write_text(json.dumps(
        {"weights": weights, "start": round(start, 3), "final": round(final, 3), "kept_epoch": dc.best_epoch_,
         "history": dc.history_}, indent=1))
    print(f"{backbone}/{weights}: ARI start {start:.3f} final {final:.3f} kept epoch {dc.best_epoch_}")
    assert final >= start - 0.02
    if weights == "imagenet":
        assert max(start, final) >= 0.8
        assert dc.lr_ == 0.0003 and dc.head_lr_ == pytest.approx(0.003) and dc.frozen_blocks_ == 8
    else:
        assert dc.lr_ == 0.01 and dc.frozen_blocks_ == 0
    # history: epoch 0 is the start, then one entry per trained epoch with loss, NMI and eta2
    assert [h["epoch"] for h in dc.history_] == list(range(len(dc.history_)))
    assert dc.history_[0]["loss"] is None and dc.history_[0]["nmi"] is None
    for h in dc.history_[1:]:
        assert h["loss"] > 0 and 0 <= h["nmi"] <= 1 and 0 <= h["eta2"] <= 1 and h["clusters_used"] <= 4
    kept = dc.history_[dc.best_epoch_]["eta2"]
    assert kept >= dc.history_[0]["eta2"]
    assert kept == max(h["eta2"] for h in dc.history_)
    # labels come from k-means on the final features, and kmeans_ assigns them again
    assert np.array_equal(dc.kmeans_.assign(dc.features_)[0], dc.labels_)
    assert dc.features_.shape == (len(rows), dc.extractor_.dim)
    stages = {e[0] for e in events}
    assert {"features", "epoch"} <= stages
    done = [e for e in events if e[0] == "epoch" and "loss" in e[3]]
    assert done and done[0][1:3] == (1, 3) and done[0][3].startswith("epoch 1/3 loss ")
    assert "eta2" in done[0][3]


def test_frozen_layers_do_not_change(small_city):
    from engine.features.backbones import build_backbone

    dc = small_fit(small_city.raster, backbone="efficientnet_lite0", weights="imagenet", epochs=1)
    before = build_backbone("efficientnet_lite0", "imagenet")[0].state_dict()
    after = dc.network_state()
    assert torch_equal(before["net._conv_stem.weight"], after["net._conv_stem.weight"])
    assert torch_equal(before["net._bn0.running_mean"], after["net._bn0.running_mean"])
    assert torch_equal(before["net._blocks.7._depthwise_conv.weight"], after["net._blocks.7._depthwise_conv.weight"])
    assert not torch_equal(before["net._blocks.8._depthwise_conv.weight"],
                           after["net._blocks.8._depthwise_conv.weight"])


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


def test_checkpoint_resume_continues_and_matches_an_uninterrupted_run(small_city, tmp_path):
    """Interrupted after epoch 1 and resumed, a run ends exactly where an uninterrupted one does:
    epochs 0 and 1 ran in two separate fits with the same seed (determinism), epoch 2 from the
    checkpoint (resume draws the same samples, since each epoch's random state comes from seed and epoch)."""
    full = small_fit(small_city.raster)

    ckpt = tmp_path / "run_checkpoint.pt"

    def stop_after_epoch_1(stage, done, total, message="", **fields):
        if stage == "epoch" and done == 1 and "loss" in message:
            raise Cancelled("cancelled by the test")

    with pytest.raises(Cancelled):
        small_fit(small_city.raster, checkpoint=ckpt, progress=stop_after_epoch_1)
    assert ckpt.is_file() and not (tmp_path / "run_checkpoint.pt.tmp").exists()
    import torch

    state = torch.load(ckpt, weights_only=True)
    assert state["epoch"] == 1

    events = []
    resumed = small_fit(small_city.raster, checkpoint=ckpt, resume=True, progress=lambda *a, **k: events.append(a),
                        workdir=tmp_path)
    trained = [e for e in events if e[0] == "epoch" and "loss" in e[3]]
    assert [e[1] for e in trained] == [2]                        # only the missing epoch ran
    assert [h["epoch"] for h in resumed.history_] == [0, 1, 2]
    same = ("loss", "nmi", "silhouette", "clusters_used")
    assert [[h[k] for k in same] for h in resumed.history_] == [[h[k] for k in same] for h in full.history_]
    assert np.array_equal(resumed.labels_, full.labels_)
    # features live in the workdir; only the kept epoch's file remains
    assert [p.name for p in tmp_path.glob("deepcluster_features_*.npy")] == ["deepcluster_features_2.npy"]
    assert torch.load(ckpt, weights_only=True)["epoch"] == 2

    with pytest.raises(BadInput, match=r"--resume: .*other parameters.*lr"):
        small_fit(small_city.raster, checkpoint=ckpt, resume=True, lr=0.5)
    with pytest.raises(BadInput, match=r"--resume: .*another raster, tiling, tile set"):
        with TiledRaster(small_city.raster, "32px") as t:
            rows, cols = np.nonzero(np.ones(t.grid.shape, bool))
            DeepCluster(3, backbone="resnet18", weights="none", epochs=2, crops_per_tile=2, batch_size=16,
                        seed=1).fit(t, rows[1:], cols[1:], checkpoint=ckpt, resume=True)


def test_sampling_is_uniform_over_clusters_and_skips_empty_ones():
    rng = np.random.default_rng(0)
    labels = np.array([0] * 90 + [1] * 8 + [3] * 2)           # cluster 2 is empty, 0 dominates
    idx = balanced_samples(labels, 4, 300, rng)
    counts = np.bincount(labels[idx], minlength=4)
    assert len(idx) == 300 and counts[2] == 0
    assert counts[0] == counts[1] == counts[3] == 100


def test_empty_cluster_in_training_is_skipped(small_city):
    """A run whose pseudo-labels leave clusters empty trains on the others (no error, no NaN)."""
    dc = small_fit(small_city.raster, n_clusters=3, epochs=1)
    lab = dc.epoch_labels_[0].copy()
    lab[lab == 2] = 0                                            # cluster 2 now empty
    with TiledRaster(small_city.raster, "32px") as t:
        rows, cols = np.nonzero(np.ones(t.grid.shape, bool))
        loss = dc._train_epoch(t, rows, cols, lab, 1, lambda *a, **k: None)
    assert np.isfinite(loss)


def test_sobel_option_runs(small_city):
    from engine.features.extract import FeatureExtractor

    dc = small_fit(small_city.raster, epochs=1, sobel=True)
    state = dc.network_state()
    assert all(k.startswith("body.") for k in state)
    ex = FeatureExtractor("resnet18", "none", "cpu", sobel=True, state_dict=state)
    with TiledRaster(small_city.raster, "32px") as t:
        tiles = t.read_tiles(0, [0, 1, 2])
    assert np.allclose(ex(tiles), dc.extractor_(tiles), atol=1e-2)
    assert len(dc.history_) == 2 and dc.history_[1]["loss"] is not None


@pytest.mark.parametrize("kw, option", [
    ({"epochs": 0}, "--epochs 0"), ({"lr": 0}, "--lr 0"), ({"lr": -0.1}, "--lr -0.1"),
    ({"n_clusters": 65}, "--k 65"), ({"n_clusters": 1}, "--k 1"), ({"freeze": "some"}, "--freeze 'some'"),
    ({"crops_per_tile": 0}, "--crops-per-tile 0"), ({"batch_size": 1}, "--train-batch-size 1"),
    ({"momentum": 1.5}, "--momentum 1.5"), ({"augment": "sepia"}, "--augment 'sepia'"),
])
def test_bad_parameters_name_the_option(small_city, kw, option):
    with pytest.raises(BadInput) as err:
        small_fit(small_city.raster, **kw)
    assert str(err.value).startswith(option)


# ----------------------------------------------------------------------------- colour-invariant augmentation

def bright_square_batch(n=16, size=32):
    """``n`` crops of random dark colours, each with a bright square of another random colour in one corner
    region, plus a grey ramp across the crop: a geometry (where the square is, which pixels are brighter)
    that colour changes must keep."""
    import torch

    g = torch.Generator().manual_seed(11)
    ramp = torch.linspace(0, 30, size).view(1, 1, 1, size)
    base = 20 + torch.rand(n, 3, 1, 1, generator=g) * 60 + ramp
    x = base.expand(n, 3, size, size).clone()
    x[:, :, 4:14, 18:28] = 170 + torch.rand(n, 3, 1, 1, generator=g) * 80
    return x


def grey(x):
    return x.mean(1)


def test_colour_augmentation_keeps_shape_range_and_geometry():
    """Recolouring moves no pixel: the bright square stays brightest where it was in every crop, and the grey
    level keeps its per-pixel order (Spearman >= 0.99; only clipping at 0/255 can tie pixels)."""
    import torch
    from scipy.stats import spearmanr

    x = bright_square_batch()
    y = recolour(x, torch.Generator().manual_seed(0), "colour")
    assert y.shape == x.shape and y.dtype == x.dtype
    assert float(y.min()) >= 0 and float(y.max()) <= 255
    square = torch.zeros(32, 32, dtype=torch.bool)
    square[4:14, 18:28] = True
    for before, after in zip(grey(x), grey(y)):
        assert float(after[square].min()) > float(after[~square].max())      # the square is still the bright part
        assert spearmanr(before.flatten(), after.flatten())[0] >= 0.99
    # flips and rotations come on top, and move the square to one of the 8 symmetric places
    z = augment(x, torch.Generator().manual_seed(0), "colour")
    assert z.shape == x.shape
    for after in grey(z):
        top = after >= after.max() * 0.999
        places = [torch.rot90(m, k) for m in (square, square.flip(1)) for k in range(4)]
        assert any(bool(top[p].all()) for p in places)


def test_colour_augmentation_changes_colour_much_more_than_light():
    """Per-crop mean colour (chromaticity) and brightness move far more under 'colour' than 'light', and
    'colour' greys some crops out entirely."""
    import torch

    x = bright_square_batch(n=200)

    def chroma(t):                      # per crop: mean r, g, b shares of the pixel sum
        m = t.mean((2, 3))
        return m / m.sum(1, keepdim=True)

    moved = {}
    for mode in defaults.AUGMENTS:
        y = recolour(x, torch.Generator().manual_seed(1), mode)
        moved[mode] = (float((chroma(y) - chroma(x)).abs().sum(1).mean()),
                       float((y.mean((1, 2, 3)) / x.mean((1, 2, 3))).log().abs().mean()))
        if mode == "colour":
            spread = (y.max(1).values - y.min(1).values).amax((1, 2))      # 0: a grey crop
            assert 0.1 <= float((spread < 1e-3).float().mean()) <= 0.45
    assert moved["colour"][0] > 5 * moved["light"][0]                       # hue and saturation
    assert moved["colour"][1] > 2.5 * moved["light"][1]                     # brightness
    assert moved["light"][0] < 0.05


def test_augmentation_is_deterministic_for_a_generator_seed():
    import torch

    x = bright_square_batch()
    for mode in defaults.AUGMENTS:
        a = augment(x, torch.Generator().manual_seed(5), mode)
        b = augment(x, torch.Generator().manual_seed(5), mode)
        c = augment(x, torch.Generator().manual_seed(6), mode)
        assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(augment(x, torch.Generator().manual_seed(5), "light"),
                           augment(x, torch.Generator().manual_seed(5), "colour"))
    with pytest.raises(ValueError, match="sepia"):
        recolour(x, torch.Generator(), "sepia")


def test_augment_reaches_deepcluster_from_the_cli(small_city, tmp_path):
    """``cluster --method deepcluster --augment colour`` trains with it: the manifest records it, and the
    first epoch's loss differs from the same run with the default (same seed, same crops, other colours)."""
    from engine.cli import build_parser, main

    sub = next(a for a in build_parser()._actions if a.dest == "tool").choices["cluster"]
    assert sub.get_default("augment") == defaults.DEFAULT_AUGMENT
    losses = {}
    for mode in defaults.AUGMENTS:
        out = tmp_path / f"{mode}.gpkg"
        argv = ["cluster", str(small_city.raster), "--out", str(out), "--k", "3", "--tile-size", "32px",
                "--method", "deepcluster", "--epochs", "1", "--crops-per-tile", "1", "--train-batch-size", "16",
                "--backbone", "resnet18", "--weights", "none", "--no-cache", "--progress", "none",
                "--augment", mode]
        assert main(argv) == 0
        manifest = json.loads((tmp_path / f"{mode}_manifest.json").read_text())
        clustering = manifest["clustering"]
        assert clustering["training"]["augment"] == mode
        losses[mode] = clustering["history"][1]["loss"]
    assert losses["light"] != losses["colour"]
