"""Segmentation on Dask: bands of rows on two workers give the mask, probabilities and buildings of one process;
band edges are merged as block edges are (the polygoniser on its own, then through the tool)."""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import shapely

from engine.distributed.partitions import row_bands
from engine.segmentation.polygons import BlockPolygonizer, merge_edges
from tests.engine.helpers import run_cli


def _shapes(mask, block, bands=None):
    """Canonical WKB of the polygons of ``mask``: in one run, or band by band with the edges merged."""
    h, w = mask.shape
    if bands is None:
        poly = BlockPolygonizer(w, h, block)
        polys = poly.add(mask) + poly.finish()
    else:
        polys, edges = [], []
        for band in bands:
            poly = BlockPolygonizer(w, h, block, start_row=band.row0)
            polys += poly.add(mask[band.row0: band.row1])
            edges += poly.band_edges()
        polys += merge_edges(edges)
    return sorted(shapely.to_wkb(p) for p in polys)


@pytest.mark.parametrize("seed", range(4))
def test_bands_merged_give_the_polygons_of_one_run(seed):
    """Blobs, rings and corner-only contacts across band and block edges: the same polygons either way."""
    rng = np.random.default_rng(seed)
    mask = rng.random((203, 157)) < 0.55                      # percolating clusters that span many bands
    mask[40:90, 20:60] = True
    mask[55:75, 35:45] = False                               # a hole across a band edge (64)
    block = 16
    one = _shapes(mask, block)
    assert one == _shapes(mask, block, row_bands(203, block, blocks=1))
    assert one == _shapes(mask, block, row_bands(203, block))
    assert len(one) > 20


@pytest.fixture(scope="module")
def seg_model(kampala_z19, kampala_buildings, tmp_path_factory):
    """A tiny U-Net (one epoch of 8 chips of 64 px)."""
    model = tmp_path_factory.mktemp("model") / "M.pt"
    run_cli("train-seg", kampala_z19, "--buildings", kampala_buildings, "--out", model, "--epochs", "1", "--chip",
            "64", "--encoder", "efficientnet_lite0", "--chips-per-epoch", "8", "--batch-size", "4", check=0)
    return model


def test_segment_on_dask_equals_one_process(dask_cluster, kampala_z19, seg_model, tmp_path):
    """Four bands of 128 rows (block 32): the same mask, probabilities and buildings."""
    import pyogrio
    import rasterio

    from engine.tools.segment import SegmentParams, run

    common = {"raster": str(kampala_z19), "model": str(seg_model), "block": 32, "probability": True}
    run(SegmentParams(out=str(tmp_path / "probe.gpkg"), **common))
    with rasterio.open(tmp_path / "probe_prob.tif") as src:          # a threshold that cuts many buildings
        threshold = float(np.median(src.read(1)))
    one = run(SegmentParams(out=str(tmp_path / "one.gpkg"), threshold=threshold, **common))
    stores = Path(os.environ["URBANFORM_CACHE"]) / "segment"    # interrupted runs' stores: a week old, a day old
    for name, age in (("abandoned", 8 * 86400), ("recent", 86400)):
        (stores / name).mkdir(parents=True)
        (stores / name / "band-000000.json").write_text("{}")
        for p in (stores / name / "band-000000.json", stores / name):
            os.utime(p, (time.time() - age, time.time() - age))
    many = run(SegmentParams(out=str(tmp_path / "dask.gpkg"), threshold=threshold,
                             dask=dask_cluster[0].scheduler_address, **common))
    assert many["dask"]["runs"] == [{"stage": "segment", "bands": 4, "band_rows": 128, "kept": 0}]
    assert sorted(p.name for p in stores.iterdir()) == ["recent"]         # its own store and the abandoned gone
    for key in ("n_buildings", "building_px", "valid_px"):
        assert one[key] == many[key], key
    assert one["n_buildings"] > 20
    for name in ("mask", "prob"):
        with rasterio.open(tmp_path / f"one_{name}.tif") as a, rasterio.open(tmp_path / f"dask_{name}.tif") as b:
            np.testing.assert_array_equal(a.read(), b.read())
            assert (a.profile["transform"], a.crs) == (b.profile["transform"], b.crs)
    layers = [pyogrio.read_dataframe(str(tmp_path / f"{n}.gpkg"), layer="buildings") for n in ("one", "dask")]
    keyed = [sorted(zip(shapely.to_wkb(df.geometry.values), df["area"], df["orien"], strict=True)) for df in layers]
    assert keyed[0] == keyed[1]
