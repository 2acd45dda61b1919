"""Rasters checked before work: a truncated or damaged GeoTIFF fails when it is opened (probe, cluster,
statistics rasters), naming the raster and the fix, not in the middle of a run; a file that is no raster
and a raster without a CRS are BadInput too. Real GeoTIFFs cut with real bytes, no mocks."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.shutil import copy as raster_copy
from shapely.geometry import box

from engine.errors import BadInput
from engine.raster.tiling import TiledRaster, inspect_raster
from engine.stats.raster import ndvi, pop_dens
from tests.engine.helpers import REPO, write_raster

X0, Y0 = 500000.0, 700000.0
LAYOUTS = {
    "strips": {},
    "tiles deflate": dict(tiled=True, blockxsize=256, blockysize=256, compress="deflate"),
    "bands apart": dict(interleave="band", compress="lzw"),
}


def sound(path, layout="tiles deflate", shape=(3, 700, 900)):
    data = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    return write_raster(path, data, **LAYOUTS[layout])


def cut(path: Path, out: Path, share: float = 0.5) -> Path:
    out.write_bytes(path.read_bytes()[: int(path.stat().st_size * share)])
    return out


def one_line(proc) -> str:
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr, proc.stderr
    return lines[-1]


def cli(*args):
    return subprocess.run([sys.executable, "-m", "engine", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=600, env={**os.environ})


# ------------------------------------------------------------------------------------- truncated rasters


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_a_geotiff_cut_to_half_its_bytes_is_damaged_on_opening(tmp_path, layout):
    half = cut(sound(tmp_path / "whole.tif", layout), tmp_path / "half.tif")
    pattern = r"^raster '[^']*half\.tif' is damaged or truncated \(.*\); re-export it or copy it again\.$"
    with pytest.raises(BadInput, match=pattern):
        inspect_raster(str(half))
    with pytest.raises(BadInput, match=pattern):
        TiledRaster(half, "64px")


def test_a_cog_cut_anywhere_is_damaged_and_a_whole_one_is_not(tmp_path):
    cog = tmp_path / "cog.tif"
    raster_copy(str(sound(tmp_path / "src.tif")), str(cog), driver="COG")
    inspect_raster(str(cog))
    for share in (0.99, 0.5, 0.1, 0.001):
        with pytest.raises(BadInput, match=r"is damaged or truncated \(.*\); re-export it"):
            inspect_raster(str(cut(cog, tmp_path / f"cut{share}.tif", share)))


def test_the_sample_raster_cut_reports_the_last_pixel_and_the_missing_bytes(kampala_z19, tmp_path):
    half = cut(kampala_z19, tmp_path / "kampala.tif")
    with rasterio.open(kampala_z19) as src:
        last = f"row {src.height - 1}, column {src.width - 1}"
    with pytest.raises(BadInput, match=rf"\(the pixel at {last} cannot be read: got 0 of \d+ bytes\)"):
        inspect_raster(str(half))


def test_sound_rasters_of_any_size_pass(tmp_path):
    inspect_raster(str(write_raster(tmp_path / "one.tif", np.zeros((1, 1, 1), np.uint8))))
    inspect_raster(str(write_raster(tmp_path / "row.tif", np.zeros((1, 1, 5000), np.uint8))))
    nodata = write_raster(tmp_path / "nodata.tif", np.zeros((1, 300, 300), np.float32), nodata=0)
    inspect_raster(str(nodata))
    nan = write_raster(tmp_path / "nan.tif", np.full((1, 300, 300), np.nan, np.float32))
    inspect_raster(str(nan))                           # all invalid is for the tools to judge, not damage


def test_probe_and_cluster_stop_at_the_check_with_exit_2_and_write_nothing(kampala_z19, tmp_path):
    half = cut(kampala_z19, tmp_path / "half.tif")
    proc = cli("probe", half)
    assert proc.returncode == 2 and "half.tif' is damaged or truncated" in one_line(proc), proc.stderr
    out = tmp_path / "out"
    out.mkdir()
    proc = cli("cluster", half, "--out", out / "x.gpkg", "--k", 3, "--weights", "none")
    assert proc.returncode == 2, proc.stderr
    assert "half.tif' is damaged or truncated" in one_line(proc) and "[scan]" not in proc.stderr + proc.stdout
    assert list(out.iterdir()) == []


# --------------------------------------------------------------------------- not rasters, or no CRS


def not_a_raster(kind: str, d: Path) -> "tuple[Path, str]":
    if kind == "csv":
        p = d / "table.csv"
        p.write_text("x,y\n1,2\n")
        return p, "cannot be read: it is a vector layer or a table, not a raster"
    if kind == "vector":
        p = d / "shapes.gpkg"
        gpd.GeoDataFrame(geometry=[box(0, 0, 1, 1)], crs="EPSG:4326").to_file(p)
        return p, "cannot be read: it is a vector layer or a table, not a raster"
    if kind == "text":
        p = d / "notes.tif"
        p.write_text("not a raster")
        return p, "cannot be read: it is not a raster format GDAL knows"
    if kind == "empty":
        p = d / "empty.tif"
        p.write_bytes(b"")
        return p, r"is empty \(0 bytes\)"
    p = d / "folder.tif"
    p.mkdir()
    return p, "is a folder, not a raster"


@pytest.mark.parametrize("kind", ["csv", "vector", "text", "empty", "folder"])
def test_a_file_that_is_no_raster_is_named_and_the_fix_given(tmp_path, kind):
    path, why = not_a_raster(kind, tmp_path)
    with pytest.raises(BadInput, match=rf"^raster '[^']*{path.name}' {why}.*(GDAL raster|re-export)"):
        TiledRaster(path, "64px")
    proc = cli("probe", path)
    assert proc.returncode == 2 and f"{path.name}' " in one_line(proc), proc.stderr


def test_a_raster_without_crs_keeps_its_message(tmp_path):
    path = write_raster(tmp_path / "nocrs.tif", np.zeros((3, 64, 64), np.uint8), crs=None)
    with pytest.raises(BadInput, match=r"^raster .*nocrs\.tif.* has no coordinate reference system\. Assign one"):
        inspect_raster(str(path))
    proc = cli("probe", path)
    assert proc.returncode == 2 and "has no coordinate reference system" in one_line(proc)


# ------------------------------------------------------------------------------- statistics rasters


def tiles():
    return gpd.GeoSeries([box(X0, Y0 - 100, X0 + 100, Y0)], crs="EPSG:32630")


def test_population_and_ndvi_rasters_cut_or_of_the_wrong_kind_name_their_flag(tmp_path):
    whole = write_raster(tmp_path / "pop.tif", np.ones((2, 600, 600), np.float32),
                         transform=Affine(1, 0, X0, 0, -1, Y0), tiled=True, blockxsize=128, blockysize=128)
    assert pop_dens(whole, tiles()).notna().all()
    half = cut(whole, tmp_path / "half.tif")
    with pytest.raises(BadInput, match=r"^--population '[^']*half\.tif' is damaged or truncated"):
        pop_dens(half, tiles())
    with pytest.raises(BadInput, match=r"^--ndvi-raster '[^']*half\.tif' is damaged or truncated"):
        ndvi(half, tiles(), 1, 2)
    csv, why = not_a_raster("csv", tmp_path)
    with pytest.raises(BadInput, match=rf"^--population '[^']*table\.csv' {why}"):
        pop_dens(csv, tiles())
