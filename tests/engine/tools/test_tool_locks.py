"""One writer per output, through the real CLI: every tool that writes locks its outputs before it looks
whether they exist, so two runs on the same outputs never both report success.

Real subprocesses (``python -m engine ...``) on the real sample raster and the synthetic city; the lock a
test holds itself is a real ``engine.io.OutputLock`` of this (live) process.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine.io import OutputLock
from engine.tools.cluster import ClusterParams
from engine.tools.cluster import run as run_cluster
from tests.engine.helpers import REPO, SAMPLE, work_events

RASTER = SAMPLE / "kampala_ug_oam_rgb_z19_epsg3857.tif"
BUILDINGS = SAMPLE / "kampala_ug_osm_buildings.geojson"
LOCKED = "another run (pid {pid} on "


def cli(*args, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, check=False)


def start(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "engine", *map(str, args)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def tree(folder: Path) -> dict:
    """Every file under ``folder`` (hidden ones too) with its size and modification time."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(folder: Path) -> list[str]:
    """Lock files and partial files: a run must leave none."""
    return sorted(p.name for p in folder.rglob(".*") if p.is_file())


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A cluster run (its model, GeoPackage) and a tiny U-Net model file, made once."""
    from engine.segmentation.modelfile import save_seg_model
    from engine.segmentation.unet import UNet

    d = tmp_path_factory.mktemp("inputs")
    run_cluster(ClusterParams(str(RASTER), str(d / "run.gpkg"), k=3, weights="none", use_cache=False))
    torch.manual_seed(0)
    save_seg_model(d / "seg.pt", UNet("resnet18", weights="none"),
                   {"bands": [1, 2, 3], "n_bands": 3, "stretch": None, "pixel_size_m": 0.3, "chip": 64})
    assert leftovers(d) == []                   # a finished run leaves no lock behind
    return d


def commands(inputs: Path, out: Path) -> dict:
    """Per tool: (its command line writing into ``out``, the output to hold the lock on)."""
    return {
        "cluster": (["cluster", RASTER, "--out", out / "c.gpkg", "--k", 3, "--weights", "none", "--no-cache"],
                    out / "c_clusters.tif"),
        "predict": (["predict", inputs / "run_model.pt", RASTER, "--out", out / "p.gpkg"], out / "p.gpkg"),
        "sweep": (["sweep", RASTER, "--out", out / "s.gpkg", "--k", "2..3", "--tile-size", "64px,128px",
                   "--weights", "none", "--no-cache"], out / "s_lineage_128px.png"),
        "stats": (["stats", out / "run.gpkg", "--buildings", BUILDINGS], out / "run_stats.csv"),
        "export": (["export", out / "run.gpkg", "--format", "csv", "--out", out / "exp"],
                   out / "exp" / "run_tiles.csv"),
        "train-seg": (["train-seg", RASTER, "--buildings", BUILDINGS, "--out", out / "m.pt", "--weights", "none",
                       "--encoder", "resnet18", "--chip", 64, "--epochs", 1], out / "m_checkpoint.pt"),
        "segment": (["segment", RASTER, "--model", inputs / "seg.pt", "--out", out / "b.gpkg"], out / "b_mask.tif"),
    }


TOOLS = ("cluster", "predict", "sweep", "stats", "export", "train-seg", "segment")


@pytest.mark.parametrize("tool", TOOLS)
def test_a_tool_stops_while_another_run_holds_one_of_its_outputs(inputs, tmp_path, tool):
    import shutil

    shutil.copy(inputs / "run.gpkg", tmp_path / "run.gpkg")
    shutil.copy(inputs / "run_manifest.json", tmp_path / "run_manifest.json")
    args, held = commands(inputs, tmp_path)[tool]
    held.parent.mkdir(exist_ok=True)
    with OutputLock([held]):
        before = tree(tmp_path)
        proc = cli(*args, *([] if tool == "export" else ["--progress", "json"]))    # (export has no --progress)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip().splitlines() == [proc.stderr.strip()], proc.stderr       # one line
        assert proc.stderr.startswith("error: " + LOCKED.format(pid=os.getpid())), proc.stderr
        assert str(held) in proc.stderr and "wait for it or choose another output" in proc.stderr
        assert work_events(proc.stdout) == []                                   # no work began (only the error event)
        assert tree(tmp_path) == before                                                   # nothing written
    assert leftovers(tmp_path) == []


def test_a_second_cluster_run_on_the_same_out_stops_while_the_first_writes(city, tmp_path):
    out = tmp_path / "c.gpkg"
    args = ["cluster", city.raster, "--out", out, "--k", 3, "--weights", "none", "--tile-size", "32px",
            "--batch-size", 4, "--no-cache"]
    first = start(*args, "--progress", "json")
    try:
        for line in first.stdout:                       # the first run is at work, its outputs locked
            if json.loads(line)["stage"] == "features":
                break
        second = cli(*args)
        assert second.returncode == 2, second.stderr
        assert f"another run (pid {first.pid} on " in second.stderr and str(out) in second.stderr
        assert not out.exists()
    finally:
        _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    manifest = json.loads(out.with_name("c_manifest.json").read_text())
    assert manifest["tool"] == "cluster"
    # once the first has committed, the same command is refused because the outputs exist
    third = cli(*args)
    assert third.returncode == 2 and "already exists" in third.stderr, third.stderr
    assert leftovers(tmp_path) == []


def test_runs_started_together_never_both_succeed(tmp_path):
    out = tmp_path / "c.gpkg"
    args = ["cluster", RASTER, "--out", out, "--k", 3, "--weights", "none", "--no-cache", "--progress", "none"]
    procs = [start(*args) for _ in range(3)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2, 2], results
    for code, err in results:
        if code == 2:
            assert "another run (pid " in err or "already exists" in err, err
    assert json.loads(out.with_name("c_manifest.json").read_text())["tool"] == "cluster"
    assert leftovers(tmp_path) == []
