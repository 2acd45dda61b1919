r"""DeepCluster: k-means pseudo-labels that fine-tune the CNN, repeated (Caron et al. 2018).

Each epoch computes the features of every tile with the current trunk,
clusters them with the k-means path's recipe (``KMeansTiles``: PCA with the
automatic dimension, optional whitening, L2, k-means), puts a new linear head
on the trunk and trains trunk and head for one epoch with the assignments as
labels. The final labels come from k-means on the final features.

Why the guards against drift: on ~600 real 0.15 m tiles, five epochs from
pretrained EfficientNet-Lite0 at lr 0.01 made the assignments more stable
(NMI between epochs 0.33 -> 0.66) while they explained less building coverage
(eta-squared 0.42 -> 0.27): with few tiles the network learns whatever
separates the current clusters, not urban form. So:

- training samples are crops at a random offset of up to half a tile around a
  tile (``crops_per_tile`` per tile and epoch), flipped, rotated by multiples
  of 90 degrees and lightly colour-jittered: none of that changes urban form,
  and a small raster gives thousands of distinct samples;
- pretrained trunks train at a low rate (``lr='auto'``: 0.0003) with the
  stem and the first half of the blocks frozen (``freeze='auto'``) and every
  BatchNorm layer keeping its ImageNet statistics (augmented crops in small
  batches would otherwise shift them, and the features with them, without
  any learning); their new head learns 10x faster than the trunk, so that
  within one epoch it fits the pseudo-labels and the trunk gets useful
  gradients. Measured on Kampala z20 (384 tiles of 64 px, K=6, 8 crops per
  tile, bf16 training; eta-squared of building coverage at epochs 1, 2, 3;
  start 0.368):
  lr 0.01 nothing frozen 0.236, 0.198 (the issue's drift); lr 0.001 with
  freezing 0.301, 0.187; plus frozen BatchNorm and the fast head 0.320,
  0.352; lr 0.0003 0.384, 0.385, 0.437; lr 0.0001 0.330, 0.347, 0.350.
  With the defaults as shipped (fp32 training on CPU) `eval_deepcluster.py`
  gives 0.376, 0.373, 0.379: on so few real tiles training holds building
  coverage while the assignments settle (NMI 0.53 -> 0.87), rather than
  improving it much.
  From scratch, head and trunk share lr 0.01 (a head at 0.1 collapsed the
  first epoch on the synthetic city: eta-squared 0.657 -> 0.085);
- ``augment='colour'`` (issue 16: clusters that follow urban form, not
  colour) replaces the light jitter with strong colour changes that move no
  pixel (``recolour``: random hue rotation, a quarter of the crops grey,
  saturation 0-2x, contrast and brightness +-40 %). Measured, it does not
  help, so 'light' stays the default. Mean eta-squared of the four building
  statistics of tests/bench/eval_form.py (coverage, count, mean size,
  orientation) per DeepCluster run from pretrained EfficientNet-Lite0, 64 px
  tiles of the 0.15 m images, K=6, 4 epochs, 8 crops per tile, every epoch
  trained (patience 4); the epoch kept is the one with the best coverage:

  ============  =====  ============  ==============  ==============
  image         seed   start (ep 0)  light kept      colour kept
  ============  =====  ============  ==============  ==============
  Kampala       0      0.206         0.242 (ep 4)    0.221 (ep 1)
  Kampala       1      0.222         0.234 (ep 4)    0.242 (ep 3)
  Kampala       2      0.223         0.237 (ep 4)    0.225 (ep 2)
  Zanzibar      0      0.144         0.199 (ep 1)    0.161 (ep 4)
  Zanzibar      1      0.145         0.184 (ep 1)    0.187 (ep 2)
  ============  =====  ============  ==============  ==============

  Means: Kampala 0.238 light, 0.229 colour; Zanzibar 0.192 light, 0.174
  colour (building coverage alone: Kampala 0.376 / 0.386, Zanzibar 0.497 /
  0.467). The seeds differ by 0.01-0.03, so 'colour' is at best no better.
  It trains more slowly (higher loss in every epoch; likely because the
  pseudo-labels, from features of unaugmented tiles, still carry colour that
  the crops no longer show), and on Zanzibar the orientation explained falls
  below the start's 0.05 in 7 of its 8 trained epochs (0.008-0.071; light:
  2 of 8, 0.037-0.141). On the synthetic city (K=4) both go from ARI 0.979
  to 0.990.
  About 40-60 s a run on Kampala (384 tiles), 200-260 s on Zanzibar (2048
  tiles) on the shared 2-core CPU. Commands::

      .venv/bin/python tests/bench/eval_deepcluster.py --augment light,colour --images kampala,zanzibar --epochs 4
      .venv/bin/python tests/bench/eval_deepcluster.py --augment light,colour --images kampala --epochs 4 \
          --seeds 1,2 --skip-city
      .venv/bin/python tests/bench/eval_deepcluster.py --augment light,colour --images zanzibar --epochs 4 \
          --seeds 1 --skip-city

- samples are drawn uniformly over the non-empty clusters, so a big cluster
  cannot swallow the others;
- early stopping: with building coverage given, training stops after
  ``patience`` epochs without a gain in eta-squared and the best epoch's trunk
  is kept, so the result is never worse than the start by that measure.
  Without coverage there is no external measure; training stops when the
  assignments have converged (NMI with the previous epoch >= 0.95) or after
  ``epochs``, and the last epoch is kept.

Reading is window by window (``TiledRaster.read_tiles`` for features,
``read_window_rgb`` for crops): memory does not grow with the raster, except
the features themselves, which go to ``workdir`` files when one is given.
Same inputs and seed give the same clusters on one machine (every epoch's
random state is derived from ``(seed, epoch)``, so a resumed run draws the
same samples as an uninterrupted one).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from pathlib import Path

import numpy as np

from ..contract import defaults
from ..contract.problems import OUT_OF_RANGE
from ..errors import BadInput
from ..stats.measures import eta_squared
from .kmeans import KMeansTiles

CHECKPOINT_FORMAT = "urbanform-deepcluster-checkpoint"
CONVERGED_NMI = 0.95          # without coverage: stop once successive assignments agree this much
SILHOUETTE_SAMPLES = 5000
LR_PRETRAINED = 0.0003
LR_SCRATCH = 0.01
HEAD_LR_FACTOR = 10.0        # pretrained: the new head learns this much faster than the slowed trunk
# Backbones trained in fp32 on CPU even where features use bf16: the backward pass of depthwise
# convolutions is slower under bf16 autocast there. Measured (2-core Xeon with AMX, batch 64 of 64 px,
# channels_last, a training step fwd+bwd): efficientnet_lite0 bf16 56+273 ms, fp32 80+120 ms;
# resnet18 bf16 49+152 ms, fp32 113+206 ms.
FP32_TRAINING_ON_CPU = ("efficientnet_lite0",)
JITTER = 0.1                  # light: brightness/contrast/saturation factors drawn from 1 +- JITTER
# colour (augment='colour'): strong per-sample colour changes that keep form
GREY_P = 0.25                 # share of crops turned grey
STRONG = 0.4                  # brightness and contrast factors drawn from 1 +- STRONG
SATURATION = (0.0, 2.0)       # saturation factor drawn uniformly from this range (after the hue rotation)


# ----------------------------------------------------------------------------- trunk anatomy

def trunk_stages(model) -> tuple[list, list]:
    """(stem modules, list of blocks, each a list of modules) of a pooled trunk, input to output.

    Freezing counts blocks: the stem and the first N blocks stop learning.
    """
    import torch

    body = getattr(model, "body", model)            # Sobel wrapper
    net = getattr(body, "net", None)                # EfficientNet-Lite pooled wrapper
    if net is not None and hasattr(net, "_blocks"):
        return [net._conv_stem, net._bn0], [[b] for b in net._blocks] + [[net._conv_head, net._bn1]]
    if hasattr(body, "layer1"):                     # ResNet
        blocks = [[b] for name in ("layer1", "layer2", "layer3", "layer4") for b in getattr(body, name)]
        return [body.conv1, body.bn1], blocks
    if isinstance(body, torch.nn.Sequential) and isinstance(body[0], torch.nn.Sequential):   # VGG
        blocks, cur = [], []
        for m in body[0]:
            cur.append(m)
            if isinstance(m, torch.nn.MaxPool2d):
                blocks.append(cur)
                cur = []
        return [], blocks + ([cur] if cur else [])
    raise ValueError(f"no freezing rule for trunk {type(body).__name__}")


def resolve_freeze(freeze, pretrained: bool, n_blocks: int) -> int:
    """How many blocks to freeze (the stem goes with the first one): auto = half when pretrained."""
    if freeze in ("auto", None):
        return n_blocks // 2 if pretrained else 0
    if freeze in ("none", 0, "0"):
        return 0
    return min(int(freeze), n_blocks)


def resolve_lr(lr, pretrained: bool) -> float:
    return (LR_PRETRAINED if pretrained else LR_SCRATCH) if lr in ("auto", None) else float(lr)


# ----------------------------------------------------------------------------- sampling and augmentation

def balanced_samples(labels: np.ndarray, n_clusters: int, n_samples: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``n_samples`` tiles drawn uniformly over the non-empty clusters, shuffled.

    Each non-empty cluster gets the same number of draws (with replacement
    within the cluster); empty clusters get none.
    """
    groups = [np.flatnonzero(labels == k) for k in range(n_clusters)]
    groups = [g for g in groups if len(g)]
    per = math.ceil(n_samples / len(groups))
    idx = np.concatenate([rng.choice(g, per, replace=True) for g in groups])
    return rng.permutation(idx)[:n_samples]


def augment(x, gen, mode: str = defaults.DEFAULT_AUGMENT):
    """Flips, 90-degree rotations and colour changes of a float batch (B, 3, s, s) in 0..255.

    ``mode`` (``defaults.AUGMENTS``): 'light' jitters brightness, contrast and saturation by up
    to +-10 %; 'colour' changes colour strongly (``recolour``). Per-sample choices come from the CPU torch
    generator ``gen`` (so a GPU run draws the same ones), geometry first, then colour; none of them moves,
    scales or shears anything, so urban form is kept.
    """
    return recolour(flip_rotate(x, gen), gen, mode)


def flip_rotate(x, gen):
    """A random horizontal flip and rotation by a multiple of 90 degrees per sample (draws from ``gen``)."""
    import torch

    b, dev = x.shape[0], x.device
    flip = (torch.rand(b, generator=gen) < 0.5).to(dev)
    rot = torch.randint(0, 4, (b,), generator=gen)
    x = torch.where(flip.view(b, 1, 1, 1), x.flip(3), x)
    out = x.clone()
    for k in (1, 2, 3):
        sel = (rot == k).nonzero().flatten().tolist()
        if sel:
            out[sel] = torch.rot90(x[sel], k, (2, 3))
    return out


def hue_rotation(angle):
    """(B, 3, 3) matrices rotating RGB about the grey axis by ``angle`` (B,) radians (Rodrigues): the hue
    turns, the channel mean (grey level) of every pixel stays."""
    import torch

    u = torch.full((3,), 1 / math.sqrt(3), dtype=angle.dtype)
    cross = torch.tensor([[0.0, -u[2], u[1]], [u[2], 0.0, -u[0]], [-u[1], u[0], 0.0]], dtype=angle.dtype)
    c, s = angle.cos().view(-1, 1, 1), angle.sin().view(-1, 1, 1)
    return c * torch.eye(3, dtype=angle.dtype) + s * cross + (1 - c) * torch.outer(u, u)


def recolour(x, gen, mode: str = defaults.DEFAULT_AUGMENT):
    """Per-sample colour changes of a float batch (B, 3, s, s) in 0..255 that keep every pixel's place.

    'light': saturation, contrast and brightness factors from 1 +- ``JITTER``. 'colour': a hue rotation by
    a uniform random angle, greyscale with probability ``GREY_P`` (else a saturation factor in
    ``SATURATION``), contrast and brightness factors from 1 +- ``STRONG``. Within a crop every step maps
    the grey level (channel mean) of a pixel by one increasing function, so where things are and how
    bright they are relative to each other stays (up to clipping at 0 and 255); their colour does not.
    """
    import torch

    if mode not in defaults.AUGMENTS:
        raise ValueError(f"augment mode {mode!r} is not one of {', '.join(defaults.AUGMENTS)}")
    b, dev = x.shape[0], x.device
    if mode == "colour":
        angle = (torch.rand(b, generator=gen, dtype=torch.float64) * 2 - 1) * math.pi
        grey_out = torch.rand(b, generator=gen) < GREY_P
        lo, hi = SATURATION
        sat = torch.where(grey_out, 0.0, lo + torch.rand(b, generator=gen) * (hi - lo))
        bright, contrast = (1.0 + (torch.rand(2, b, generator=gen) * 2 - 1) * STRONG)
        rot = hue_rotation(angle).to(dev, x.dtype)
        x = torch.einsum("bij,bjhw->bihw", rot, x)
    else:
        f = 1.0 + (torch.rand(b, 3, generator=gen) * 2 - 1) * JITTER
        bright, contrast, sat = f[:, 0], f[:, 1], f[:, 2]
    bright, contrast, sat = (v.to(dev, x.dtype).view(b, 1, 1, 1) for v in (bright, contrast, sat))
    grey = x.mean(1, keepdim=True)
    x = grey + (x - grey) * sat                                      # saturation
    mean = x.mean((1, 2, 3), keepdim=True)
    x = mean + (x - mean) * contrast                                 # contrast
    return (x * bright).clamp(0, 255)                                # brightness


def _nmi(a, b) -> float:
    from sklearn.metrics import normalized_mutual_info_score

    return float(normalized_mutual_info_score(a, b))


# ----------------------------------------------------------------------------- the estimator

class DeepCluster:
    """DeepCluster over the tiles of one raster (see the module docstring for the method).

    Parameters
    ----------
    n_clusters : K, at least 2 and at most the number of tiles.
    backbone, weights : as for ``FeatureExtractor`` ('imagenet', 'none' or a state-dict path).
    epochs : training epochs (at least 1); epoch 0 is the starting network's clustering.
    lr : SGD learning rate, or 'auto' (0.0003 for pretrained weights, 0.01 from scratch).
    momentum, weight_decay : SGD settings.
    batch_size : training batch size.
    sobel : feed the trunk grey level + Sobel gradients instead of colour.
    freeze : 'auto' (pretrained: the stem and the first half of the blocks; scratch:
        nothing), 'none', or N (the stem and the first N blocks).
    crops_per_tile : training samples per tile and epoch (offset crops).
    augment : colour changes of the training crops, one of ``defaults.AUGMENTS`` ('light' or 'colour',
        see ``recolour``); flips, rotations and offsets come with both.
    patience : with coverage, epochs without an eta-squared gain before stopping.
    pca_dims, whiten : the k-means recipe (``KMeansTiles``).
    seed : every random choice (same seed, same clusters on one machine).
    device, precision : as for ``FeatureExtractor``; training uses the same
        autocast, except on CPU for backbones whose bf16 backward pass is
        slower than fp32 there (``FP32_TRAINING_ON_CPU``; ``train_precision_``).
    feature_batch_size : batch size of the feature passes (default: ``default_batch_size``).
    """

    def __init__(self, n_clusters=8, backbone=defaults.DEFAULT_BACKBONE, weights=defaults.DEFAULT_WEIGHTS,
                 epochs=5, lr="auto", momentum=0.9, weight_decay=1e-5, batch_size=64, sobel=False, freeze="auto",
                 crops_per_tile=8, patience=2, pca_dims="auto", whiten=False, seed=0, device="auto", precision="auto",
                 feature_batch_size=None, augment=defaults.DEFAULT_AUGMENT):
        self.n_clusters = n_clusters
        self.backbone = backbone
        self.weights = weights
        self.epochs = epochs
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.sobel = sobel
        self.freeze = freeze
        self.crops_per_tile = crops_per_tile
        self.patience = patience
        self.pca_dims = pca_dims
        self.whiten = whiten
        self.seed = seed
        self.device = device
        self.precision = precision
        self.feature_batch_size = feature_batch_size
        self.augment = augment

    _PARAMS = ("n_clusters", "backbone", "weights", "epochs", "lr", "momentum", "weight_decay", "batch_size",
               "sobel", "freeze", "crops_per_tile", "patience", "pca_dims", "whiten", "seed", "device",
               "precision", "feature_batch_size", "augment")
    # parameters a resumed run may change: they do not change what the finished epochs computed
    _RESUMABLE = ("epochs", "patience", "device", "precision", "feature_batch_size")

    def get_params(self) -> dict:
        return {k: getattr(self, k) for k in self._PARAMS}

    # -- checks -------------------------------------------------------------------
    def _check(self, n_tiles: int) -> None:
        def number(name, value, kind=float):
            try:
                return kind(value)
            except (TypeError, ValueError):
                raise BadInput(f"--{name.replace('_', '-')} {value!r}: not a number.") from None

        if number("epochs", self.epochs, int) < 1 or int(self.epochs) != self.epochs:
            raise BadInput(f"--epochs {self.epochs}: DeepCluster needs at least 1 epoch "
                           "(use --method kmeans for clustering without training).")
        k = number("k", self.n_clusters, int)
        if k < 2:
            raise BadInput(f"--k {self.n_clusters}: K must be at least 2.", param="k", code=OUT_OF_RANGE)
        if k > n_tiles:
            raise BadInput(f"--k {self.n_clusters} is larger than the number of valid tiles ({n_tiles}). "
                           "Use a smaller K, a smaller tile size or a lower --min-valid.", param="k", code=OUT_OF_RANGE)
        if self.lr not in ("auto", None) and not number("lr", self.lr) > 0:
            raise BadInput(f"--lr {self.lr}: the learning rate must be positive (or 'auto').")
        if not 0 <= number("momentum", self.momentum) < 1:
            raise BadInput(f"--momentum {self.momentum}: use a value in [0, 1).")
        if number("weight_decay", self.weight_decay) < 0:
            raise BadInput(f"--weight-decay {self.weight_decay}: must not be negative.")
        if number("train_batch_size", self.batch_size, int) < 2:
            raise BadInput(f"--train-batch-size {self.batch_size}: use at least 2 (BatchNorm needs a batch).")
        if number("crops_per_tile", self.crops_per_tile, int) < 1:
            raise BadInput(f"--crops-per-tile {self.crops_per_tile}: use at least 1.")
        if number("patience", self.patience, int) < 1:
            raise BadInput(f"--patience {self.patience}: use at least 1.")
        if self.freeze not in ("auto", "none", None):
            try:
                ok = int(self.freeze) >= 0
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise BadInput(f"--freeze {self.freeze!r}: use auto, none or a number of blocks (0 or more).")
        if self.augment not in defaults.AUGMENTS:
            raise BadInput(f"--augment {self.augment!r}: use one of {', '.join(defaults.AUGMENTS)}.")
        if self.pca_dims != "auto" and number("pca_dims", self.pca_dims, int) < 1:
            raise BadInput(f"--pca-dims {self.pca_dims}: use 'auto' or a positive number.")

    def _fingerprint(self, tiled, rows, cols, coverage) -> str:
        """What a checkpoint must match to be resumed: the parameters and the tile set."""
        h = hashlib.sha256()
        for a in (rows, cols) + (() if coverage is None else (coverage,)):
            h.update(np.ascontiguousarray(a).tobytes())
        ds = tiled.dataset
        data = {
            "params": {k: v for k, v in self.get_params().items() if k not in self._RESUMABLE},
            "raster": {"path": os.path.basename(str(tiled.path)), "width": ds.width, "height": ds.height,
                       "transform": list(ds.transform)[:6], "bands": list(tiled.bands),
                       "tile": tiled.grid.size, "stride": tiled.grid.stride},
            "tiles": len(rows), "coverage": coverage is not None, "hash": h.hexdigest(),
        }
        return json.dumps(data, sort_keys=True, default=str)

    # -- fitting ------------------------------------------------------------------
    def fit(self, tiled, rows, cols, coverage=None, progress=None, checkpoint=None, resume=False,
            workdir=None, features=None) -> "DeepCluster":
        """Train on the tiles at (rows, cols) of the open ``TiledRaster``.

        ``coverage`` (building coverage per tile, same order) enables eta-squared
        logging and early stopping on it. ``checkpoint``: a file written after
        every epoch; with ``resume`` a run continues from it (a missing file
        starts afresh). ``workdir``: where feature files go (in memory without).
        ``progress(stage, done, total, message, **fields)`` (engine.progress.Progress): the training
        steps of an epoch come as the fields of engine.contract.progress. The checkpoint is left in
        place; the caller removes it once its outputs are written.
        ``features(epoch, state_dict, progress) -> features``: computes each epoch's features of the tiles
        elsewhere (``engine.tools.cluster`` passes one that runs them on Dask workers with the network's state
        of that epoch); the training itself always runs here.
        """
        from ..features.extract import FeatureExtractor

        rows = np.asarray(rows, dtype=np.int64)
        cols = np.asarray(cols, dtype=np.int64)
        n = len(rows)
        self._check(n)
        if coverage is not None:
            coverage = np.asarray(coverage, dtype=np.float64)
            if coverage.shape != (n,):
                raise ValueError(f"coverage has shape {coverage.shape}; expected ({n},)")
        report = progress or (lambda *a, **k: None)
        fingerprint = self._fingerprint(tiled, rows, cols, coverage)
        state = None
        if resume and checkpoint is not None and Path(checkpoint).is_file():
            state = self._load_checkpoint(checkpoint, fingerprint)

        ex = FeatureExtractor(self.backbone, self.weights, self.device, self.precision, seed=self.seed,
                              sobel=self.sobel)
        pretrained = ex.weights_path is not None
        self.lr_ = resolve_lr(self.lr, pretrained)
        self.head_lr_ = self.lr_ * (HEAD_LR_FACTOR if pretrained else 1.0)
        slow_bf16 = ex.device.type == "cpu" and self.backbone in FP32_TRAINING_ON_CPU
        self.train_precision_ = "fp32" if slow_bf16 else ex.precision
        stem, blocks = trunk_stages(ex.model)
        self.frozen_blocks_ = resolve_freeze(self.freeze, pretrained, len(blocks))
        frozen = (stem + [m for b in blocks[: self.frozen_blocks_] for m in b]) if self.frozen_blocks_ else []
        for m in frozen:
            for p in m.parameters():
                p.requires_grad_(False)
        self._frozen = frozen
        self._bn_frozen = pretrained
        self.extractor_ = ex
        self._workdir = Path(workdir) if workdir is not None else None
        self._coverage = coverage
        self._features = features

        self.epoch_labels_ = {}
        if state is None:
            self.history_ = []
            start = 1
            feats, km = self._features_and_clusters(tiled, rows, cols, 0, report)
            self._log(0, None, None, feats, km, 0.0)
            best = {"epoch": 0, "trunk": self._snapshot() if coverage is not None else None,
                    "feats": feats, "km": km}
            prev_labels = km.labels_
            report("epoch", 0, int(self.epochs), self._message(self.history_[-1]))
        else:
            try:
                ex.model.load_state_dict(state["trunk"])
            except (RuntimeError, TypeError, ValueError):        # tensors that do not fit this backbone
                raise BadInput(f"--resume: the checkpoint {str(checkpoint)!r} is damaged (its network does not "
                               f"fit {self.backbone}). Remove it, or run without --resume (with --overwrite) "
                               "to start training afresh.") from None
            self.history_ = json.loads(state["history"])
            start = int(state["epoch"]) + 1
            prev_labels = state["labels"].numpy().astype(np.int32)
            best = {"epoch": int(state["best_epoch"]), "feats": None, "km": None,
                    "trunk": state["trunk"] if int(state["best_epoch"]) == int(state["epoch"])
                    else state.get("best_trunk")}
            feats = km = None

        stopped = self._should_stop(best["epoch"])
        for epoch in range(start, int(self.epochs) + 1):
            if stopped:
                break
            t0 = time.perf_counter()
            loss = self._train_epoch(tiled, rows, cols, prev_labels, epoch, report)
            new_feats, new_km = self._features_and_clusters(tiled, rows, cols, epoch, report)
            self._log(epoch, loss, _nmi(new_km.labels_, prev_labels), new_feats, new_km, time.perf_counter() - t0)
            if feats is not best["feats"]:
                self._drop(feats)
            feats, km, prev_labels = new_feats, new_km, new_km.labels_
            trunk = self._snapshot()
            if self._is_better(epoch, best["epoch"]):
                if best["feats"] is not None:
                    self._drop(best["feats"])
                best = {"epoch": epoch, "trunk": trunk if coverage is not None else None, "feats": feats, "km": km}
            stopped = self._should_stop(best["epoch"])
            self._save_checkpoint(checkpoint, fingerprint, epoch, trunk, prev_labels, best, stopped)
            report("epoch", epoch, int(self.epochs), self._message(self.history_[-1]))

        last = self.history_[-1]["epoch"]
        self.stopped_early_ = bool(last < int(self.epochs))
        keep = best["epoch"] if coverage is not None else last
        self.best_epoch_ = int(keep)
        if keep != last:                          # early stopping: back to the best trunk
            ex.model.load_state_dict(best["trunk"])
            if feats is not best["feats"]:
                self._drop(feats)
            feats, km = best["feats"], best["km"]
        if feats is None or km is None:           # resumed: the kept epoch's features are not at hand
            feats, km = self._features_and_clusters(tiled, rows, cols, keep, report)
        ex.model.eval()
        for p in ex.model.parameters():
            p.requires_grad_(True)
        self.features_ = feats
        self.kmeans_ = km
        self.labels_ = km.labels_
        return self

    def _snapshot(self) -> dict:
        return {k: v.detach().cpu().clone().contiguous() for k, v in self.extractor_.model.state_dict().items()}

    def _is_better(self, epoch: int, best_epoch: int) -> bool:
        """With coverage: a higher eta-squared; without: every epoch replaces the previous one."""
        if self._coverage is None:
            return True
        e2 = {h["epoch"]: h["eta2"] for h in self.history_}
        return e2[epoch] > e2[best_epoch]

    def _should_stop(self, best_epoch: int) -> bool:
        if not self.history_:
            return False
        last = self.history_[-1]
        if self._coverage is not None:
            return last["epoch"] - best_epoch >= int(self.patience)
        return last["epoch"] > 0 and last["nmi"] is not None and last["nmi"] >= CONVERGED_NMI

    def _message(self, h: dict) -> str:
        total = int(self.epochs)
        parts = [f"epoch {h['epoch']}/{total}"]
        if h["loss"] is not None:
            parts.append(f"loss {h['loss']:.3f}")
        if h["nmi"] is not None:
            parts.append(f"nmi {h['nmi']:.3f}")
        if h.get("eta2") is not None:
            parts.append(f"eta2 {h['eta2']:.3f}")
        if h.get("silhouette") is not None:
            parts.append(f"silhouette {h['silhouette']:.3f}")
        return " ".join(parts)

    def _log(self, epoch, loss, nmi, feats, km, seconds) -> None:
        from sklearn.metrics import silhouette_score

        n = len(feats)
        rng = np.random.default_rng([int(self.seed), epoch, 7])
        sample = np.sort(rng.choice(n, min(n, SILHOUETTE_SAMPLES), replace=False))
        z = km.reduce(np.asarray(feats[sample]))
        lab = km.labels_[sample]
        sil = float(silhouette_score(z, lab)) if 1 < len(np.unique(lab)) < len(lab) else None
        h = {"epoch": epoch, "loss": None if loss is None else round(float(loss), 5),
             "nmi": None if nmi is None else round(nmi, 5),
             "eta2": None if self._coverage is None else round(eta_squared(km.labels_, self._coverage), 5),
             "silhouette": None if sil is None else round(sil, 5),
             "clusters_used": int(len(np.unique(km.labels_))), "seconds": round(float(seconds), 3)}
        self.history_.append(h)
        self.epoch_labels_[epoch] = km.labels_

    # -- pieces of an epoch ---------------------------------------------------------
    def _features_and_clusters(self, tiled, rows, cols, epoch, report):
        from ..features.extract import extract_features
        from ..io import NpyFile

        ex = self.extractor_
        ex.model.eval()
        n = len(rows)
        report("features", 0, n, f"epoch {epoch}/{self.epochs}: features of {n} tiles")

        def stage(d, t, message=None):
            report("features", d, t, f"epoch {epoch}/{self.epochs}: {message or 'features'}")

        if self._features is not None:
            out = self._features(epoch, self._snapshot(), stage)
        else:
            if self._workdir is not None:
                out = NpyFile(self._workdir / f"deepcluster_features_{epoch}.npy", (n, ex.dim))
            else:
                out = np.empty((n, ex.dim), dtype=np.float32)
            extract_features(tiled, rows, cols, ex, out, batch_size=self.feature_batch_size, progress=stage)
        km = KMeansTiles(int(self.n_clusters), self.pca_dims, self.whiten, self.seed).fit(out)
        return out, km

    @staticmethod
    def _drop(feats) -> None:
        """Delete a feature file that is no longer needed (in-memory arrays just go)."""
        from ..io import NpyFile

        if isinstance(feats, NpyFile):
            feats.path.unlink(missing_ok=True)

    def _train_mode(self) -> None:
        import torch

        model = self.extractor_.model
        model.train()
        for m in self._frozen:
            m.eval()                              # frozen BatchNorm keeps its statistics
        if self._bn_frozen:
            for m in model.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.eval()

    def _train_epoch(self, tiled, rows, cols, labels, epoch, report) -> float:
        """One epoch of SGD on offset crops with ``labels`` as targets; mean loss."""
        import torch

        ex = self.extractor_
        model = ex.model
        dev = ex.device
        k = int(self.n_clusters)
        n = len(rows)
        rng = np.random.default_rng([int(self.seed), epoch])
        gen = torch.Generator().manual_seed(int(self.seed) * 1000 + epoch)
        torch.manual_seed(int(self.seed) * 1000 + epoch)      # head init, dropout/drop-connect
        head = torch.nn.Linear(ex.dim, k).to(dev)
        self._train_mode()
        trunk_params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.SGD([{"params": trunk_params, "lr": self.lr_},
                               {"params": list(head.parameters()), "lr": self.head_lr_}],
                              lr=self.lr_, momentum=float(self.momentum), weight_decay=float(self.weight_decay))
        n_samples = int(self.crops_per_tile) * n
        idx = balanced_samples(labels, k, n_samples, rng)
        g = tiled.grid
        s = g.size
        half = s // 2
        offs = rng.integers(-half, half + 1, size=(n_samples, 2))
        ds = tiled.dataset
        col0 = np.clip(cols[idx] * g.stride + offs[:, 0], 0, max(0, ds.width - s))
        row0 = np.clip(rows[idx] * g.stride + offs[:, 1], 0, max(0, ds.height - s))
        targets = torch.from_numpy(labels[idx].astype(np.int64))
        bs = int(self.batch_size)
        steps = n_samples // bs if n_samples >= bs else 1      # drop the last partial batch (BatchNorm)
        dtype = None if self.train_precision_ == "fp32" else ex.autocast_dtype
        total = 0.0
        msg = f"epoch {epoch}/{self.epochs}: training on {steps * bs if n_samples >= bs else n_samples} crops"
        report("epoch", epoch - 1, int(self.epochs), msg)
        for step in range(steps):
            sl = slice(step * bs, min(n_samples, (step + 1) * bs))
            batch = np.stack([tiled.read_window_rgb(int(c), int(r), s)
                              for c, r in zip(col0[sl], row0[sl], strict=True)])
            x = augment(torch.from_numpy(batch).to(dev).float(), gen, self.augment)
            x = (x - ex._mean) / ex._std
            if ex.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(dev.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                logits = head(model(x))
            loss = torch.nn.functional.cross_entropy(logits.float(), targets[sl].to(dev))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach())
            report("epoch", epoch - 1, int(self.epochs), f"{msg} ({step + 1}/{steps})", step=step + 1, steps=steps)
        model.eval()
        return total / steps

    # -- checkpoints --------------------------------------------------------------
    def _save_checkpoint(self, path, fingerprint, epoch, trunk, labels, best, stopped) -> None:
        """Atomically write the state after ``epoch`` (temporary name, then rename)."""
        import torch

        if path is None:
            return
        obj = {"format": CHECKPOINT_FORMAT, "version": 1, "fingerprint": fingerprint, "epoch": epoch,
               "trunk": trunk, "labels": torch.from_numpy(np.asarray(labels, dtype=np.int64)),
               "history": json.dumps(self.history_), "best_epoch": int(best["epoch"]), "stopped": bool(stopped)}
        if best["epoch"] != epoch and best["trunk"] is not None:
            obj["best_trunk"] = best["trunk"]
        from ..io import atomic_path

        with atomic_path(path) as tmp:
            torch.save(obj, tmp)

    def _load_checkpoint(self, path, fingerprint: str) -> dict:
        """The state saved in ``path`` (weights_only=True, via backbones.load_torch_file), or BadInput naming
        the checkpoint and the fix: damaged, truncated, not ours (no torch text reaches the user), or made
        with other parameters."""
        import torch

        from ..features.backbones import load_torch_file

        label = f"--resume: the checkpoint {str(path)!r}"
        fix = "Remove it, or run without --resume (with --overwrite) to start training afresh."
        state = load_torch_file(path, label, "a DeepCluster checkpoint", fix)
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise BadInput(f"{label} is not a DeepCluster checkpoint. {fix}")
        try:
            int(state["epoch"]), json.loads(state["history"]), int(state["best_epoch"])
            ok = isinstance(json.loads(state["fingerprint"]), dict) and isinstance(state["trunk"], dict) \
                and torch.is_tensor(state["labels"])
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise BadInput(f"{label} is damaged (part of its state is missing). {fix}")
        if state["fingerprint"] != fingerprint:
            old, new = json.loads(state["fingerprint"]), json.loads(fingerprint)
            diff = [f"{k}: {old.get('params', {}).get(k)!r} -> {v!r}" for k, v in new["params"].items()
                    if old.get("params", {}).get(k) != v]
            if any(old.get(k) != new[k] for k in ("raster", "hash", "coverage")):
                diff.append("another raster, tiling, tile set or building coverage")
            raise BadInput(f"{label} was made with other parameters "
                           f"({'; '.join(diff)}). Run with the same parameters, or without --resume to "
                           "start afresh.")
        return state

    # -- results ------------------------------------------------------------------
    def network_state(self) -> dict:
        """State dict of the trained pooled trunk (``build_backbone(..., state_dict=)`` loads it)."""
        if not hasattr(self, "extractor_"):
            raise RuntimeError("DeepCluster is not fitted yet; call fit first.")
        return {k: v.detach().cpu().contiguous() for k, v in self.extractor_.model.state_dict().items()}

    def cleanup(self) -> None:
        """Remove the feature files this estimator wrote in ``workdir`` (``features_`` included)."""
        if self._workdir is None:
            return
        for f in self._workdir.glob("deepcluster_features_*.npy"):
            f.unlink(missing_ok=True)

