"""Building statistics on Dask, partition by partition of the footprints: the columns and warnings of one
process (counts exact, areas and means within float rounding)."""
from __future__ import annotations

import os
import shutil
import time

import numpy as np
import pyogrio
import pytest

from engine.stats.measures import BUILDING_COLUMNS
from engine.tools.cluster import ClusterParams
from engine.tools.cluster import run as run_cluster
from engine.tools.stats import StatsParams
from engine.tools.stats import run as run_stats
from tests.engine.distributed.helpers import wait_until_idle


@pytest.fixture(scope="module")
def kampala_run(kampala_z19, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run.gpkg"
    run_cluster(ClusterParams(raster=str(kampala_z19), out=str(out), k=4, tile_size="32px",
                              backbone="efficientnet_lite0", batch_size=8, use_cache=False, quicklook=False))
    return out


def _copy(run, folder):
    folder.mkdir()
    for f in run.parent.glob(run.stem + "*"):
        shutil.copy(f, folder / f.name)
    return folder / run.name


def test_building_statistics_on_dask_are_those_of_one_process(dask_cluster, kampala_run, kampala_buildings,
                                                              tmp_path, monkeypatch):
    from engine.distributed import stats

    monkeypatch.setattr(stats, "BUILDINGS_PER_PARTITION", 60)      # several partitions of the sample's footprints
    one, many = _copy(kampala_run, tmp_path / "one"), _copy(kampala_run, tmp_path / "many")
    a = run_stats(StatsParams(run=str(one), buildings=str(kampala_buildings)))
    b = run_stats(StatsParams(run=str(many), buildings=str(kampala_buildings), dask=dask_cluster[0].scheduler_address))
    (runs,) = b["statistics"]["dask"]["runs"]
    assert runs["stage"] == "buildings" and runs["partitions"] == -(-runs["footprints"] // 60) > 2
    ta = pyogrio.read_dataframe(str(one), layer="tiles", read_geometry=False)
    tb = pyogrio.read_dataframe(str(many), layer="tiles", read_geometry=False)
    assert ta["bldg_count"].sum() > 100
    np.testing.assert_array_equal(ta["bldg_count"], tb["bldg_count"])
    for column in BUILDING_COLUMNS:
        np.testing.assert_allclose(ta[column], tb[column], rtol=1e-12, atol=1e-9, err_msg=column)
    assert a["statistics"]["warnings"] == b["statistics"]["warnings"]
    eta = [{r["stat"]: (r["n"], r["eta2"]) for r in m["statistics"]["eta_squared"]} for m in (a, b)]
    assert eta[0].keys() == eta[1].keys() and all(eta[0][k] == pytest.approx(eta[1][k]) for k in eta[0])


def test_resume_keeps_the_partitions_an_interrupted_run_summed(dask_cluster, kampala_run, kampala_buildings,
                                                               tmp_path, monkeypatch):
    """A client stopped after its first partition leaves their sums in the store; the run again with resume sums
    only the others (the session's record says how many were kept) and gives the columns of a whole run; the
    store is gone afterwards."""
    import geopandas as gpd

    from engine.distributed import stats
    from engine.distributed.session import dask_session
    from engine.errors import Cancelled

    monkeypatch.setattr(stats, "BUILDINGS_PER_PARTITION", 15)        # about 15 partitions
    tiles = gpd.read_file(kampala_run, layer="tiles").geometry.to_crs(32636)
    root = tmp_path / "stores"
    address = dask_cluster[0].scheduler_address

    def stop_at_the_first(stage, done, total, message="", **_):
        if done >= 1:
            raise Cancelled()

    with dask_session(address, lambda *a, **k: None) as session, pytest.raises(Cancelled):
        stats.building_stats_on_dask(session, str(kampala_buildings), tiles, root, stop_at_the_first)
    wait_until_idle(dask_cluster[1])                                  # the tasks running at the stop write theirs
    (store,) = root.iterdir()
    left = sorted(p.name for p in store.glob("part-*.npz"))
    assert len(left) >= 1
    # resumed eight days later, beside another run's store abandoned as long: that one goes, its own stays
    (root / "abandoned").mkdir()
    (root / "abandoned" / "part-000000.npz").write_bytes(b"\0")
    late = time.time() - 8 * 86400
    for path in [*store.iterdir(), store, *(root / "abandoned").iterdir(), root / "abandoned"]:
        os.utime(path, (late, late))
    said = []

    with dask_session(address, lambda *a, **k: None) as session:
        resumed = stats.building_stats_on_dask(session, str(kampala_buildings), tiles, root,
                                               lambda *a, **k: said.append(a), resume=True)
        (record,) = session.runs
    assert len(left) <= record["kept"] < record["partitions"]        # (tasks running at the stop may finish)
    assert "removed 1 store(s) of interrupted Dask runs" in said[0][3] and "abandoned" in said[0][3]
    assert not list(root.iterdir())
    with dask_session(address, lambda *a, **k: None) as session:
        whole = stats.building_stats_on_dask(session, str(kampala_buildings), tiles, root, lambda *a, **k: None)
    for column in BUILDING_COLUMNS:
        np.testing.assert_allclose(resumed[column], whole[column], rtol=1e-12, atol=1e-9, err_msg=column)
    assert whole["bldg_count"].sum() > 100
