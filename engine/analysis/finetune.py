"""The last CNN block fine-tuned on a few labelled tiles (``classify --finetune``).

A copy of the feature extractor's network learns, with a linear head on its pooled features, to tell the
labelled tiles' classes apart: only its last block (``trunk_stages``: for EfficientNet-Lite the 1x1 head
convolution and its BatchNorm, whose ImageNet statistics stay) and the head learn; everything before stays
ImageNet's. The training images are crops of the labelled tiles shifted by up to a quarter of a tile (so a crop
never reaches a tile two tiles away: the spatial cross-validation's buffer keeps held-out tiles out of reach),
flipped, rotated by 90 degrees and colour-jittered (``deepcluster.augment``). Small and CPU-friendly: a few
epochs over a few crops of each labelled tile.

``LastBlockTuner`` is a scikit-learn style estimator: ``fit`` on the labelled tiles of a raster, then
``extractor()`` gives a ``FeatureExtractor`` that describes any tiles with the tuned network (``network_``,
the state dict the classifier file stores).
"""
from __future__ import annotations

import copy

import numpy as np

EPOCHS = 4                   # passes over the labelled tiles' crops
CROPS_PER_TILE = 8           # crops of each labelled tile per epoch
SHIFT = 0.25                 # the crops' largest shift, a share of the tile side
BATCH = 32
LR_BLOCK = 1e-4              # Adam: the pretrained block moves little ...
LR_HEAD = 1e-3               # ... the new head more


class LastBlockTuner:
    """Fine-tunes the last block of ``base`` (a ``FeatureExtractor``) on labelled tiles."""

    def __init__(self, base, epochs: int = EPOCHS, crops_per_tile: int = CROPS_PER_TILE, seed: int = 0):
        self.base = base
        self.epochs = epochs
        self.crops_per_tile = crops_per_tile
        self.seed = seed

    def fit(self, tiled, rows, cols, y, progress=None) -> "LastBlockTuner":
        """Train on the tiles at (rows, cols) with classes ``y`` (0..k-1); ``progress(i, n)`` after each step."""
        import torch

        from ..clustering.deepcluster import augment, trunk_stages

        base = self.base
        rows, cols, y = np.asarray(rows, np.int64), np.asarray(cols, np.int64), np.asarray(y, np.int64)
        dev = base.device
        torch.manual_seed(int(self.seed))
        model = copy.deepcopy(base.model).float().eval()        # eval: BatchNorm keeps ImageNet's statistics
        for p in model.parameters():
            p.requires_grad_(False)
        _, blocks = trunk_stages(model)
        block = [p for m in blocks[-1] for p in m.parameters()]
        for p in block:
            p.requires_grad_(True)
        k = int(y.max()) + 1
        head = torch.nn.Linear(base.dim, k).to(dev)
        opt = torch.optim.Adam([{"params": block, "lr": LR_BLOCK}, {"params": head.parameters(), "lr": LR_HEAD}])
        counts = np.bincount(y, minlength=k).astype(np.float32)
        weight = torch.from_numpy(counts.sum() / np.maximum(counts, 1) / k).to(dev)      # balanced classes
        rng = np.random.default_rng([int(self.seed), 7])
        gen = torch.Generator().manual_seed(int(self.seed))
        g, ds = tiled.grid, tiled.dataset
        s = g.size
        shift = int(s * SHIFT)
        n = len(rows) * int(self.crops_per_tile)
        steps = max(1, -(-n // BATCH))
        self.losses_ = []
        for epoch in range(int(self.epochs)):
            idx = rng.permutation(np.repeat(np.arange(len(rows)), int(self.crops_per_tile)))
            offs = rng.integers(-shift, shift + 1, size=(n, 2))
            col0 = np.clip(cols[idx] * g.stride + offs[:, 0], 0, max(0, ds.width - s))
            row0 = np.clip(rows[idx] * g.stride + offs[:, 1], 0, max(0, ds.height - s))
            total = 0.0
            for step in range(steps):
                sl = slice(step * BATCH, min(n, (step + 1) * BATCH))
                batch = np.stack([tiled.read_window_rgb(int(c), int(r), s)
                                  for c, r in zip(col0[sl], row0[sl], strict=True)])
                x = augment(torch.from_numpy(batch).to(dev).float(), gen)
                x = (x - base._mean) / base._std
                loss = torch.nn.functional.cross_entropy(head(model(x)), torch.from_numpy(y[idx[sl]]).to(dev),
                                                         weight=weight)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach())
                if progress is not None:
                    progress(epoch * steps + step + 1, int(self.epochs) * steps)
            self.losses_.append(total / steps)
        for p in model.parameters():
            p.requires_grad_(False)
        self.network_ = {k_: v.detach().cpu().clone() for k_, v in model.state_dict().items()}
        return self

    def extractor(self):
        """A ``FeatureExtractor`` with the tuned network (the base's backbone, device and precision)."""
        from ..features.extract import FeatureExtractor

        b = self.base
        return FeatureExtractor(b.spec.name, "none", str(b.device), b.precision, state_dict=self.network_)


def tile_pixels(tiled, rows, cols) -> np.ndarray:
    """The tiles at (rows, cols) as uint8 (n, 3, s, s), read as the feature extraction reads them."""
    return np.concatenate([tiled.read_tiles(int(r), [int(c)]) for r, c in zip(rows, cols, strict=True)])


def tuned_features(tiled, rows, cols, y, base, seed: int = 0, epochs: int = EPOCHS):
    """A function of the training positions that, for ``cross_validate``, fine-tunes on those labelled tiles
    only and returns the tuned features of every labelled tile (the held-out ones included)."""
    pixels = tile_pixels(tiled, rows, cols)

    def features(train):
        tuner = LastBlockTuner(base, epochs=epochs, seed=seed).fit(tiled, rows[train], cols[train], y[train])
        return tuner.extractor()(pixels)

    return features
