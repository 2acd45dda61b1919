"""Vector inputs are opened and checked right after the declared checks: a CSV, a raster or a damaged file
given as footprints, roads or an area stops cluster, sweep, stats and predict with exit 2 before the tile
scan (no progress event, not even the sweep's first tile size) and writes nothing.
"""
from __future__ import annotations

import hashlib
import shutil
import subprocess

import pytest

from engine.tools.cluster import ClusterParams
from engine.tools.cluster import run as run_cluster
from tests.engine.helpers import SAMPLE, run_cli, work_events

RASTER = SAMPLE / "kampala_ug_oam_rgb_z19_epsg3857.tif"


def cli(*args) -> subprocess.CompletedProcess:
    return run_cli(*args, "--progress", "json")


def digest(folder) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("run")
    run_cluster(ClusterParams(str(RASTER), str(d / "run.gpkg"), k=3, weights="none", use_cache=False))
    return d


@pytest.fixture
def bad_files(tmp_path):
    table = tmp_path / "bad" / "table.csv"
    table.parent.mkdir()
    table.write_text("id,height\n1,12.5\n2,8.0\n")
    cut = tmp_path / "bad" / "cut.gpkg"
    cut.write_bytes(b"SQLite format 3\x00" + b"\x00" * 200)               # a GeoPackage cut after its header
    return {"table": (table, "has no geometry"), "cut": (cut, "damaged or truncated"),
            "raster": (RASTER, "is a raster, not a vector layer")}


def check(proc, flag, why, folder, before):
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"error: {flag} ") and why in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "AttributeError" not in proc.stderr
    assert work_events(proc.stdout) == [], "work began (progress events) before the check"
    assert digest(folder) == before


@pytest.mark.parametrize("kind", ["table", "cut", "raster"])
@pytest.mark.parametrize("flag", ["--buildings", "--roads"])
def test_sweep_stops_before_its_first_tile_size(tmp_path, bad_files, kind, flag):
    path, why = bad_files[kind]
    out = tmp_path / "out"
    out.mkdir()
    proc = cli("sweep", RASTER, "--out", out / "s.gpkg", "--k", "2..3", "--tile-size", "64px,128px",
               "--weights", "none", flag, path)
    check(proc, flag, why, out, {})


@pytest.mark.parametrize("kind", ["table", "cut"])
@pytest.mark.parametrize("flag", ["--buildings", "--roads"])
def test_stats_leaves_the_run_untouched(tmp_path, run_dir, bad_files, kind, flag):
    path, why = bad_files[kind]
    for name in ("run.gpkg", "run_manifest.json"):
        shutil.copy(run_dir / name, tmp_path / name)
    before = digest(tmp_path)
    check(cli("stats", tmp_path / "run.gpkg", flag, path), flag, why, tmp_path, before)


def test_cluster_with_a_table_as_roads(tmp_path, bad_files):
    out = tmp_path / "out"
    out.mkdir()
    path, why = bad_files["table"]
    check(cli("cluster", RASTER, "--out", out / "c.gpkg", "--weights", "none", "--roads", path), "--roads", why,
          out, {})


@pytest.mark.parametrize("kind", ["table", "raster"])
def test_predict_with_a_bad_area(tmp_path, run_dir, bad_files, kind):
    out = tmp_path / "out"
    out.mkdir()
    path, why = bad_files[kind]
    check(cli("predict", run_dir / "run_model.pt", RASTER, "--out", out / "p.gpkg", "--area", path), "--area",
          why, out, {})


def test_the_error_names_the_parameter_for_the_plugin(tmp_path, bad_files):
    from engine.errors import BadInput
    from engine.tools.sweep import SweepParams
    from engine.tools.sweep import run as run_sweep

    with pytest.raises(BadInput) as err:
        run_sweep(SweepParams(str(RASTER), str(tmp_path / "s.gpkg"), roads=str(bad_files["table"][0])))
    assert (err.value.param, err.value.code) == ("roads", "bad_format")
    assert not list(tmp_path.glob("s*")) and not list(tmp_path.glob(".s*"))
