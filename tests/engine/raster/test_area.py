"""Area limits (--extent, --area) and the probe tool."""
from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pytest
from shapely.geometry import box

from engine.errors import BadInput
from engine.raster.area import parse_extent, tiles_inside
from engine.raster.tiling import TiledRaster
from tests.engine.helpers import run_cli


def test_extent_keeps_tiles_whose_centre_is_inside(kampala_z19):
    with TiledRaster(kampala_z19, "64px") as tiled:
        left, bottom, right, top = tiled.dataset.bounds
        width = right - left
        inside = tiles_inside(tiled, f"{left},{bottom},{left + width / 2},{top}")   # the western half
    assert inside.shape == (8, 12) and inside[:, :6].all() and not inside[:, 6:].any()


def test_extent_on_a_warped_raster_is_in_the_raster_crs(kampala_z19):
    with TiledRaster(kampala_z19, "20m") as tiled:
        assert tiled.warped
        left, bottom, right, top = tiled._src.bounds                                 # EPSG:3857
        inside = tiles_inside(tiled, f"{left},{(bottom + top) / 2},{right},{top}")   # the northern half
    rows = np.nonzero(inside.any(axis=1))[0]
    assert inside.any() and rows.max() < inside.shape[0] - 1 and inside[0].any()


def test_area_polygons_in_another_crs(kampala_z19, tmp_path):
    with TiledRaster(kampala_z19, "64px") as tiled:
        left, bottom, right, top = tiled.dataset.bounds
        square = box(left, bottom, left + (right - left) / 3, top)
        path = tmp_path / "area.gpkg"
        gpd.GeoDataFrame(geometry=[square], crs=3857).to_crs(4326).to_file(path)
        inside = tiles_inside(tiled, area=path)
    assert inside[:, :4].all() and not inside[:, 4:].any()


def test_bad_limits(kampala_z19, tmp_path):
    with pytest.raises(BadInput, match="xmin,ymin,xmax,ymax"):
        parse_extent("1,2,3")
    with pytest.raises(BadInput, match="xmin must be below xmax"):
        parse_extent("5,0,1,1")
    lines = tmp_path / "lines.geojson"
    lines.write_text('{"type":"FeatureCollection","features":[{"type":"Feature","properties":{},'
                     '"geometry":{"type":"LineString","coordinates":[[32.58,0.31],[32.59,0.32]]}}]}')
    with TiledRaster(kampala_z19, "64px") as tiled:
        with pytest.raises(BadInput, match="has no polygons"):
            tiles_inside(tiled, area=lines)
        with pytest.raises(BadInput, match="^--area .*none.gpkg.*: no such file"):
            tiles_inside(tiled, area=tmp_path / "none.gpkg")


def test_cluster_with_extent_outside_the_raster_is_bad_input(kampala_z19, tmp_path):
    proc = run_cli("cluster", kampala_z19, "--out", tmp_path / "x.gpkg", "--weights", "none",
                   "--extent", "0,0,10,10")
    assert proc.returncode == 2 and "no tile centre lies inside" in proc.stderr
    assert list(tmp_path.glob("x*")) == []


def test_cluster_with_area_writes_only_tiles_inside(kampala_z19, tmp_path):
    with TiledRaster(kampala_z19, "64px") as tiled:
        left, bottom, right, top = tiled.dataset.bounds
    path = tmp_path / "area.gpkg"
    gpd.GeoDataFrame(geometry=[box(left, bottom, (left + right) / 2, top)], crs=3857).to_file(path)
    out = tmp_path / "a.gpkg"
    run_cli("cluster", kampala_z19, "--out", out, "--k", 3, "--weights", "none", "--area", path, check=0)
    tiles = gpd.read_file(out, layer="tiles")
    assert len(tiles) == 48 and tiles.col.max() == 5


def test_probe_reports_the_grid_fast_and_the_speed_on_request(kampala_z19):
    info = json.loads(run_cli("probe", kampala_z19, "--tile-size", "32px", "--overlap", "16px", check=0).stdout)
    assert (info["tiles"], info["rows"], info["cols"], info["tile_px"], info["stride_px"]) == (1457, 31, 47, 32, 16)
    assert "tiles_per_s" not in info
    fast = json.loads(run_cli("probe", kampala_z19, "--speed", "--weights", "none", check=0).stdout)
    assert fast["tiles"] == 96 and fast["tiles_per_s"] > 0 and fast["device"] == "cpu"
    with TiledRaster(kampala_z19, "64px") as tiled:
        left, bottom, right, top = tiled.dataset.bounds
    half = json.loads(run_cli("probe", kampala_z19, "--extent", f"{left},{bottom},{(left + right) / 2},{top}",
                              check=0).stdout)
    assert half["tiles"] == 48
    bad = run_cli("probe", kampala_z19, "--tile-size", "900px")
    assert bad.returncode == 2 and "larger than the raster" in bad.stderr


def test_probe_does_not_import_torch(kampala_z19):
    """The plugin calls probe after every parameter change: it must stay light."""
    import subprocess
    import sys

    code = ("import sys; from engine.cli import main; main(['probe', %r]); "
            "print('torch' in sys.modules, file=sys.stderr)" % str(kampala_z19))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(kampala_z19.parents[2]))
    assert proc.stderr.strip().endswith("False"), proc.stderr
