"""A DeepCluster checkpoint that is damaged, cut, empty, not ours or booby-trapped, given to --resume: a BadInput
naming the checkpoint and the fix (remove it, or start afresh), in our words - never torch's text with its
weights_only advice, never a traceback, and a pickle holding code is never run. Real torch and real files."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.clustering.deepcluster import DeepCluster
from engine.errors import BadInput, Cancelled
from engine.raster.tiling import TiledRaster
from tests.engine.helpers import REPO

TORCH_NOISE = ("weights_only", "WeightsUnpickler", "Traceback", "torch.load", "UnpicklingError")
FIX = r"Remove it, or run without --resume \(with --overwrite\) to start training afresh\."


def fit(raster, checkpoint, resume=False, progress=None):
    with TiledRaster(raster, "32px") as t:
        rows, cols = np.nonzero(np.ones(t.grid.shape, bool))
        return DeepCluster(n_clusters=3, backbone="resnet18", weights="none", epochs=2, crops_per_tile=2,
                           batch_size=16, seed=1).fit(t, rows, cols, progress=progress, checkpoint=checkpoint,
                                                      resume=resume)


@pytest.fixture(scope="module")
def small_city(tmp_path_factory):
    from tests.synthetic import make_city

    return make_city(tmp_path_factory.mktemp("small") / "small.tif", zone_grid=(2, 2), zone_px=128, seed=5)


@pytest.fixture(scope="module")
def checkpoint(small_city, tmp_path_factory):
    """The checkpoint of a run stopped after its first epoch."""
    path = tmp_path_factory.mktemp("ckpt") / "run_checkpoint.pt"

    def stop(stage, done, total, message="", **fields):
        if stage == "epoch" and done == 1 and "loss" in message:
            raise Cancelled("stopped by the test")

    with pytest.raises(Cancelled):
        fit(small_city.raster, path, progress=stop)
    return path


class Trap:
    """Unpickled, it would create a file: proof that code in a pickle ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def damaged(kind: str, good: Path, d: Path) -> "tuple[Path, str]":
    p = d / "run_checkpoint.pt"
    data = good.read_bytes()
    if kind == "truncated":
        p.write_bytes(data[: len(data) // 2])
        return p, "is not a DeepCluster checkpoint: it is damaged or truncated"
    if kind == "cut early":                                      # torch raises OSError (EINVAL) here, not a zip error
        p.write_bytes(data[:5000])
        return p, "is not a DeepCluster checkpoint: it is damaged or truncated"
    if kind == "empty":
        p.write_bytes(b"")
        return p, r"is empty \(0 bytes\)"
    if kind == "text":
        p.write_text("epoch 1 of 2\n")
        return p, "is not a DeepCluster checkpoint: it is not a PyTorch file"
    if kind == "trap":
        p.write_bytes(pickle.dumps({"format": "urbanform-deepcluster-checkpoint", "x": Trap(d / "ran")}))
        return p, "is not a DeepCluster checkpoint: .*which could run code, so it was not opened"
    if kind == "state dict":
        torch.save({"w": torch.zeros(3)}, p)
        return p, "is not a DeepCluster checkpoint\\."
    state = torch.load(good, weights_only=True)
    if kind == "missing parts":
        del state["labels"]
        torch.save(state, p)
        return p, r"is damaged \(part of its state is missing\)"
    if kind == "wrong network":
        state["trunk"] = {k: torch.zeros(1) for k in state["trunk"]}
        torch.save(state, p)
        return p, r"is damaged \(its network does not fit resnet18\)"
    raise AssertionError(kind)


KINDS = ("truncated", "cut early", "empty", "text", "trap", "state dict", "missing parts", "wrong network")


@pytest.mark.parametrize("kind", KINDS)
def test_a_bad_checkpoint_is_bad_input_naming_it_and_the_fix(small_city, checkpoint, tmp_path, kind):
    path, why = damaged(kind, checkpoint, tmp_path)
    with pytest.raises(BadInput, match=rf"^--resume: the checkpoint '[^']*run_checkpoint\.pt' {why}.*{FIX}") as err:
        fit(small_city.raster, path, resume=True)
    assert not any(n in str(err.value) for n in TORCH_NOISE), err.value
    assert not (tmp_path / "ran").exists()                       # the trap was never sprung
    assert path.exists()                                         # the user's file is theirs to remove


def test_a_sound_checkpoint_still_resumes(small_city, checkpoint, tmp_path):
    path = tmp_path / "run_checkpoint.pt"
    path.write_bytes(checkpoint.read_bytes())
    done = fit(small_city.raster, path, resume=True)
    assert [h["epoch"] for h in done.history_] == [0, 1, 2]


def test_cli_resume_from_a_cut_checkpoint_exits_2_in_one_line(small_city, checkpoint, tmp_path):
    out = tmp_path / "run.gpkg"
    cut = tmp_path / "run_checkpoint.pt"
    cut.write_bytes(checkpoint.read_bytes()[:5000])
    proc = subprocess.run([sys.executable, "-m", "engine", "cluster", str(small_city.raster), "--out", str(out),
                           "--method", "deepcluster", "--resume", "--k", "3", "--tile-size", "32px",
                           "--backbone", "resnet18", "--weights", "none", "--epochs", "2"],
                          cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ})
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert "run_checkpoint.pt" in last and "damaged or truncated" in last and "--resume" in last, last
    assert not any(n in proc.stderr for n in TORCH_NOISE), proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run_checkpoint.pt"]
