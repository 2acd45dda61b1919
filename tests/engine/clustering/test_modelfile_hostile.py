"""Model and weights files that are damaged, truncated, of the wrong kind or booby-trapped.

Each is a BadInput naming the file, with a fix, before any work; torch's own text (its advice to retry with
``weights_only=False``) never reaches the user, no Python warning escapes, and no code in a file ever runs.
Tiny files are generated in tmp_path; two real models (efficientnet_lite0, random weights) are made once.
"""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.clustering.deepcluster import CHECKPOINT_FORMAT
from engine.clustering.kmeans import KMeansTiles
from engine.clustering.modelfile import FORMAT, load_model, save_model
from engine.errors import BadInput
from engine.features.backbones import build_backbone, load_state_dict
from engine.segmentation.modelfile import load_seg_model, save_seg_model
from engine.segmentation.unet import UNet
from tests.engine.helpers import REPO

SAMPLE = REPO / "resources" / "sample" / "kampala_ug_oam_rgb_z19_epsg3857.tif"
TILING = {"tile_px": 64, "stride_px": 64, "tile_size": "64px", "overlap": "0px", "edge": "drop", "min_valid": 0.5,
          "bands": [1, 2, 3], "n_bands": 3, "dtype": "uint8", "stretch": None, "ground_pixel_m": 0.3}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(cluster model path, segmentation model path), both genuine."""
    d = tmp_path_factory.mktemp("models")
    net, spec, _ = build_backbone("efficientnet_lite0", "none", seed=0)
    km = KMeansTiles(n_clusters=2, pca_dims=4, seed=0).fit(np.random.default_rng(0).normal(size=(40, spec.dim))
                                                            .astype(np.float32))
    cluster = d / "c_model.pt"
    save_model(cluster, km, net.state_dict(), backbone="efficientnet_lite0", sobel=False, tiling=TILING,
               method="kmeans")
    seg = d / "seg.pt"
    save_seg_model(seg, UNet("efficientnet_lite0", weights="none"), {"bands": [1, 2, 3], "chip": 64})
    return cluster, seg


class _Evil:
    """Unpickling it would create a file: the proof that code ran."""

    marker = ""

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _evil(tmp_path, how: str) -> Path:
    _Evil.marker = str(tmp_path / "PWNED")
    path = tmp_path / f"evil_{how}.pt"
    if how == "torch":
        torch.save({"format": FORMAT, "x": _Evil()}, path)
    else:
        path.write_bytes(pickle.dumps(_Evil(), protocol=int(how[-1])))
    return path


def _hostile(tmp_path, kind: str, genuine: Path) -> tuple[Path, str]:
    """A hostile file and the words its message must contain."""
    p = tmp_path / f"{kind.replace(' ', '_')}.pt"
    if kind == "missing":
        return p, "no such file"
    if kind == "folder":
        p.mkdir()
        return p, "is a folder"
    if kind == "empty":
        p.write_bytes(b"")
        return p, "is empty"
    if kind == "truncated":
        p.write_bytes(genuine.read_bytes()[: genuine.stat().st_size // 2])
        return p, "damaged or truncated"
    if kind == "random":
        p.write_bytes(np.random.default_rng(0).bytes(4096))
        return p, "not a PyTorch file"
    if kind == "text":
        p.write_text("hello, I am a model\n")
        return p, "not a PyTorch file"
    if kind == "numpy":
        with open(p, "wb") as fh:
            np.save(fh, np.zeros(3))
        return p, "NumPy"
    if kind.startswith("code"):
        return _evil(tmp_path, kind.split()[1]), "could run code"
    if kind == "state dict":
        torch.save({"w": torch.zeros(2)}, p)
        return p, "state dict"
    if kind == "checkpoint":
        torch.save({"format": CHECKPOINT_FORMAT, "version": 1}, p)
        return p, "DeepCluster training checkpoint"
    if kind == "list":
        torch.save([1, 2, 3], p)
        return p, "no 'urbanform-"
    raise AssertionError(kind)


KINDS = ["missing", "folder", "empty", "truncated", "random", "text", "numpy", "code p2", "code p4", "code torch",
         "state dict", "checkpoint", "list"]


def _assert_ours(exc: BadInput, path: Path, words: str, tmp_path: Path) -> None:
    msg = str(exc)
    assert str(path) in msg and words in msg, msg
    assert "weights_only" not in msg and "torch.load" not in msg and "pytorch.org" not in msg, msg
    assert "\n" not in msg, msg
    assert not (tmp_path / "PWNED").exists(), "code in the file ran"


@pytest.mark.parametrize("kind", KINDS)
def test_cluster_model_hostile_files(models, tmp_path, kind):
    path, words = _hostile(tmp_path, kind, models[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(BadInput) as err:
            load_model(path)
    _assert_ours(err.value, path, words, tmp_path)
    assert "`cluster`" in str(err.value)                  # the fix names the file to give


@pytest.mark.parametrize("kind", KINDS)
def test_segmentation_model_hostile_files(models, tmp_path, kind):
    path, words = _hostile(tmp_path, kind, models[1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(BadInput) as err:
            load_seg_model(path)
    _assert_ours(err.value, path, words, tmp_path)
    assert "`train-seg`" in str(err.value)


# (a missing file or a folder as --weights is answered by resolve_weights before loading)
@pytest.mark.parametrize("kind", [k for k in KINDS if k not in ("missing", "folder", "state dict", "checkpoint",
                                                                "list")])
def test_weights_hostile_files(models, tmp_path, kind):
    path, words = _hostile(tmp_path, kind, models[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(BadInput) as err:
            load_state_dict(path)
    _assert_ours(err.value, path, words, tmp_path)
    assert str(err.value).startswith("--weights ")


def test_genuine_models_load(models):
    cluster, seg = models
    m = load_model(cluster)
    assert m.k == 2 and m.backbone == "efficientnet_lite0"
    net, meta = load_seg_model(seg)
    assert meta["encoder"] == "efficientnet_lite0"


def test_each_model_given_to_the_other_tool_is_named(models):
    cluster, seg = models
    with pytest.raises(BadInput, match=r"is a building segmentation model \(written by `train-seg`, for "
                                        r"`segment`\), not an Urban Form Mapper cluster model"):
        load_model(seg)
    with pytest.raises(BadInput, match=r"is a cluster model \(OUT_model.pt written by `cluster`, for `predict`\), "
                                       r"not an Urban Form Mapper segmentation model"):
        load_seg_model(cluster)
    with pytest.raises(BadInput, match=r"^--weights .* is an Urban Form Mapper model file"):
        load_state_dict(cluster)


def _edit(src: Path, dst: Path, change) -> Path:
    obj = torch.load(src, map_location="cpu", weights_only=True)
    change(obj)
    torch.save(obj, dst)
    return dst


def _meta(obj, **kw):
    meta = json.loads(obj["meta"])
    meta.update(kw)
    obj["meta"] = json.dumps(meta)


@pytest.mark.parametrize("case, words", [
    ("meta garbage", "is damaged"),
    ("meta missing", "'meta' record is missing"),
    ("version text", "is damaged"),
    ("newer", "newer version"),
    ("kmeans missing", "is damaged"),
    ("centroids mis-shaped", "clustering arrays"),
    ("nan centroids", "clustering arrays"),
    ("tiling incomplete", "'tile_px' record is missing"),
    ("unknown backbone", "does not know"),
    ("other backbone", "do not fit"),
    ("network mis-shaped", "does not fit backbone"),
    ("network not tensors", "is damaged"),
])
def test_cluster_model_with_damaged_contents(models, tmp_path, case, words):
    def change(obj):
        if case == "meta garbage":
            obj["meta"] = "{not json"
        elif case == "meta missing":
            del obj["meta"]
        elif case == "version text":
            obj["version"] = "one"
        elif case == "newer":
            obj["version"] = 99
        elif case == "kmeans missing":
            obj["kmeans"].pop("cluster_centers_")
        elif case == "centroids mis-shaped":
            obj["kmeans"]["cluster_centers_"] = torch.zeros(2, 3)
        elif case == "nan centroids":
            obj["kmeans"]["cluster_centers_"] = obj["kmeans"]["cluster_centers_"] * float("nan")
        elif case == "tiling incomplete":
            meta = json.loads(obj["meta"])
            del meta["tiling"]["tile_px"]
            obj["meta"] = json.dumps(meta)
        elif case == "unknown backbone":
            _meta(obj, backbone="resnet999")
        elif case == "other backbone":           # features of another size: the arrays do not fit it
            _meta(obj, backbone="resnet18")
        elif case == "network mis-shaped":
            k = next(iter(obj["network"]))
            obj["network"][k] = torch.zeros(1)
        elif case == "network not tensors":
            obj["network"] = {"a": 1}
    path = _edit(models[0], tmp_path / "m.pt", change)
    with pytest.raises(BadInput) as err:
        load_model(path)
    _assert_ours(err.value, path, words, tmp_path)


@pytest.mark.parametrize("case, words", [
    ("meta garbage", "is damaged"),
    ("state missing", "is damaged"),
    ("unknown encoder", "does not know"),
    ("other encoder", "do not fit"),
    ("state mis-shaped", "do not fit"),
])
def test_segmentation_model_with_damaged_contents(models, tmp_path, case, words):
    def change(obj):
        if case == "meta garbage":
            obj["meta"] = "]["
        elif case == "state missing":
            del obj["state"]
        elif case == "unknown encoder":
            _meta(obj, encoder="vgg99")
        elif case == "other encoder":
            _meta(obj, encoder="resnet18")
        elif case == "state mis-shaped":
            k = next(iter(obj["state"]))
            obj["state"][k] = torch.zeros(1)
    path = _edit(models[1], tmp_path / "m.pt", change)
    with pytest.raises(BadInput) as err:
        load_seg_model(path)
    _assert_ours(err.value, path, words, tmp_path)


def test_cli_swapped_and_booby_trapped_models_exit_2_in_one_line(models, tmp_path):
    cluster, seg = models
    evil = _evil(tmp_path, "p4")
    runs = {
        "predict seg": ["predict", seg, SAMPLE, "--out", tmp_path / "a.gpkg"],
        "predict evil": ["predict", evil, SAMPLE, "--out", tmp_path / "b.gpkg"],
        "segment cluster": ["segment", SAMPLE, "--model", cluster, "--out", tmp_path / "c.gpkg"],
        "segment evil": ["segment", SAMPLE, "--model", evil, "--out", tmp_path / "d.gpkg"],
    }
    for name, argv in runs.items():
        proc = subprocess.run([sys.executable, "-m", "engine", *map(str, argv)], cwd=REPO, capture_output=True,
                              text=True, timeout=300, check=False)
        assert proc.returncode == 2, (name, proc.stderr)
        err = "\n".join(line for line in proc.stderr.strip().splitlines() if not line.startswith("["))  # progress
        assert len(err.splitlines()) == 1 and "weights_only" not in err and "Warning" not in err, (name, err)
        assert str(argv[1] if argv[0] == "predict" else argv[3]) in err, (name, err)
    assert not (tmp_path / "PWNED").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil_p4.pt"]
