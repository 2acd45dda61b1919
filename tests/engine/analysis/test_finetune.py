"""The last CNN block fine-tuned on a few labelled tiles (engine.analysis.finetune), with real torch and the
default backbone's ImageNet weights: small (eight tiles of the synthetic city, one epoch, two crops each)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from engine.analysis.classify import cross_validate, spatial_folds
from engine.analysis.finetune import LastBlockTuner, tile_pixels, tuned_features
from engine.clustering.deepcluster import trunk_stages
from engine.features.extract import FeatureExtractor
from engine.raster.tiling import TiledRaster

TILE = 64


def labelled(city, per_zone: int = 2):
    zone = city.zone_of_tiles(TILE)
    rng = np.random.default_rng(0)
    picks = [(r, c, z) for z in range(2) for r, c in np.argwhere(zone == z)[rng.choice((zone == z).sum(), per_zone,
                                                                                         replace=False)]]
    rows, cols, y = (np.array(v) for v in zip(*picks, strict=True))
    return rows, cols, y


def last_block_names(model) -> set:
    _, blocks = trunk_stages(model)
    ids = {id(p) for m in blocks[-1] for p in m.parameters()}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def test_only_the_last_block_learns_and_the_same_seed_gives_the_same_network(city):
    base = FeatureExtractor("efficientnet_lite0", "imagenet", "cpu", "fp32")
    before = {k: v.detach().cpu().clone() for k, v in base.model.state_dict().items()}
    rows, cols, y = labelled(city)
    with TiledRaster(str(city.raster), f"{TILE}px") as tiled:
        tuner = LastBlockTuner(base, epochs=1, crops_per_tile=2, seed=3).fit(tiled, rows, cols, y)
        again = LastBlockTuner(base, epochs=1, crops_per_tile=2, seed=3).fit(tiled, rows, cols, y)
        pixels = tile_pixels(tiled, rows, cols)
    assert len(tuner.losses_) == 1 and np.isfinite(tuner.losses_[0])
    tuned = tuner.network_
    learned = last_block_names(base.model)
    changed = {k for k in before if not torch.equal(before[k], tuned[k])}
    assert changed and changed <= learned | {k.replace("weight", "running_mean") for k in learned}, changed
    assert not any("running" in k for k in changed)                    # BatchNorm keeps ImageNet's statistics
    assert all(torch.equal(before[k], v) for k, v in base.model.state_dict().items())   # the base is untouched
    assert all(torch.equal(tuned[k], again.network_[k]) for k in tuned)
    feats = tuner.extractor()(pixels)
    assert feats.shape == (len(rows), base.dim) and not np.allclose(feats, base(pixels))


def test_each_fold_tunes_on_its_training_tiles_only(city, monkeypatch):
    """No leak: the tuner of a fold sees the fold's training tiles, never its held-out ones."""
    base = FeatureExtractor("efficientnet_lite0", "imagenet", "cpu", "fp32")
    rows, cols, y = labelled(city, per_zone=4)
    seen = []
    fit = LastBlockTuner.fit

    def spy(self, tiled, r, c, yy, progress=None):
        seen.append(set(zip(r.tolist(), c.tolist(), strict=True)))
        self.epochs, self.crops_per_tile = 1, 1
        return fit(self, tiled, r, c, yy, progress)

    monkeypatch.setattr(LastBlockTuner, "fit", spy)
    with TiledRaster(str(city.raster), f"{TILE}px") as tiled:
        oof = cross_validate(None, y, rows, cols, "logreg", block=4, folds=2, seed=0,
                             features=tuned_features(tiled, rows, cols, y, base))
    folds = [(tr, te) for tr, te in spatial_folds(rows, cols, 4, 2, 0) if len(np.unique(y[tr])) >= 2]
    assert len(seen) == len(folds) and isinstance(oof, pd.Series)
    for (train, test), tiles in zip(folds, seen, strict=True):
        assert tiles == set(zip(rows[train].tolist(), cols[train].tolist(), strict=True))
        assert not tiles & set(zip(rows[test].tolist(), cols[test].tolist(), strict=True))
