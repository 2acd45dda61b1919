"""The stats tool on a real clustering run of the synthetic city: columns, clusters layer, eta-squared, plots,
manifest, bad input."""
from __future__ import annotations

import json
import shutil

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import shapely
from affine import Affine

from engine.errors import BadInput
from engine.stats.measures import eta_squared
from engine.stats.profile import profile_columns
from engine.tools.stats import STAT_ORDER, StatsParams, run_stats
from tests.engine.helpers import write_raster


@pytest.fixture(scope="module")
def made_run(tmp_path_factory):
    """A k-means run (K=3, 64 px tiles) of a 2x2-zone synthetic city, with its footprints and roads."""
    from engine.tools.cluster import ClusterParams, run_cluster
    from tests.synthetic import make_city

    d = tmp_path_factory.mktemp("statsrun")
    city = make_city(d / "city.tif", zone_grid=(2, 2), zone_px=256, seed=3)
    city.footprints.to_file(d / "buildings.gpkg")
    city.roads.to_file(d / "roads.gpkg")
    city.roads.drop(columns="highway").to_file(d / "roads_noclass.gpkg")
    run_cluster(ClusterParams(raster=str(d / "city.tif"), out=str(d / "run.gpkg"), k=3,
                              backbone="efficientnet_lite0", quicklook=False, use_cache=False))
    # 1 person per 10 m x 10 m cell over the whole city (UTM 30N like the run): 10,000 per km2
    write_raster(d / "pop.tif", np.ones((1, 20, 20), dtype=np.float32), transform=Affine(10, 0, 499990, 0, -10,
                                                                                         700010))
    return d


@pytest.fixture
def run(made_run, tmp_path):
    """A fresh copy of the run (GeoPackage + manifest) per test; inputs stay in the module folder."""
    for name in ("run.gpkg", "run_manifest.json"):
        shutil.copy(made_run / name, tmp_path / name)
    return tmp_path / "run.gpkg"


def _png(path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_stats_columns_clusters_layer_eta_plots_manifest(run, made_run):
    d = made_run
    progress = []
    m = run_stats(StatsParams(run=str(run), buildings=str(d / "buildings.gpkg"), roads=str(d / "roads.gpkg"),
                              population=str(d / "pop.tif"), nir_band=3, red_band=1),
                  lambda *a, **k: progress.append(a))
    tiles = gpd.read_file(run, layer="tiles")
    stats = list(STAT_ORDER)
    assert list(tiles.columns) == ["tile_id", "row", "col", "cluster", "clust_dist", "pc1", "pc2", "valid_frac",
                                   *stats, "geometry"]
    # every footprint's centroid lies in exactly one tile: counts sum to the footprints inside the tiles
    fp = gpd.read_file(d / "buildings.gpkg")
    inside = shapely.contains(shapely.union_all(tiles.geometry.values), fp.geometry.centroid.values)
    assert tiles["bldg_count"].sum() == inside.sum() > 0
    assert tiles["pop_dens"].to_numpy() == pytest.approx(10000, rel=1e-6)
    assert tiles["bldg_orien"].dropna().between(0, 45).all()
    assert np.isfinite(tiles["ndvi"]).all()

    clusters = gpd.read_file(run, layer="clusters")
    assert clusters["tiles"].sum() == len(tiles)
    assert clusters.crs == tiles.crs
    assert clusters.area.sum() == pytest.approx(tiles.area.sum())
    assert all(len(c) <= 10 for c in clusters.columns)
    cols = profile_columns(stats)
    g = tiles.groupby("cluster")
    for s in stats:
        c = cols[s]
        want = {"mean": g[s].mean(), "std": g[s].std(), "median": g[s].median()}
        for measure, series in want.items():
            np.testing.assert_allclose(clusters[c[measure]].to_numpy(), series.reindex(clusters["cluster"]),
                                       rtol=1e-9, atol=1e-12, equal_nan=True, err_msg=f"{s} {measure}")
        assert clusters[c["quantile"]].dropna().between(0, 1).all()

    eta = pd.read_csv(run.with_name("run_stats.csv"))
    assert list(eta["stat"]) == stats
    for s, v in zip(eta["stat"], eta["eta2"]):
        assert v == pytest.approx(eta_squared(tiles["cluster"], tiles[s]), abs=1e-6), s
    assert _png(run.with_name("run_profile.png")) and _png(run.with_name("run_boxes.png"))

    on_disk = json.loads(run.with_name("run_manifest.json").read_text())
    assert on_disk["tool"] == "cluster" and on_disk["statistics"]["tool"] == "stats"
    rec = m["statistics"]
    assert [r["stat"] for r in rec["eta_squared"]] == stats
    assert rec["eta_squared"] == on_disk["statistics"]["eta_squared"]
    assert isinstance(rec["warnings"], list)
    assert rec["clusters_layer"] == "clusters" and set(rec["inputs"]) == {"buildings", "roads", "population",
                                                                           "ndvi_raster"}
    assert {p[0] for p in progress} >= {"open", "buildings", "roads", "ndvi", "population", "write"}

    # a second run needs --overwrite; with it the files are replaced
    with pytest.raises(BadInput, match="--overwrite"):
        run_stats(StatsParams(run=str(run), buildings=str(d / "buildings.gpkg")))
    run_stats(StatsParams(run=str(run), buildings=str(d / "buildings.gpkg"), overwrite=True))
    assert len(gpd.read_file(run, layer="clusters")) == len(clusters)

    # the result exports to Shapefile with every field name unchanged
    from engine.tools.export import run_export

    out = run_export(run, "shp", run.parent / "shp")
    back = gpd.read_file(out["clusters"])
    assert list(back.columns) == list(clusters.columns)


def test_road_layer_without_class_attribute_omits_major_dist(run, made_run):
    m = run_stats(StatsParams(run=str(run), roads=str(made_run / "roads_noclass.gpkg")))
    tiles = gpd.read_file(run, layer="tiles")
    assert "road_len" in tiles.columns and "major_dist" not in tiles.columns
    warnings = m["statistics"]["warnings"]
    assert any("major_dist" in w and "--road-field" in w for w in warnings)
    on_disk = json.loads(run.with_name("run_manifest.json").read_text())
    assert on_disk["statistics"]["warnings"] == warnings


def test_layer_not_overlapping_the_tiles_warns_naming_it(run, made_run, tmp_path):
    far = gpd.read_file(made_run / "buildings.gpkg")
    far["geometry"] = far.translate(50000, 0)
    far.to_file(tmp_path / "far.gpkg")
    m = run_stats(StatsParams(run=str(run), buildings=str(tmp_path / "far.gpkg")))
    assert any(w.startswith("--buildings") and "overlap" in w for w in m["statistics"]["warnings"])
    assert gpd.read_file(run, layer="tiles")["bldg_count"].sum() == 0


@pytest.mark.filterwarnings("ignore:.crs. was not provided")
def test_bad_input_before_any_work(run, made_run, tmp_path):
    before = run.read_bytes()
    nocrs = gpd.read_file(made_run / "buildings.gpkg")
    pyogrio.write_dataframe(nocrs.set_crs(None, allow_override=True), tmp_path / "nocrs.gpkg")
    with pytest.raises(BadInput, match="no CRS"):
        run_stats(StatsParams(run=str(run), buildings=str(tmp_path / "nocrs.gpkg")))
    with pytest.raises(BadInput, match="Give at least one input") as nothing:
        run_stats(StatsParams(run=str(run)))
    assert (nothing.value.param, nothing.value.code) == ("buildings", "required")
    with pytest.raises(BadInput, match="does not exist") as missing:
        run_stats(StatsParams(run=str(run), roads=str(tmp_path / "nope.gpkg")))
    assert (missing.value.param, missing.value.code) == ("roads", "not_found")
    with pytest.raises(BadInput, match="--nir-band 9"):
        run_stats(StatsParams(run=str(run), nir_band=9))
    with pytest.raises(BadInput, match="no layer 'tiles_64px'"):
        run_stats(StatsParams(run=str(run), buildings=str(made_run / "buildings.gpkg"), layer="tiles_64px"))
    assert run.read_bytes() == before
    assert sorted(p.name for p in run.parent.iterdir()) == ["nocrs.gpkg", "run.gpkg", "run_manifest.json"]


def test_sweep_layer_and_label(run, made_run):
    """A sweep-style layer (tiles_64px with k2, k3) gets its own clusters layer, files and manifest record."""
    tiles = gpd.read_file(run, layer="tiles")
    sweep = tiles[["tile_id", "geometry"]].assign(k2=tiles["cluster"] % 2, k3=tiles["cluster"])
    pyogrio.write_dataframe(sweep, run, layer="tiles_64px")
    m = run_stats(StatsParams(run=str(run), buildings=str(made_run / "buildings.gpkg"), layer="tiles_64px",
                              label="k2"))
    clusters = gpd.read_file(run, layer="clusters_64px_k2")
    assert list(clusters["cluster"]) == [0, 1] and clusters["tiles"].sum() == len(tiles)
    assert run.with_name("run_64px_k2_stats.csv").exists() and _png(run.with_name("run_64px_k2_profile.png"))
    assert m["statistics_64px_k2"]["layer"] == "tiles_64px"
    assert "bldg_count" not in gpd.read_file(run, layer="tiles").columns     # the other layer is untouched


def test_profile_by_hand_and_field_names_fit_a_shapefile():
    from engine.stats.profile import cluster_profile, eta_table, stat_codes

    df = pd.DataFrame({"cluster": [0, 0, 1, 1, 1], "bldg_orien": [1.0, 2.0, 3.0, 4.0, np.nan]})
    prof = cluster_profile(df, ["bldg_orien"])
    assert list(prof.columns) == ["cluster", "tiles", "borien_avg", "borien_sd", "borien_med", "borien_q"]
    assert prof["tiles"].tolist() == [2, 3]
    assert prof["borien_avg"].tolist() == [1.5, 3.5]
    assert prof["borien_sd"].tolist() == pytest.approx([np.sqrt(0.5), np.sqrt(0.5)])
    assert prof["borien_q"].tolist() == [(0.25 + 0.5) / 2, (0.75 + 1.0) / 2]    # percentile ranks of 4 values
    eta = eta_table(df, ["bldg_orien"])
    assert eta.iloc[0]["n"] == 4 and eta.iloc[0]["eta2"] == pytest.approx(4.0 / 5.0)   # 2*(1^2)*2 / 5
    codes = stat_codes(list(STAT_ORDER) + ["population_x", "population_y"])
    assert codes["population_x"] == "popula" and codes["population_y"] == "popul1"
    assert all(len(c + suf) <= 10 for c in codes.values() for suf in ("_avg", "_sd", "_med", "_q"))


def test_profile_plot_title_fits_in_the_figure(tmp_path):
    """A long run name in the title: the title lies inside the figure and the saved PNG's top rows hold it."""
    from matplotlib.image import imread

    from engine.stats.profile import cluster_profile, plot_profile, profile_figure

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"cluster": np.repeat(np.arange(8), 10), "bldg_count": rng.poisson(10, 80),
                       "bldg_cov": rng.random(80), "bldg_mean": rng.random(80) * 200, "road_len": rng.random(80)})
    prof = cluster_profile(df, ["bldg_count", "bldg_cov", "bldg_mean", "road_len"])
    title = "Cluster profiles, kampala_ug_oam_rgb_z19_epsg3857_clusters_with_a_long_name.gpkg: tiles, cluster"
    fig = profile_figure(prof, title)
    renderer = fig.canvas.get_renderer()
    fig.canvas.draw()
    box = fig._suptitle.get_window_extent(renderer)
    width, height = fig.bbox.width, fig.bbox.height
    assert fig._suptitle.get_text().replace("\n", " ") == title
    assert 0 <= box.x0 < box.x1 <= width and 0 <= box.y0 < box.y1 <= height, (box, width, height)
    plot_profile(tmp_path / "p.png", prof, title)
    img = imread(str(tmp_path / "p.png"))[..., :3]
    top = img[: int(img.shape[0] * 0.12)]
    dark = top.min(axis=2) < 0.5                        # black title text on white
    assert dark.any() and not img[:2].min(axis=2).__lt__(0.5).any()    # title in the top rows, not cut at row 0
    cols = np.where(dark.any(axis=0))[0]
    assert cols.min() > 0 and cols.max() < img.shape[1] - 1           # nor at the sides
