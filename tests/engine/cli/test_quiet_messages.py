"""Quiet and exact messages through the real CLI: warnings about the data always reach stderr as one
``warning: ...`` line (also with ``--progress none``), no library warning with its source line appears in a
normal run of any tool (even under ``python -W default``), and bad input prints its one error line and no
progress line before it.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.engine.helpers import REPO, SAMPLE, work_events

RASTER = SAMPLE / "kampala_ug_oam_rgb_z19_epsg3857.tif"
BUILDINGS = SAMPLE / "kampala_ug_osm_buildings.geojson"
REPAIRED = "warning: --buildings: 1 invalid geometry repaired with make_valid."
# how Python prints a warning: "path/file.py:12: SomeWarning: message", then the source line
PY_WARNING = re.compile(r"\.py:\d+: \w*(Warning|Error)\b")


def cli(*args, warnings_default=False) -> subprocess.CompletedProcess:
    flags = ["-W", "default"] if warnings_default else []
    return subprocess.run([sys.executable, *flags, "-m", "engine", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=600, check=False)


def lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


# ------------------------------------------------------------------------------ data warnings
@pytest.mark.parametrize("mode", ["none", "log", "json"])
def test_data_warnings_are_one_line_on_stderr_in_every_progress_mode(tmp_path, mode):
    proc = cli("cluster", RASTER, "--out", tmp_path / "c.gpkg", "--k", 3, "--weights", "none", "--no-cache",
               "--buildings", BUILDINGS, "--progress", mode)
    assert proc.returncode == 0, proc.stderr
    err = lines(proc.stderr)
    assert err.count(REPAIRED) == 1, proc.stderr              # once, though cluster and stats both read it
    if mode == "json":
        events = [json.loads(ln) for ln in lines(proc.stdout)]          # stdout: JSON events only
        assert any(e["stage"] == "warning" and e["message"] == REPAIRED for e in events)
        assert all(not ln.startswith("[") for ln in err)
    if mode == "none":
        assert not any(ln.startswith("[") for ln in err)


def test_statistics_warnings_with_progress_none(tmp_path):
    run = tmp_path / "c.gpkg"
    assert cli("cluster", RASTER, "--out", run, "--k", 3, "--weights", "none", "--no-cache",
               "--progress", "none").returncode == 0
    proc = cli("stats", run, "--roads", BUILDINGS, "--progress", "none")        # polygons given as roads
    assert proc.returncode == 0, proc.stderr
    warned = [ln for ln in lines(proc.stderr) if ln.startswith("warning: ")]
    assert "warning: --roads: 206 feature(s) that are not lines ignored (206 Polygon)." in warned
    assert any(ln.startswith("warning: --roads: no roads") for ln in warned)


# ------------------------------------------------------------------------------ no library warnings
@pytest.fixture(scope="module")
def seg_model(tmp_path_factory) -> Path:
    from engine.segmentation.modelfile import save_seg_model
    from engine.segmentation.unet import UNet

    path = tmp_path_factory.mktemp("model") / "seg.pt"
    torch.manual_seed(0)
    save_seg_model(path, UNet("resnet18", weights="none"),
                   {"bands": [1, 2, 3], "n_bands": 3, "stretch": None, "pixel_size_m": 0.3, "chip": 64})
    return path


def test_no_python_warning_in_a_normal_run_of_any_tool(tmp_path, seg_model):
    d = tmp_path
    runs = {
        "cluster": ["cluster", RASTER, "--out", d / "c.gpkg", "--k", 3, "--weights", "none", "--no-cache",
                    "--buildings", BUILDINGS],
        "predict": ["predict", d / "c_model.pt", RASTER, "--out", d / "p.gpkg"],
        "stats": ["stats", d / "p.gpkg", "--buildings", BUILDINGS],
        "export": ["export", d / "c.gpkg", "--format", "shp", "--out", d / "shp"],
        "sweep": ["sweep", RASTER, "--out", d / "s.gpkg", "--k", "2..3", "--tile-size", "64px,128px",
                  "--weights", "none", "--no-cache", "--buildings", BUILDINGS],
        "train-seg": ["train-seg", RASTER, "--buildings", BUILDINGS, "--out", d / "m.pt", "--weights", "none",
                      "--encoder", "resnet18", "--chip", 64, "--epochs", 1, "--chips-per-epoch", 8],
        "segment": ["segment", RASTER, "--model", seg_model, "--out", d / "b.gpkg"],
        "evaluate-seg": ["evaluate-seg", "--pred", d / "b_mask.tif", "--truth", BUILDINGS],
        "probe": ["probe", RASTER],
        "check": ["check"],
    }
    for tool, args in runs.items():
        proc = cli(*args, warnings_default=True)
        assert proc.returncode == 0, (tool, proc.stderr)
        noisy = [ln for ln in proc.stderr.splitlines() if PY_WARNING.search(ln) or "Traceback" in ln]
        assert noisy == [], (tool, proc.stderr)


# ------------------------------------------------------------------------------ bad input: the error alone
@pytest.fixture
def bad(tmp_path) -> dict:
    cut = tmp_path / "cut.tif"
    cut.write_bytes(RASTER.read_bytes()[:3000])                     # a truncated GeoTIFF
    table = tmp_path / "table.csv"
    table.write_text("id,height\n1,12.5\n")
    return {"cut": cut, "table": table}


CASES = {
    "cluster, truncated raster": lambda b, o: ["cluster", b["cut"], "--out", o / "c.gpkg", "--weights", "none"],
    "cluster, table as footprints": lambda b, o: ["cluster", RASTER, "--out", o / "c.gpkg", "--weights", "none",
                                                  "--buildings", b["table"]],
    "cluster, table as roads": lambda b, o: ["cluster", RASTER, "--out", o / "c.gpkg", "--weights", "none",
                                             "--roads", b["table"]],
    "sweep, truncated raster": lambda b, o: ["sweep", b["cut"], "--out", o / "s.gpkg", "--weights", "none"],
    "train-seg, truncated raster": lambda b, o: ["train-seg", b["cut"], "--buildings", BUILDINGS,
                                                 "--out", o / "m.pt", "--weights", "none"],
    "segment, raster as model": lambda b, o: ["segment", RASTER, "--model", RASTER, "--out", o / "b.gpkg"],
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("mode", ["log", "json"])
def test_bad_input_prints_only_its_error_line(tmp_path, bad, case, mode):
    out = tmp_path / "out"
    out.mkdir()
    proc = cli(*CASES[case](bad, out), "--progress", mode)
    assert proc.returncode == 2, proc.stderr
    assert len(lines(proc.stderr)) == 1 and proc.stderr.startswith("error: "), proc.stderr
    assert work_events(proc.stdout) == [], proc.stdout                  # json: only the error event
    assert list(out.iterdir()) == []
