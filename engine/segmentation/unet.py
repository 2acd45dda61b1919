"""U-Net for building segmentation on a torchvision ResNet or EfficientNet-Lite0 encoder.

The encoder gives feature maps at strides 2, 4, 8, 16 and 32; the decoder
upsamples step by step, concatenating the encoder map of the same stride
(skip connections), and a last block brings the map back to full resolution
with one logit channel (building).

Input: uint8 RGB (B, 3, H, W) as ``TiledRaster`` reads it (float tensors are
taken on the same 0-255 scale), H and W multiples of 32. The model divides by
255 and normalises with the encoder's mean and std itself, so callers never
normalise; ``model.mean`` / ``model.std`` are recorded in the model file.

Weights: ``'imagenet'`` (offline only: efficientnet_lite0's ship in a package,
torchvision resnets come from the local torch cache), ``'none'`` (random, always
works) or the path of an encoder state dict. Nothing is ever downloaded.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..contract import defaults
from ..errors import BadInput
from ..features.backbones import (IMAGENET_MEAN, IMAGENET_STD, BackboneSpec, backbone_spec, load_trunk_weights,
                                  resolve_weights)

ENCODERS = defaults.SEG_ENCODERS
DECODER_CHANNELS = (128, 64, 48, 32, 16)   # from stride 16 up to full resolution

# encoder -> channels of the stride 2, 4, 8, 16, 32 feature maps
_CHANNELS = {
    "resnet18": (64, 64, 128, 256, 512),
    "resnet34": (64, 64, 128, 256, 512),
    "resnet50": (64, 256, 512, 1024, 2048),
    "efficientnet_lite0": (16, 24, 40, 112, 320),
}
# efficientnet_lite0 block index whose output is the stride 2, 4, 8, 16, 32 map
_EFFNET_TAPS = (0, 2, 4, 10, 15)


def _resnet34_spec() -> BackboneSpec:
    from ..features.backbones import _resnet_pool, _torch_cache_files, _tv

    return BackboneSpec("resnet34", 512, IMAGENET_MEAN, IMAGENET_STD, _tv("resnet34"),
                        lambda: _torch_cache_files("resnet34-b627a593.pth", "resnet34-333f7ec4.pth"), _resnet_pool)


def encoder_spec(name: str) -> BackboneSpec:
    """The backbone spec of an encoder name, or BadInput listing the choices."""
    if name not in ENCODERS:
        raise BadInput(f"--encoder {name!r} is unknown; choose one of: {', '.join(ENCODERS)}.")
    return _resnet34_spec() if name == "resnet34" else backbone_spec(name)


class _ResNetEncoder(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        n = self.net
        f1 = n.relu(n.bn1(n.conv1(x)))
        f2 = n.layer1(n.maxpool(f1))
        f3 = n.layer2(f2)
        f4 = n.layer3(f3)
        f5 = n.layer4(f4)
        return [f1, f2, f3, f4, f5]


class _EffnetEncoder(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        n = self.net
        h = n._swish(n._bn0(n._conv_stem(x)))
        feats = []
        for i, block in enumerate(n._blocks):
            if i > _EFFNET_TAPS[-1]:
                break
            h = block(h)
            if i in _EFFNET_TAPS:
                feats.append(h)
        return feats


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


def _load_encoder_weights(net: nn.Module, spec: BackboneSpec, weights: str) -> str | None:
    path = resolve_weights(spec, weights)
    if path is None:
        return None
    load_trunk_weights(net, path, f"encoder {spec.name}",
                       "Pick the encoder these weights were trained for, or --weights none.")
    return str(path)


class UNet(nn.Module):
    """U-Net: ``UNet('resnet18', weights='none')``; forward(uint8 (B,3,H,W)) -> logits (B,1,H,W)."""

    def __init__(self, encoder: str = defaults.DEFAULT_SEG_ENCODER, weights: str = defaults.DEFAULT_WEIGHTS):
        super().__init__()
        spec = encoder_spec(encoder)
        net = spec.build()
        self.weights_file = _load_encoder_weights(net, spec, weights)
        if encoder.startswith("resnet"):
            net.fc = nn.Identity()
            self.encoder = _ResNetEncoder(net)
        else:
            for name in ("_fc", "_conv_head", "_bn1"):
                setattr(net, name, nn.Identity())
            net._blocks = net._blocks[: _EFFNET_TAPS[-1] + 1]
            self.encoder = _EffnetEncoder(net)
        self.encoder_name = encoder
        self.mean = tuple(float(v) for v in spec.mean)
        self.std = tuple(float(v) for v in spec.std)
        self.register_buffer("_mean", torch.tensor(self.mean).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.register_buffer("_std", torch.tensor(self.std).view(1, 3, 1, 1) * 255.0, persistent=False)
        enc = _CHANNELS[encoder]
        dec = DECODER_CHANNELS
        blocks = []
        cin = enc[4]
        for i, skip in enumerate((enc[3], enc[2], enc[1], enc[0])):
            blocks.append(_conv_block(cin + skip, dec[i]))
            cin = dec[i]
        blocks.append(_conv_block(cin, dec[4]))         # stride 2 -> full resolution, no skip
        self.decoder = nn.ModuleList(blocks)
        self.head = nn.Conv2d(dec[4], 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h % 32 or w % 32:
            raise ValueError(f"UNet input {h}x{w} px: height and width must be multiples of 32.")
        x = (x.to(self._mean.dtype) - self._mean) / self._std
        feats = self.encoder(x)
        y = feats[4]
        for i, skip in enumerate((feats[3], feats[2], feats[1], feats[0])):
            y = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            y = self.decoder[i](torch.cat([y, skip.to(y.dtype)], 1))
        y = F.interpolate(y, size=(h, w), mode="bilinear", align_corners=False)
        return self.head(self.decoder[4](y))
