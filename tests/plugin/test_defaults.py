"""The plugin's model choices and defaults are engine.contract's: requests, Processing algorithms, the dock."""
from __future__ import annotations

import pytest

from .helpers import clean_settings, engine_here, make_dock

__all__ = ["clean_settings", "engine_here", "make_dock"]       # fixtures used here


@pytest.fixture(scope="module")
def defaults(urbanform):
    from urbanform.engine.contract import defaults

    return defaults


def test_requests_default_to_the_contract(urbanform, defaults):
    from urbanform.plugin import requests as request

    assert request.BACKBONES == defaults.BACKBONES and request.SEG_ENCODERS == defaults.SEG_ENCODERS
    for req in (request.ClusterRequest("r.tif", "o.gpkg"), request.SweepRequest("r.tif", "o.gpkg")):
        assert (req.backbone, req.weights) == (defaults.DEFAULT_BACKBONE, defaults.DEFAULT_WEIGHTS)
        assert "--backbone" not in req.argv() and "--weights" not in req.argv()     # the engine's default: the same
        other = next(b for b in defaults.BACKBONES if b != defaults.DEFAULT_BACKBONE)
        req.backbone = other
        assert ["--backbone", other] == req.argv()[req.argv().index("--backbone"):][:2]
    seg = request.TrainSegRequest("r.tif", "b.gpkg", "m.pt")
    assert (seg.encoder, seg.weights) == (defaults.DEFAULT_SEG_ENCODER, defaults.DEFAULT_WEIGHTS)


def _enum_default(alg, name: str) -> str:
    param = alg.parameterDefinition(name)
    return param.options()[int(param.defaultValue())]


@pytest.mark.parametrize("module, cls", [("cluster", "ClusterAlgorithm"), ("deepcluster", "DeepClusterAlgorithm"),
                                         ("sweep", "SweepAlgorithm")])
def test_processing_backbone_choices_and_defaults_are_the_contracts(urbanform, defaults, module, cls):
    import importlib

    alg = getattr(importlib.import_module(f"urbanform.plugin.processing.{module}"), cls)()
    alg.initAlgorithm()
    assert tuple(alg.parameterDefinition("BACKBONE").options()) == defaults.BACKBONES
    assert _enum_default(alg, "BACKBONE") == defaults.DEFAULT_BACKBONE
    assert _enum_default(alg, "WEIGHTS").lower().startswith(defaults.DEFAULT_WEIGHTS)
    if module != "sweep":     # the sweep's help refers to the cluster algorithm's
        assert f"{', '.join(defaults.BACKBONES)} (default {defaults.DEFAULT_BACKBONE})" in alg.shortHelpString()


def test_processing_encoder_choices_and_default_are_the_contracts(urbanform, defaults):
    from urbanform.plugin.processing.segmentation import TrainSegmentationAlgorithm

    alg = TrainSegmentationAlgorithm()
    alg.initAlgorithm()
    assert tuple(alg.parameterDefinition("ENCODER").options()) == defaults.SEG_ENCODERS
    assert _enum_default(alg, "ENCODER") == defaults.DEFAULT_SEG_ENCODER
    assert _enum_default(alg, "WEIGHTS").lower().startswith(defaults.DEFAULT_WEIGHTS)
    assert f"{', '.join(defaults.SEG_ENCODERS)} (default {defaults.DEFAULT_SEG_ENCODER})" in alg.shortHelpString()


def test_dock_defaults_are_the_contracts(make_dock, defaults):
    """A fresh profile (no saved settings): the dock's backbone and the Buildings panel's encoder."""
    dock = make_dock()
    assert [dock.backboneCombo.itemData(i) for i in range(dock.backboneCombo.count())] == list(defaults.BACKBONES)
    assert dock.backboneCombo.currentData() == defaults.DEFAULT_BACKBONE
    panel = dock.buildings
    encoders = [panel.encoderCombo.itemData(i) for i in range(panel.encoderCombo.count())]
    assert encoders == list(defaults.SEG_ENCODERS)
    assert panel.encoderCombo.currentData() == defaults.DEFAULT_SEG_ENCODER
    assert panel.segWeightsCombo.currentData() == defaults.DEFAULT_WEIGHTS
    train = panel.train_request()
    assert (train.encoder, train.weights) == (defaults.DEFAULT_SEG_ENCODER, defaults.DEFAULT_WEIGHTS)
    # the chip size: the engine's choice (the largest that fits the labelled area), unless one is set
    assert panel.chipSpin.value() == 0 and panel.chipSpin.text().startswith("auto")
    assert train.chip is None and "--chip" not in train.argv()
    panel.chipSpin.setValue(384)
    assert panel.train_request().chip == 384 and "384" in panel.train_request().argv()
    assert panel.chipSpin.singleStep() == 32 and panel.chipSpin.maximum() >= max(defaults.SEG_AUTO_CHIPS)
