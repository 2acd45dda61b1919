"""Backbones, weights, devices and precision of CNN features (real torch, small inputs)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.errors import BadInput
from engine.features.backbones import BACKBONES, backbone_spec
from engine.features.extract import (FeatureExtractor, choose_device, choose_precision, default_batch_size,
                                     extract_features)
from engine.features.runtime import tune_malloc
from engine.raster.tiling import TiledRaster


def _tiles(n=3, px=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, 3, px, px), dtype=np.uint8)


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_backbone_gives_one_vector_per_tile(name):
    ex = FeatureExtractor(name, weights="none", device="cpu", precision="fp32")
    feats = ex(_tiles())
    assert feats.shape == (3, BACKBONES[name].dim) and feats.dtype == np.float32
    assert np.isfinite(feats).all() and feats.std(axis=0).max() > 0


def test_unknown_backbone():
    with pytest.raises(BadInput, match="--backbone 'alexnet' is unknown; choose one of: resnet18"):
        backbone_spec("alexnet")


def test_efficientnet_lite0_imagenet_weights_ship_with_a_package():
    ex = FeatureExtractor("efficientnet_lite0", weights="imagenet", device="cpu", precision="fp32")
    assert ex.weights_path is not None and ex.weights_path.name.startswith("efficientnet-lite0")
    packaged = torch.load(ex.weights_path, map_location="cpu", weights_only=True)
    assert torch.equal(ex.model.net._conv_stem.weight, packaged["_conv_stem.weight"])


def test_torchvision_imagenet_weights_come_from_the_local_torch_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(BadInput, match=r"never downloads. Place the file at .*resnet18-f37072fd\.pth"):
        FeatureExtractor("resnet18", weights="imagenet", device="cpu")
    # a file placed in the cache (as torchvision would have downloaded it) is used, offline
    import torchvision

    torch.manual_seed(7)
    state = torchvision.models.resnet18(weights=None).state_dict()
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(state, tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth")
    ex = FeatureExtractor("resnet18", weights="imagenet", device="cpu")
    assert torch.equal(ex.model.conv1.weight, state["conv1.weight"])


def test_weights_from_a_state_dict_file(tmp_path):
    ref = FeatureExtractor("resnet18", weights="none", device="cpu", precision="fp32", seed=5)
    path = tmp_path / "w.pt"
    torch.save(ref.model.state_dict(), path)
    other = FeatureExtractor("resnet18", weights=str(path), device="cpu", precision="fp32", seed=99)
    tiles = _tiles()
    assert np.allclose(ref(tiles), other(tiles), atol=1e-5)


def test_bad_weights_files(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(BadInput, match="cannot be loaded as a PyTorch state dict"):
        FeatureExtractor("resnet18", weights=str(text), device="cpu")
    lst = tmp_path / "list.pt"
    torch.save([1, 2, 3], lst)
    with pytest.raises(BadInput, match="is not a state dict"):
        FeatureExtractor("resnet18", weights=str(lst), device="cpu")
    vgg = tmp_path / "vgg.pt"
    import torchvision

    torch.save(torchvision.models.vgg16(weights=None).features.state_dict(), vgg)
    with pytest.raises(BadInput, match="does not fit backbone resnet18"):
        FeatureExtractor("resnet18", weights=str(vgg), device="cpu")
    with pytest.raises(BadInput, match="no such file"):
        FeatureExtractor("resnet18", weights=str(tmp_path / "missing.pt"), device="cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_gpu_is_a_clear_error():
    with pytest.raises(BadInput, match="no CUDA device is available.*Use --device auto or cpu"):
        choose_device("cuda")


def test_device_and_precision_choice():
    assert choose_device("auto").type in ("cuda", "mps", "cpu")
    cpu = choose_device("cpu")
    assert choose_precision(cpu, "auto") in ("bf16", "fp32")
    with pytest.raises(BadInput, match="fp16 is for GPUs"):
        choose_precision(cpu, "fp16")
    with pytest.raises(BadInput, match="--device 'tpu' is unknown"):
        choose_device("tpu")
    assert default_batch_size(64, cpu) == 256 and default_batch_size(224, cpu) == 20


def test_bf16_features_match_fp32():
    if choose_precision(torch.device("cpu")) != "bf16":
        pytest.skip("this CPU has no bf16 support")
    tiles = _tiles(8, 64)
    f32 = FeatureExtractor("efficientnet_lite0", "imagenet", "cpu", "fp32")(tiles)
    b16 = FeatureExtractor("efficientnet_lite0", "imagenet", "cpu", "bf16")(tiles)
    cos = (f32 * b16).sum(1) / np.linalg.norm(f32, axis=1) / np.linalg.norm(b16, axis=1)
    assert cos.min() > 0.98


def test_background_reading_gives_the_same_features(kampala_z19):
    ex = FeatureExtractor("resnet18", "none", "cpu", "fp32")
    with TiledRaster(kampala_z19, "64px") as tiled:
        rows, cols = np.indices(tiled.grid.shape).reshape(2, -1)
        a = extract_features(tiled, rows, cols, ex, np.empty((len(rows), ex.dim), np.float32), batch_size=7,
                             overlap_reads=False)
        b = extract_features(tiled, rows, cols, ex, np.empty((len(rows), ex.dim), np.float32), batch_size=7,
                             overlap_reads=True)
        direct = ex(tiled.read_tiles(3, [5]))
    assert np.array_equal(a, b)
    assert np.allclose(a[3 * tiled.grid.n_cols + 5], direct[0], atol=1e-4)


def test_malloc_tuning_applies_on_glibc():
    assert tune_malloc() is True
