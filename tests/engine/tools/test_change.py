"""The ``change`` tool with known truth: a synthetic city where known vegetation blocks became dense buildings."""
from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
from affine import Affine
from rasterio.warp import Resampling, calculate_default_transform, reproject

from tests.engine.helpers import run_cli, work_events, write_raster
from tests.synthetic import INFORMAL, VEGETATION, make_city

TILE = 64


@pytest.fixture(scope="module")
def dates(tmp_path_factory):
    """(before city, after city, model): two of the vegetation blocks turned into informal housing, nothing else
    changed (same seed: every other block and the noise are drawn alike); a k-means model (K=4) of the first date."""
    folder = tmp_path_factory.mktemp("change")
    before = make_city(folder / "before.tif", zone_grid=(4, 4), zone_px=256, seed=3)
    zones = before.zones.copy()
    for r, c in np.argwhere(zones == VEGETATION)[:2]:
        zones[r, c] = INFORMAL
    after = make_city(folder / "after.tif", zones=zones, zone_px=256, seed=3)
    run_cli("cluster", before.raster, "--out", folder / "model.gpkg", "--k", 4, "--no-quicklook", "--cache-dir",
            folder / "cache", check=0)
    return before, after, folder / "model_model.pt"


@pytest.fixture(scope="module")
def change_run(dates):
    before, after, model = dates
    out = model.with_name("change.gpkg")
    proc = run_cli("change", model, before.raster, after.raster, "--out", out, "--progress", "json", check=0)
    stages = [json.loads(line)["stage"] for line in proc.stdout.splitlines()]
    assert stages.index("features") < stages.index("cluster") < stages.index("plots") < stages.index("write")
    return out


def test_changed_tiles_are_the_blocks_that_changed(dates, change_run):
    before, after, _ = dates
    tiles = gpd.read_file(change_run, layer="tiles")
    truth = (before.zone_of_tiles(TILE) != after.zone_of_tiles(TILE))[tiles.row, tiles.col]
    found = tiles.changed.to_numpy() == 1
    precision = (truth & found).sum() / max(found.sum(), 1)
    recall = (truth & found).sum() / truth.sum()
    print(f"change on the synthetic city: precision {precision:.3f}, recall {recall:.3f} "
          f"({truth.sum()} changed tiles of {len(tiles)})")
    assert truth.sum() == 2 * (256 // TILE) ** 2 and len(tiles) == 256
    assert precision >= 0.9 and recall >= 0.9
    # the continuous score ranks the changed tiles above the unchanged ones
    score = tiles.chg_score.to_numpy()
    assert np.median(score[truth]) > np.quantile(score[~truth], 0.95)
    assert (tiles.clust_a != tiles.clust_b).astype(int).tolist() == tiles.changed.tolist()


def test_outputs_the_transitions_plots_and_a_qgis_style(change_run):
    stem = change_run.with_suffix("")
    tiles = gpd.read_file(change_run, layer="tiles")
    assert all(len(c) <= 10 and c == c.lower() and c.isascii() for c in tiles.columns)
    matrix = pd.read_csv(f"{stem}_transitions.csv", index_col=0)
    assert matrix.to_numpy().sum() == len(tiles) and matrix.shape == (4, 4)
    assert np.trace(matrix.to_numpy()) == (tiles.changed == 0).sum()
    for name in ("_transitions.png", "_alluvial.png"):
        assert open(f"{stem}{name}", "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    style = ET.parse(f"{stem}_change.qml").getroot()
    assert style.find("renderer-v2").get("attr") == "chg_score"
    manifest = json.loads(open(f"{stem}_manifest.json").read())
    assert manifest["change"]["changed"] == int(tiles.changed.sum())
    assert sum(t["tiles"] for t in manifest["change"]["transitions"]) == len(tiles)


def test_the_second_date_in_another_crs_is_warped_onto_the_grid(dates, tmp_path):
    before, _, model = dates
    moved = tmp_path / "mercator.tif"
    with rasterio.open(before.raster) as src:
        transform, w, h = calculate_default_transform(src.crs, "EPSG:3857", src.width, src.height, *src.bounds)
        with rasterio.open(moved, "w", **(src.profile | {"crs": "EPSG:3857", "transform": transform, "width": w,
                                                         "height": h, "tiled": False})) as dst:
            for b in range(1, 4):
                reproject(rasterio.band(src, b), rasterio.band(dst, b), resampling=Resampling.bilinear)
    out = tmp_path / "c.gpkg"
    run_cli("change", model, before.raster, moved, "--out", out, check=0)
    tiles = gpd.read_file(out, layer="tiles")
    manifest = json.loads((tmp_path / "c_manifest.json").read_text())
    assert manifest["inputs"]["raster_after"]["warped_onto_grid"] is True
    assert len(tiles) >= 0.9 * 256 and tiles.changed.mean() <= 0.1       # the same place: few changes


def test_bad_second_dates_are_refused_before_any_work(dates, tmp_path):
    before, _, model = dates
    far = write_raster(tmp_path / "far.tif", np.zeros((3, 128, 128), np.uint8),           # 10 km east of the city
                       transform=Affine(0.3, 0, 510000.0, 0, -0.3, 700000.0))
    proc = run_cli("change", model, before.raster, far, "--out", tmp_path / "c.gpkg", "--progress", "json")
    assert proc.returncode == 2 and "RASTER_AFTER" in proc.stderr and "does not overlap" in proc.stderr
    assert work_events(proc.stdout) == []
    grey = write_raster(tmp_path / "grey.tif", np.zeros((1, 128, 128), np.uint8))
    proc = run_cli("change", model, before.raster, grey, "--out", tmp_path / "c.gpkg")
    assert proc.returncode == 2 and "1 band(s)" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["far.tif", "grey.tif"]


def test_the_report_of_a_change_run_shows_transitions_and_the_most_changed_pairs(dates, change_run):
    before, after, _ = dates
    html = change_run.with_name("change_report.html")
    run_cli("report", change_run, "--out", html, "--examples", 4, check=0)
    text = html.read_text(encoding="utf-8")
    assert 'id="transitions"' in text and "http" not in text
    pairs = [int(t) for t in re.findall(r"<figcaption>tile (\d+): ", text)]
    tiles = gpd.read_file(change_run, layer="tiles").set_index("tile_id")
    truth = before.zone_of_tiles(TILE) != after.zone_of_tiles(TILE)
    assert len(pairs) == 4 and all(truth[tiles.row[t], tiles.col[t]] for t in pairs)   # the most changed: true ones
    assert text.count('class="pair"') == 4
