"""Cancelling an analysis (similar, classify, change, report) mid-way: exit 130 and no file written."""
from __future__ import annotations

import json
import signal
import subprocess
import sys

import geopandas as gpd
import pytest
from shapely.geometry import Point

from tests.engine.helpers import REPO, SAMPLE, run_cli

RASTER = SAMPLE / "kampala_ug_oam_rgb_z19_epsg3857.tif"


def cancelled_at(stage: str, *args) -> tuple[int, str, list[dict]]:
    """Run ``python -m engine ARGS --progress json`` and send SIGTERM on its first ``stage`` event."""
    proc = subprocess.Popen([sys.executable, "-m", "engine", *map(str, args), "--progress", "json"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    events, sent = [], False
    for line in proc.stdout:
        events.append(json.loads(line))
        if not sent and events[-1].get("stage") == stage:
            proc.send_signal(signal.SIGTERM)
            sent = True
    _, err = proc.communicate(timeout=600)
    assert sent, events
    return proc.returncode, err, events


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    out = tmp_path_factory.mktemp("model") / "m.gpkg"
    run_cli("cluster", RASTER, "--out", out, "--k", 3, "--no-quicklook", "--cache-dir", out.parent / "cache", check=0)
    return out


@pytest.mark.parametrize("tool", ["similar", "classify", "change", "report"])
def test_a_cancelled_analysis_writes_nothing(tool, model, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    labels = tmp_path / "labels.gpkg"
    tiles = gpd.read_file(model, layer="tiles")
    gpd.GeoDataFrame({"kind": ["a"] * 3 + ["b"] * 3}, geometry=[Point(g.centroid) for g in tiles.geometry[:6]],
                     crs=tiles.crs).to_file(labels)
    args, stage = {
        "similar": (["similar", RASTER, "--query-tiles", 3, "--no-cache", "--batch-size", 4,
                     "--out", out / "s.gpkg"], "features"),
        "classify": (["classify", RASTER, "--labels", labels, "--field", "kind", "--no-cache", "--batch-size", 4,
                      "--out", out / "c.gpkg"], "features"),
        "change": (["change", model.with_name("m_model.pt"), RASTER, RASTER, "--batch-size", 4,
                    "--out", out / "d.gpkg"], "features"),
        "report": (["report", model, "--out", out / "r.html"], "gallery"),
    }[tool]
    code, err, _ = cancelled_at(stage, *args)
    assert code == 130, err
    assert sorted(p.name for p in out.iterdir()) == [], err
