"""The ``similar`` tool: tiles like a query tile, on the synthetic city (known zones) and on real Kampala imagery."""
from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pytest
from scipy.stats import spearmanr
from shapely.geometry import Point, box

from engine.analysis.similar import precision_at
from engine.tools.similar import SimilarParams, run
from tests.engine.helpers import run_cli, work_events
from tests.synthetic import ZONES
from tests.truth import building_coverage

TILE = 64


def test_the_top_tiles_of_a_zones_tile_are_that_zone(city, tmp_path):
    """Query one tile inside a block of each zone: precision at N of the tiles of the same zone (64 per zone)."""
    zone = city.zone_of_tiles(TILE)
    n_cols = zone.shape[1]
    found = {}
    for z, name in enumerate(ZONES):
        r, c = np.argwhere(city.zones == z)[0]
        tile = (r * 4 + 1) * n_cols + c * 4 + 1                  # one tile inside the block, away from its edges
        out = tmp_path / f"{name}.gpkg"
        manifest = run(SimilarParams(raster=str(city.raster), out=str(out), query_tiles=str(tile), top=20))
        assert manifest["similar"]["query_tiles"] == [tile] and len(manifest["similar"]["top"]) == 20
        tiles = gpd.read_file(out, layer="tiles")
        same = zone[tiles.row, tiles.col] == z
        found[name] = {n: precision_at(tiles["rank"], same, n) for n in (20, 40, 63)}
    print("similar on the synthetic city, precision at N:", json.dumps(found))
    assert all(p[20] >= 0.9 for p in found.values()), found          # measured: 1.0 for every zone
    assert np.mean([p[63] for p in found.values()]) >= 0.85         # measured: 0.97


def test_tiles_like_a_built_up_tile_are_more_built_up(kampala_z19, kampala_buildings, tmp_path):
    """Real imagery: the query is a point (in WGS 84, not the raster's CRS) on the most built-up tile; the tiles
    most similar to it have more building coverage than the average tile."""
    first = tmp_path / "first.gpkg"
    run_cli("similar", kampala_z19, "--query-tiles", 0, "--out", first, check=0)
    tiles = gpd.read_file(first, layer="tiles")
    coverage = building_coverage(tiles, kampala_buildings)
    built = int(np.argmax(coverage))
    point = gpd.GeoDataFrame(geometry=[tiles.geometry[built].centroid], crs=tiles.crs).to_crs("EPSG:4326")
    point.to_file(tmp_path / "query.gpkg")
    out = tmp_path / "built.gpkg"
    run_cli("similar", kampala_z19, "--query", tmp_path / "query.gpkg", "--top", 10, "--out", out, check=0)
    manifest = json.loads((tmp_path / "built_manifest.json").read_text())
    assert manifest["similar"]["query_tiles"] == [int(tiles.tile_id[built])]
    result = gpd.read_file(out, layer="tiles").set_index("tile_id").loc[tiles.tile_id]
    top10 = coverage[(result["rank"] >= 1).to_numpy() & (result["rank"] <= 10).to_numpy()]
    print(f"similar on Kampala: building coverage of the top 10 {top10.mean():.3f} (query tile "
          f"{coverage[built]:.3f}), of all tiles {coverage.mean():.3f}")
    assert len(top10) == 10 and top10.mean() > coverage.mean()


@pytest.mark.parametrize("query", ["ids", "both", "far", "words"])
def test_a_bad_query_is_refused_before_any_work(query, kampala_z19, tmp_path):
    places = tmp_path / "far.gpkg"
    gpd.GeoDataFrame(geometry=[box(0, 0, 1, 1), Point(5, 5)], crs="EPSG:4326").to_file(places)
    args = {"ids": ["--query-tiles", "5,9999"], "both": ["--query-tiles", "5", "--query", places],
            "far": ["--query", places], "words": ["--query-tiles", "the market"]}[query]
    proc = run_cli("similar", kampala_z19, *args, "--out", tmp_path / "s.gpkg", "--progress", "json")
    flag = {"ids": "--query-tiles", "both": "--query", "far": "--query", "words": "--query-tiles"}[query]
    assert proc.returncode == 2 and flag in proc.stderr, proc.stderr
    assert not (tmp_path / "s.gpkg").exists()
    assert [e["stage"] for e in work_events(proc.stdout)] in ([], ["open", "scan"], ["open", "scan", "scan"])



@pytest.mark.parametrize("where, query", [("kampala", "3,10"), ("kampala", "5,50,90"), ("city", "17"),
                                          ("city", "17,200")])
def test_the_live_features_give_about_the_runs_similarity(where, query, kampala_z19, city, tmp_path):
    """OUT_live.npz (the dock's live updates): the cosines on the tiles' first principal axes against the run's
    similarity on the full features, for the same query. Kampala's 96 tiles fit in the kept axes (exact); the
    city's 256 do not (approximate)."""
    import zipfile

    from engine.contract.tools import LIVE_DIMS

    raster = kampala_z19 if where == "kampala" else city.raster
    out = tmp_path / "like.gpkg"
    manifest = run(SimilarParams(raster=str(raster), out=str(out), query_tiles=query))
    assert manifest["outputs"]["live"] == str(tmp_path / "like_live.npz")
    with zipfile.ZipFile(tmp_path / "like_live.npz") as z:
        assert sorted(z.namelist()) == ["features.npy", "tile_id.npy"]
        assert all(i.compress_type == zipfile.ZIP_STORED for i in z.infolist())     # plain .npy inside
    live = np.load(tmp_path / "like_live.npz")
    tiles = gpd.read_file(out, layer="tiles")
    assert (live["tile_id"] == tiles.tile_id.to_numpy()).all() and live["tile_id"].dtype == np.dtype("<i8")
    z = live["features"]
    assert z.dtype == np.dtype("<f4") and z.shape == (len(tiles), min(LIVE_DIMS, 1280))
    q = z[tiles["query"].to_numpy() == 1].mean(axis=0)
    approx = (z @ q) / np.maximum(np.linalg.norm(z, axis=1), 1e-12) / np.linalg.norm(q)
    exact = tiles["similarity"].to_numpy()
    # the top 20 by the live cosines, against the run's: the city's zones are near copies of one tile, so the
    # run's similarities around rank 20 differ in the fourth decimal (0.7411 at rank 20, 0.7405 at rank 24 on
    # one machine) and a tile counts as one of the run's top 20 when within TIE of the 20th
    TIE = 0.005
    top = np.argsort(-approx)[:20]
    overlap = float((exact[top] >= np.sort(exact)[-20] - TIE).mean())
    diff = np.abs(approx - exact).max()
    rho = spearmanr(approx, exact).statistic
    print(f"live similarity, {where} ({len(tiles)} tiles, {LIVE_DIMS} axes, query {query}): max |difference| "
          f"{diff:.4f}, correlation {np.corrcoef(approx, exact)[0, 1]:.4f}, rank correlation {rho:.4f}, top-20 "
          f"overlap {overlap:.2f} (ties within {TIE})")
    if len(tiles) <= LIVE_DIMS:
        assert diff < 1e-4
    assert diff < 0.1 and overlap >= 0.9 and rho > 0.99
