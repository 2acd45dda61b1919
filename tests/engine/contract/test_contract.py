"""engine.contract is stdlib only, and the engine's defaults and choice lists are the contract's."""
from __future__ import annotations

import inspect
import json
import subprocess
import sys

import pytest

from engine.contract import defaults
from tests.engine.helpers import REPO

HEAVY = ("numpy", "torch", "torchvision", "rasterio", "geopandas", "sklearn", "pandas", "shapely")


def test_importing_the_contract_pulls_in_no_heavy_library():
    code = ("import json, sys; import engine.contract, engine.contract.defaults, engine.contract.limits, "
            "engine.contract.outputs, engine.contract.tools, engine.contract.params; "
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
    from engine.clustering.deepcluster import DeepCluster
    from engine.features.backbones import BACKBONES
    from engine.features.extract import FeatureExtractor
    from engine.segmentation.unet import ENCODERS, UNet
    from engine.tools.cluster import ClusterParams
    from engine.tools.probe import ProbeParams
    from engine.tools.sweep import SweepParams
    from engine.tools.train_seg import TrainParams

    assert tuple(BACKBONES) == defaults.BACKBONES
    assert tuple(ENCODERS) == defaults.SEG_ENCODERS

    def default(fn, name):
        return inspect.signature(fn).parameters[name].default

    for fn in (ClusterParams, SweepParams, FeatureExtractor, DeepCluster, ProbeParams):
        assert default(fn, "backbone") == defaults.DEFAULT_BACKBONE, fn
        assert default(fn, "weights") == defaults.DEFAULT_WEIGHTS, fn
    for fn in (ClusterParams, SweepParams, DeepCluster):
        assert default(fn, "augment") == defaults.DEFAULT_AUGMENT, fn
    assert defaults.DEFAULT_AUGMENT in defaults.AUGMENTS
    for fn in (TrainParams, UNet):
        assert default(fn, "encoder") == defaults.DEFAULT_SEG_ENCODER, fn
        assert default(fn, "weights") == defaults.DEFAULT_WEIGHTS, fn


# ----------------------------------------------------------------------------- limits and output names


def test_max_k_is_written_only_in_the_contract():
    """MAX_K (the uint8 cluster GeoTIFF's 255 nodata) is declared once: no engine or plugin source repeats 254."""
    import re

    from engine.contract import limits

    assert limits.MAX_K == limits.CLUSTER_NODATA - 1 and limits.MIN_K == 2
    contract = REPO / "engine" / "contract"
    found = [f"{path.relative_to(REPO)}:{n}"
             for folder in ("engine", "plugin") for path in sorted((REPO / folder).rglob("*.py"))
             if contract not in path.parents
             for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if re.search(r"(?<![0-9])254(?![0-9])", line)]
    assert found == []


@pytest.mark.parametrize("text, ks", [("2..12", list(range(2, 13))), ("2,4,6", [2, 4, 6]),
                                      ("2..6,8,12", [2, 3, 4, 5, 6, 8, 12]), (" 4 , 2,2..3 ", [2, 3, 4]),
                                      ("2..254", list(range(2, 255)))])
def test_contract_k_parser_and_sweep_agree(text, ks):
    from engine.contract.limits import parse_k_values
    from engine.tools.sweep import parse_k_list

    assert parse_k_values(text) == parse_k_list(text) == ks


@pytest.mark.parametrize("text, message", [("1..4", "between 2 and 254"), ("2..255", "between 2 and 254"),
                                           ("0", "between 2 and 254"), ("5..3", "runs backwards"),
                                           ("a,b", "not a K value"), ("", "Give the K values"),
                                           ("2,,3", "not a K value"), ("2.5", "not a K value")])
def test_contract_k_parser_refuses_with_the_sweeps_message(text, message):
    """The plugin shows the contract's ValueError; the engine's BadInput carries the same text after '--k'."""
    from engine.contract.limits import parse_k_values
    from engine.errors import BadInput
    from engine.tools.sweep import parse_k_list

    with pytest.raises(ValueError, match=message) as refused:
        parse_k_values(text)
    with pytest.raises(BadInput) as bad:
        parse_k_list(text)
    assert str(bad.value) == f"--k {text!r}: {refused.value}"


def test_min_tile_px_is_the_contracts():
    from affine import Affine

    from engine.contract.limits import MIN_TILE_PX
    from engine.errors import BadInput
    from engine.raster.tiling import TileGrid

    assert TileGrid(256, 256, MIN_TILE_PX, MIN_TILE_PX, Affine.identity()).size == MIN_TILE_PX
    with pytest.raises(BadInput, match=f"at least {MIN_TILE_PX} px"):
        TileGrid(256, 256, MIN_TILE_PX - 1, MIN_TILE_PX - 1, Affine.identity())


def test_output_names():
    from engine.contract import outputs
    from engine.raster.tiling import Length
    from engine.tools.cluster import RunOutputs
    from engine.tools.sweep import SweepOutputs, layer_name

    assert [str(Length.parse(t)) for t in ("64px", "2.5m", "20m", "20.0m")] == \
        [outputs.tile_label(v, u) for v, u in ((64, "px"), (2.5, "m"), (20, "m"), (20.0, "m"))] == \
        ["64px", "2.5m", "20m", "20m"]
    assert layer_name("2.5m") == outputs.sweep_layer_name("2.5m") == "tiles_2_5m"
    assert outputs.label_of_tag(outputs.size_tag("2.5m")) == "2.5m"
    names = outputs.cluster_outputs("/d/run.gpkg")
    run = RunOutputs.for_out("/d/run.gpkg")
    assert (run.gpkg, run.tif, run.manifest, run.quicklook, run.model) == \
        (names["gpkg"], names["tif"], names["manifest"], names["quicklook"], names["model"])
    assert [p.name for p in names.values()] == ["run.gpkg", "run_clusters.tif", "run_manifest.json",
                                                "run_quicklook.png", "run_model.pt"]
    sweep = SweepOutputs.for_out("/d/sw.gpkg", ["64px", "2.5m"])
    assert sorted(sweep.paths()) == sorted(outputs.sweep_outputs("/d/sw.gpkg", ["64px", "2.5m"]).values())
    assert sweep.lineage["2.5m"].name == "sw_lineage_2_5m.png" and sweep.pca["2.5m"].name == "sw_pca_2_5m.png"
