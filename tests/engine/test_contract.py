"""engine.contract is stdlib only, and the engine's defaults and choice lists are the contract's."""
from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.contract import defaults

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("numpy", "torch", "torchvision", "rasterio", "geopandas", "sklearn", "pandas", "shapely")


def test_importing_the_contract_pulls_in_no_heavy_library():
    code = ("import json, sys; import engine.contract, engine.contract.defaults; "
            f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


def test_contract_defaults_are_choices_with_packaged_weights():
    assert defaults.DEFAULT_BACKBONE in defaults.BACKBONES
    assert defaults.DEFAULT_SEG_ENCODER in defaults.SEG_ENCODERS
    # a default must work offline: its ImageNet weights ship in a package, not in a download
    assert defaults.DEFAULT_BACKBONE in defaults.OFFLINE_BACKBONES
    assert defaults.DEFAULT_SEG_ENCODER in defaults.OFFLINE_BACKBONES
    assert set(defaults.OFFLINE_BACKBONES) <= set(defaults.BACKBONES) | set(defaults.SEG_ENCODERS)
    assert defaults.DEFAULT_WEIGHTS == "imagenet"


def _subparser(name: str):
    from engine.cli import build_parser

    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "tool")   # the subparsers action
    return action.choices[name]


@pytest.mark.parametrize("tool", ["cluster", "sweep", "probe"])
def test_cli_backbone_defaults_are_the_contracts(tool):
    sub = _subparser(tool)
    assert sub.get_default("backbone") == defaults.DEFAULT_BACKBONE
    assert sub.get_default("weights") == defaults.DEFAULT_WEIGHTS
    if tool != "probe":
        assert f"(default {defaults.DEFAULT_BACKBONE})" in " ".join(sub.format_help().split())


def test_cli_train_seg_defaults_are_the_contracts():
    sub = _subparser("train-seg")
    assert sub.get_default("encoder") == defaults.DEFAULT_SEG_ENCODER
    assert sub.get_default("weights") == defaults.DEFAULT_WEIGHTS
    text = " ".join(sub.format_help().split())
    assert f"(default {defaults.DEFAULT_SEG_ENCODER})" in text
    assert ", ".join(defaults.SEG_ENCODERS) in text


def test_predict_has_no_backbone_of_its_own():
    """predict uses the model's backbone, so it has no default to get wrong."""
    assert _subparser("predict").get_default("backbone") is None


def test_engine_choice_lists_and_defaults_are_the_contracts():
    from engine.deepcluster import DeepCluster
    from engine.features import BACKBONES, FeatureExtractor
    from engine.runs import ClusterParams, probe
    from engine.segment.train import TrainParams
    from engine.segment.unet import ENCODERS, UNet
    from engine.sweep import SweepParams

    assert tuple(BACKBONES) == defaults.BACKBONES
    assert tuple(ENCODERS) == defaults.SEG_ENCODERS

    def default(fn, name):
        return inspect.signature(fn).parameters[name].default

    for fn in (ClusterParams, SweepParams, FeatureExtractor, DeepCluster, probe):
        assert default(fn, "backbone") == defaults.DEFAULT_BACKBONE, fn
        assert default(fn, "weights") == defaults.DEFAULT_WEIGHTS, fn
    for fn in (TrainParams, UNet):
        assert default(fn, "encoder") == defaults.DEFAULT_SEG_ENCODER, fn
        assert default(fn, "weights") == defaults.DEFAULT_WEIGHTS, fn
