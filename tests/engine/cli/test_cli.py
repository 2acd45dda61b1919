"""The ``cluster`` tool end to end through the real CLI (subprocesses, real files)."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
from sklearn.metrics import adjusted_rand_score

from engine.style import cluster_rgb
from tests.engine.helpers import REPO, run_cli, shared
from tests.truth import building_coverage, eta_squared, random_eta_squared

RESULTS = REPO / ".test-results"


def outputs_of(gpkg: Path) -> list[Path]:
    stem = str(gpkg.with_suffix(""))
    return [gpkg] + [Path(stem + s) for s in ("_clusters.tif", "_manifest.json", "_quicklook.png", "_model.pt")]


# ------------------------------------------------------------------ happy paths
def test_kampala_end_to_end(kampala_z19, tmp_path):
    out = tmp_path / "kampala.gpkg"
    run_cli("cluster", kampala_z19, "--out", out, "--k", 5, "--backbone", "efficientnet_lite0",
            "--tile-size", "64px", check=0)
    assert all(p.exists() for p in outputs_of(out))
    assert pyogrio.list_layers(out)[:, 0].tolist() == ["tiles"]
    tiles = gpd.read_file(out, layer="tiles")
    assert list(tiles.columns) == ["tile_id", "row", "col", "cluster", "clust_dist", "pc1", "pc2", "valid_frac",
                                   "geometry"]
    assert len(tiles) == 96 and tiles.crs.to_epsg() == 3857
    assert sorted(tiles.cluster.unique()) == [0, 1, 2, 3, 4]
    assert (tiles.clust_dist >= 0).all() and (tiles.valid_frac >= 0.5).all() and tiles.valid_frac.max() == 1
    with rasterio.open(kampala_z19) as src:
        assert tiles.total_bounds == pytest.approx(src.bounds, abs=1e-6)   # 768x512 px = 12x8 tiles exactly
    with rasterio.open(out.with_name("kampala_clusters.tif")) as tif:
        grid = tif.read(1)
        assert tif.shape == (8, 12) and tif.crs.to_epsg() == 3857 and tif.nodata == 255
        assert tif.colormap(1)[0][:3] == cluster_rgb(0)           # the palette every output shares
    assert np.array_equal(grid[tiles.row, tiles.col], tiles.cluster)
    manifest = json.loads(out.with_name("kampala_manifest.json").read_text())
    for key in ("parameters", "versions", "seed", "timings_s", "inputs", "features", "clustering"):
        assert key in manifest
    assert len(manifest["inputs"]["sha256"]) == 64 and manifest["features"]["device"] == "cpu"
    assert manifest["clustering"]["whiten"] is False and sum(manifest["clustering"]["cluster_sizes"]) == 96
    # GeoPackage 1.3, which QGIS 3.22's GDAL opens without warnings
    import sqlite3

    with sqlite3.connect(out) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 10300


def test_clusters_explain_building_coverage_on_real_kampala(tmp_path):
    """Pretrained features + k-means separate built-up from open tiles far better than chance."""
    raster = shared("kampala_ug_oam_rgb_z20_epsg3857.tif")
    out = tmp_path / "k.gpkg"
    run_cli("cluster", raster, "--out", out, "--k", 6, "--tile-size", "64px", "--backbone", "efficientnet_lite0",
            "--no-quicklook", check=0)
    tiles = gpd.read_file(out, layer="tiles")
    coverage = building_coverage(tiles, shared("kampala_ug_osm_buildings.geojson"))
    assert coverage.max() > 0.5 and (coverage == 0).sum() > 10   # the truth has spread
    eta = eta_squared(tiles.cluster.to_numpy(), coverage)
    random = random_eta_squared(tiles.cluster.to_numpy(), coverage)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "kampala_eta2.json").write_text(json.dumps({"eta2": eta, "random_median": random,
                                                           "tiles": len(tiles)}))
    print(f"\nKampala 0.15 m, 64 px tiles, K=6: eta2 of building coverage {eta:.3f} (random {random:.3f})")
    assert eta > 0.25 and eta > 10 * random


def test_synthetic_city_zones_are_recovered(city, tmp_path):
    out = tmp_path / "city.gpkg"
    run_cli("cluster", city.raster, "--out", out, "--k", 4, "--tile-size", "64px",
            "--backbone", "efficientnet_lite0", "--no-quicklook", check=0)
    tiles = gpd.read_file(out, layer="tiles")
    truth = city.zone_of_tiles(64)[tiles.row, tiles.col]
    ari = adjusted_rand_score(truth, tiles.cluster)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "synthetic_ari.json").write_text(json.dumps({"ari": ari, "tiles": len(tiles), "k": 4}))
    print(f"\nsynthetic city, 4 zones, K=4, 64 px tiles: ARI {ari:.3f}")
    assert ari > 0.6


def test_metre_tiles_on_web_mercator_are_written_in_the_raster_crs(kampala_z19, tmp_path):
    out = tmp_path / "m.gpkg"
    run_cli("cluster", kampala_z19, "--out", out, "--k", 3, "--tile-size", "20m", "--overlap", "5m",
            "--weights", "none", "--no-quicklook", check=0)
    tiles = gpd.read_file(out, layer="tiles")
    manifest = json.loads((tmp_path / "m_manifest.json").read_text())
    assert tiles.crs.to_epsg() == 3857 and manifest["tiling"]["warped"]
    assert manifest["tiling"]["working_crs"] == "EPSG:32636"
    assert manifest["tiling"]["tile_px"] == 67 and manifest["tiling"]["stride_px"] == 50   # 20 m / 0.299 m
    side = np.sqrt(tiles.to_crs(32636).area)
    assert side.to_numpy() == pytest.approx(20.0, rel=0.01)


def test_same_seed_same_clusters_and_feature_cache(city, tmp_path):
    def run(name, k, cache):
        out = tmp_path / f"{name}.gpkg"
        run_cli("cluster", city.raster, "--out", out, "--k", k, "--weights", "none", "--seed", 4,
                "--cache-dir", tmp_path / cache, "--no-quicklook", check=0)
        manifest = json.loads((tmp_path / f"{name}_manifest.json").read_text())
        return gpd.read_file(out, layer="tiles").cluster.to_numpy(), manifest["features"]["cache_hit"]

    a, hit_a = run("a", 5, "cache1")
    b, hit_b = run("b", 5, "cache2")      # features recomputed from scratch
    c, hit_c = run("c", 3, "cache1")      # another K reuses the features
    assert np.array_equal(a, b) and not hit_a and not hit_b
    assert hit_c and len(c) == len(a)


def test_progress_json_lines_only_on_stdout(kampala_z19, tmp_path):
    proc = run_cli("cluster", kampala_z19, "--out", tmp_path / "p.gpkg", "--k", 3, "--weights", "none",
                   "--progress", "json", check=0)
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert events and all(set(e) == {"stage", "done", "total", "message"} for e in events)
    stages = [e["stage"] for e in events]
    assert stages[0] == "open" and stages[-1] == "write" and "features" in stages
    assert events[-1]["done"] == events[-1]["total"]


def test_help_documents_every_option():
    text = run_cli("cluster", "--help", check=0).stdout
    for option in ("--out", "--k", "--tile-size", "--overlap", "--edge", "--min-valid", "--bands", "--backbone",
                   "--weights", "--device", "--precision", "--batch-size", "--seed", "--pca-dims", "--whiten",
                   "--cache-dir", "--no-cache", "--overwrite", "--progress"):
        assert option in text


def test_cancel_leaves_no_file(city, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    args = ["cluster", city.raster, "--out", out_dir / "c.gpkg", "--k", 3, "--weights", "none",
            "--tile-size", "32px", "--batch-size", 4, "--progress", "json", "--cache-dir", tmp_path / "cache"]
    proc = subprocess.Popen([sys.executable, "-m", "engine", *map(str, args)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        event = json.loads(line)
        if event["stage"] == "features" and event["done"] > 0:
            proc.send_signal(signal.SIGTERM)
            break
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "cancelled" in err
    assert list(out_dir.iterdir()) == []
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()], "half-written features were kept"


# ------------------------------------------------------------------ bad input: exit 2, clear message, no file
@pytest.fixture
def nodata_raster(make_raster):
    data = np.zeros((3, 128, 128), dtype=np.uint8)
    data[:, :20, :20] = 100
    return make_raster("mostly_nodata.tif", data, nodata=0)


@pytest.fixture
def bad_weights(tmp_path):
    path = tmp_path / "w" / "notes.pt"
    path.parent.mkdir()
    path.write_text("not weights")
    return path


BAD_INPUTS = {
    "missing raster": (lambda f: [f["tmp"] / "nope.tif"], "does not exist"),
    "no crs": (lambda f: [f["nocrs"]], "no coordinate reference system"),
    "tile larger than raster": (lambda f: [f["rgb"], "--tile-size", "512px"], "larger than the raster"),
    "k above valid tiles": (lambda f: [f["rgb"], "--k", "50"], "larger than the number of valid tiles"),
    "k below 2": (lambda f: [f["rgb"], "--k", "1"], "error: --k: 1 is out of range: give a value between 2 and 254"),
    "k above 254": (lambda f: [f["rgb"], "--k", "300"],
                    "error: --k: 300 is out of range: give a value between 2 and 254"),
    "k not a number": (lambda f: [f["rgb"], "--k", "abc"], "error: --k: 'abc' is not a whole number."),
    "all tiles below min-valid": (lambda f: [f["nodata"], "--tile-size", "64px"], "--min-valid"),
    "unknown band": (lambda f: [f["rgb"], "--bands", "1,2,7"], "band 7 does not exist"),
    "unknown backbone": (lambda f: [f["rgb"], "--backbone", "alexnet"], "error: --backbone: 'alexnet' is not one of"),
    "weights file missing": (lambda f: [f["rgb"], "--weights", f["tmp"] / "none.pt"], "does not exist"),
    "weights not a state dict": (lambda f: [f["rgb"], "--weights", f["badw"]], "state dict"),
    "output folder missing": (lambda f: [f["rgb"], "--out", f["tmp"] / "no" / "x.gpkg"], "does not exist"),
    "output folder not writable": (lambda f: [f["rgb"], "--out", "/proc/x.gpkg"], "not writable"),
    "tile size nonsense": (lambda f: [f["rgb"], "--tile-size", "big"], "error: --tile-size: 'big' is not a length"),
    "overlap not below the tile size": (lambda f: [f["rgb"], "--tile-size", "32px", "--overlap", "32px"],
                                        "error: --overlap: The overlap must be smaller than the tile size."),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_exits_2_with_a_clear_message(case, tmp_path, make_raster, rgb_noise, nodata_raster, bad_weights):
    files = {"tmp": tmp_path, "rgb": make_raster("rgb.tif", rgb_noise(256, 256)),
             "nocrs": make_raster("nocrs.tif", rgb_noise(64, 64), crs=None), "nodata": nodata_raster,
             "badw": bad_weights}
    args, expected = BAD_INPUTS[case]
    args = args(files)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    if "--out" not in args:
        args += ["--out", out_dir / "x.gpkg"]
    if "--weights" not in args:
        args += ["--weights", "none"]
    proc = run_cli("cluster", *args)
    assert proc.returncode == 2, proc.stderr
    assert expected in proc.stderr and "Traceback" not in proc.stderr
    assert "usage:" not in proc.stderr                        # one line, not the whole usage
    assert list(out_dir.iterdir()) == []


def test_existing_output_needs_overwrite(kampala_z19, tmp_path):
    out = tmp_path / "o.gpkg"
    out.write_bytes(b"precious")
    proc = run_cli("cluster", kampala_z19, "--out", out, "--k", 3, "--weights", "none")
    assert proc.returncode == 2 and "already exists; choose another --out, or pass --overwrite" in proc.stderr
    assert out.read_bytes() == b"precious" and sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["o.gpkg"]
    run_cli("cluster", kampala_z19, "--out", out, "--k", 3, "--weights", "none", "--overwrite", check=0)
    assert len(gpd.read_file(out, layer="tiles")) == 96


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_gpu_exits_2(kampala_z19, tmp_path):
    proc = run_cli("cluster", kampala_z19, "--out", tmp_path / "c.gpkg", "--weights", "none", "--device", "cuda")
    assert proc.returncode == 2 and "no CUDA device is available" in proc.stderr and "Traceback" not in proc.stderr
    assert list(tmp_path.glob("c*")) == []


def test_check_reports_python_torch_devices_and_weights():
    info = json.loads(run_cli("check", "--backbone", "efficientnet_lite0", check=0).stdout)
    assert info["ok"] and info["devices"][-1] == "cpu" and Path(info["weights"]).is_file()
    assert info["python"] == sys.executable and info["torch"].startswith("2.")
