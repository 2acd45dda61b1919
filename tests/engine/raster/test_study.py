"""Many rasters as one study (engine.raster.study): a folder, several paths or a VRT mosaic read as one raster.

The scenes are cut from one raster (the Kampala sample, 768 x 512 px), so the truth is known: their mosaic
must read exactly as the uncut raster, and be cut into the same tiles. Overlaps take the first listed scene's
valid pixel, gaps stay invalid, scenes in different CRSs are warped to one UTM zone, and inputs that cannot
make one study are refused before any work, naming the raster parameter.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.warp import Resampling, calculate_default_transform, reproject

from engine.contract import problems as P
from engine.contract.params import check
from engine.contract.tools import TOOLS
from engine.errors import BadInput
from engine.io import sha256_file
from engine.raster.study import open_study, resolve_raster
from engine.raster.tiling import TiledRaster
from tests.engine.helpers import KAMPALA, cut_strips, hand_vrt, write_raster

@pytest.fixture(scope="module")
def strips(tmp_path_factory):
    return cut_strips(KAMPALA, tmp_path_factory.mktemp("study") / "strips")


def pixels(path):
    with rasterio.open(path) as ds:
        return ds.read(), ds.dataset_mask(), ds.transform, ds.crs


def tiles(path, size="64px"):
    """(grid shape, grid transform, valid share, the first and last row of tiles) of ``path``."""
    with TiledRaster(path, size) as t:
        g = t.grid
        first = t.read_tiles(0, list(range(g.n_cols)))
        last = t.read_tiles(g.n_rows - 1, list(range(g.n_cols)))
        return g.shape, g.transform, t.valid_fraction(), first, last


def test_a_folder_several_paths_and_a_vrt_read_as_the_uncut_raster(strips, tmp_path):
    truth, truth_mask, transform, crs = pixels(KAMPALA)
    assert 0 < (truth_mask == 0).mean() < 0.01                # the sample has a few masked pixels
    vrt = hand_vrt(tmp_path / "mosaic.vrt", KAMPALA, strips)
    for value in (str(strips[0].parent), [str(p) for p in strips], vrt):
        path = resolve_raster(value, cache_dir=tmp_path / "cache")
        data, mask, t, c = pixels(path)
        np.testing.assert_array_equal(data, truth)
        np.testing.assert_array_equal(mask, truth_mask)
        assert t == transform and c == crs
    expected = tiles(KAMPALA)
    for value in (str(strips[0].parent), vrt):
        got = tiles(resolve_raster(value, cache_dir=tmp_path / "cache"))
        assert got[0] == expected[0] and got[1] == expected[1]
        np.testing.assert_array_equal(got[2], expected[2])
        for a, b in zip(got[3:], expected[3:], strict=True):
            np.testing.assert_array_equal(a, b)


def test_one_raster_is_used_as_it_is(strips, tmp_path):
    assert resolve_raster(str(KAMPALA)) == str(KAMPALA)
    assert resolve_raster([str(KAMPALA)]) == str(KAMPALA)
    assert not (tmp_path / "cache").exists()


def test_the_same_scenes_give_the_same_vrt_written_once(strips, tmp_path):
    a = open_study([str(p) for p in strips], cache_dir=tmp_path)
    stamp = os.stat(a.path).st_mtime_ns
    b = open_study([str(p) for p in strips], cache_dir=tmp_path)
    assert a.path == b.path and os.stat(b.path).st_mtime_ns == stamp
    assert a.record()["scenes"] == [str(p) for p in strips] and a.crs == "EPSG:3857" and not a.warped
    c = open_study([str(p) for p in strips[::-1]], cache_dir=tmp_path)         # another order: another study
    assert c.path != a.path


def test_the_checksum_of_a_study_covers_its_scenes(tmp_path, rgb_noise):
    one = write_raster(tmp_path / "one.tif", rgb_noise(32, 32, seed=1))
    two = write_raster(tmp_path / "two.tif", rgb_noise(32, 32, seed=2),
                       transform=Affine(0.5, 0, 500016.0, 0, -0.5, 700000.0))
    vrt = open_study([str(one), str(two)], cache_dir=tmp_path / "cache").path
    before = sha256_file(vrt)
    write_raster(two, rgb_noise(32, 32, seed=3), transform=Affine(0.5, 0, 500016.0, 0, -0.5, 700000.0))
    assert sha256_file(vrt) != before               # the VRT's text is the same, one of its scenes is not


def test_overlapping_scenes_take_the_first_valid_pixel_and_gaps_stay_invalid(tmp_path):
    a = np.full((3, 40, 40), 10, np.uint8)
    a[:, :, :10] = 0                                 # nodata in a's first 10 columns
    b = np.full((3, 40, 40), 200, np.uint8)
    pa = write_raster(tmp_path / "a.tif", a, nodata=0)                                          # columns 0-39
    pb = write_raster(tmp_path / "b.tif", b, transform=Affine(0.5, 0, 500010.0, 0, -0.5, 700000.0))  # 20-59
    pc = write_raster(tmp_path / "c.tif", b, transform=Affine(0.5, 0, 500050.0, 0, -0.5, 700000.0))  # 100-139
    data, mask, _, _ = pixels(resolve_raster([str(pa), str(pb), str(pc)], cache_dir=tmp_path / "cache"))
    assert data.shape == (3, 40, 140)
    row, valid = data[0, 0], mask[0] > 0
    assert not valid[:10].any()                      # a's nodata, no other scene there
    assert (row[10:40] == 10).all() and valid[10:40].all()          # a wins over b where both are valid
    assert (row[40:60] == 200).all() and valid[40:60].all()
    assert not valid[60:100].any()                   # the gap between b and c: invalid, not black
    assert (row[100:] == 200).all() and valid[100:].all()
    data, mask, _, _ = pixels(resolve_raster([str(pb), str(pa)], cache_dir=tmp_path / "cache"))
    assert (data[0, 0, 20:60] == 200).all() and (data[0, 0, 10:20] == 10).all()   # b first: b wins
    assert not (mask[0, :10] > 0).any()


def test_scenes_in_different_crss_are_warped_to_the_utm_zone_of_the_study(strips, tmp_path):
    with rasterio.open(strips[2]) as src:            # the last strip in geographic coordinates
        t, w, h = calculate_default_transform(src.crs, "EPSG:4326", src.width, src.height, *src.bounds)
        out = np.zeros((3, h, w), np.uint8)
        reproject(src.read(), out, src_transform=src.transform, src_crs=src.crs, dst_transform=t,
                  dst_crs="EPSG:4326", resampling=Resampling.bilinear)
    geo = write_raster(tmp_path / "strip_2_4326.tif", out, crs="EPSG:4326", transform=t)
    study = open_study([str(strips[0]), str(strips[1]), str(geo)], cache_dir=tmp_path / "cache")
    assert study.warped and study.crs == "EPSG:32636"        # Kampala: 32.6 E, 0.35 N
    assert 0.28 < study.resolution[0] < 0.31                  # the finest ground size of the scenes (~0.3 m)
    with TiledRaster(study.path, "20m") as tiled, TiledRaster(str(KAMPALA), "20m") as uncut:
        assert tiled.crs.to_epsg() == 32636 and not tiled.warped          # tiled in the working CRS as it is
        assert abs(len(tiled.grid) - len(uncut.grid)) <= 3                 # the same ground, about the same tiles
        valid = tiled.valid_fraction()
        assert (valid > 0.9).mean() > 0.8


def test_a_study_that_spans_utm_zones_is_refused(tmp_path, rgb_noise):
    data = rgb_noise(16, 16)
    west = write_raster(tmp_path / "w.tif", data, crs="EPSG:4326", transform=Affine(0.001, 0, 20.0, 0, -0.001, 0))
    east = write_raster(tmp_path / "e.tif", data, crs="EPSG:32636",
                        transform=Affine(0.5, 0, 500000.0, 0, -0.5, 10000.0))        # 33 E
    with pytest.raises(BadInput, match="split the study per UTM zone") as err:
        open_study([str(west), str(east)], cache_dir=tmp_path / "cache")
    assert err.value.param == "raster"


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
@pytest.mark.parametrize("case", ["empty folder", "no rasters", "not a raster", "no crs", "bands", "dtype",
                                  "missing", "far apart"])
def test_scenes_that_cannot_make_one_study_are_refused(case, tmp_path, rgb_noise):
    good = write_raster(tmp_path / "good.tif", rgb_noise(16, 16))
    folder = tmp_path / "f"
    folder.mkdir()
    if case == "empty folder":
        value, words = str(folder), "no rasters"
    elif case == "no rasters":
        (folder / "notes.txt").write_text("hello")
        value, words = str(folder), "no rasters"
    elif case == "not a raster":
        (folder / "a.tif").write_text("x,y\n1,2\n")
        value, words = [str(good), str(folder / "a.tif")], "a.tif"
    elif case == "no crs":
        with rasterio.open(folder / "b.tif", "w", driver="GTiff", width=16, height=16, count=3,
                           dtype="uint8") as dst:
            dst.write(rgb_noise(16, 16))
        value, words = [str(good), str(folder / "b.tif")], "coordinate reference system"
    elif case == "bands":
        value, words = [str(good), str(write_raster(folder / "one.tif", rgb_noise(16, 16)[:1]))], "band"
    elif case == "dtype":
        value, words = [str(good), str(write_raster(folder / "u16.tif", rgb_noise(16, 16).astype(np.uint16)))], \
            "data type"
    elif case == "missing":
        value, words = [str(good), str(folder / "gone.tif")], "does not exist"
    else:
        far = write_raster(folder / "far.tif", rgb_noise(16, 16), transform=Affine(0.5, 0, 900000.0, 0, -0.5,
                                                                                     9000000.0))
        value, words = [str(good), str(far)], "far apart"
    with pytest.raises(BadInput, match=words) as err:
        resolve_raster(value, cache_dir=tmp_path / "cache")
    assert err.value.param == "raster" and err.value.code in (P.BAD_FORMAT, P.NOT_FOUND)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.vrt"))


def test_the_contract_takes_several_rasters_and_checks_each(strips, tmp_path):
    cluster = TOOLS["cluster"]
    assert cluster.param("raster").many and TOOLS["change"].param("raster_after").study
    values = {"raster": [str(p) for p in strips], "out": str(tmp_path / "o.gpkg")}
    assert check(cluster, values) == []
    values["raster"] = [str(strips[0]), str(tmp_path / "gone.tif")]
    (problem,) = check(cluster, values)
    assert problem.param == "raster" and problem.code == P.NOT_FOUND and "gone.tif" in problem.message
    values["raster"] = [str(strips[0]), str(tmp_path / "o.gpkg")]
    (tmp_path / "o.gpkg").write_text("")
    (problem,) = check(cluster, {**values, "overwrite": True})
    assert problem.code == P.CLASHES                          # an output that is one of the scenes


def test_prune_studies_deletes_only_the_studies_whose_scenes_are_gone(strips, tmp_path):
    import shutil

    from engine.raster.study import STUDIES, open_study, prune_studies

    own = []
    for p in strips:                               # copies: one of them is deleted below
        own.append(tmp_path / "scenes" / p.name)
        own[-1].parent.mkdir(exist_ok=True)
        shutil.copy(p, own[-1])
    cache = tmp_path / "cache"
    every = open_study([str(p) for p in own], cache_dir=cache)
    first_two = open_study([str(p) for p in own[:2]], cache_dir=cache)
    writing = cache / STUDIES / ".abc.part-1"      # a study being written elsewhere
    writing.mkdir()
    assert prune_studies(cache) == []
    own[-1].unlink()
    assert prune_studies(cache) == [Path(every.path).parent]
    assert not Path(every.path).exists() and Path(first_two.path).exists() and writing.is_dir()
    assert prune_studies(tmp_path / "no-cache") == []
