"""Segmentation training: U-Net, model file, labels, run_train (real torch, real rasters)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.errors import BadInput
from engine.segment.modelfile import load_seg_model, save_seg_model
from engine.segment.unet import UNet


@pytest.mark.parametrize("encoder", ["resnet18", "efficientnet_lite0"])
def test_unet_shapes_and_model_file_round_trip(tmp_path, encoder):
    torch.manual_seed(0)
    model = UNet(encoder, weights="none").eval()
    x = torch.randint(0, 256, (2, 3, 64, 96), dtype=torch.uint8)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, 1, 64, 96)
    path = tmp_path / "m.pt"
    save_seg_model(path, model, {"bands": [1, 2, 3], "chip": 64, "pixel_size_m": 0.5})
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw["format"] == "urbanform-segmentation-model"
    loaded, meta = load_seg_model(path)
    assert meta["encoder"] == encoder and meta["chip"] == 64 and meta["threshold"] == 0.5
    assert not loaded.training
    with torch.no_grad():
        assert torch.equal(loaded(x), y)
    with pytest.raises(ValueError, match="multiples of 32"):
        model(torch.zeros(1, 3, 48, 64, dtype=torch.uint8))


def test_unet_imagenet_weights_offline():
    model = UNet("efficientnet_lite0", weights="imagenet")
    assert model.weights_file and model.weights_file.endswith((".pth", ".pt"))


def test_bad_encoder_and_foreign_model_file(tmp_path):
    with pytest.raises(BadInput, match="unknown"):
        UNet("vgg99", weights="none")
    other = tmp_path / "other.pt"
    torch.save({"a": torch.zeros(2)}, other)
    with pytest.raises(BadInput, match="not an Urban Form Mapper segmentation model"):
        load_seg_model(other)
    with pytest.raises(BadInput, match="no such file"):
        load_seg_model(tmp_path / "missing.pt")
    np.save(tmp_path / "x.npy", np.zeros(3))
    with pytest.raises(BadInput):
        load_seg_model(tmp_path / "x.npy")
