"""Features on Dask (cluster, predict, sweep): the same labels as one process, through worker deaths and a
client killed mid-run (--resume), with the engine's own progress stages.

One local cluster of two worker processes (one thread each) serves the module; the tools reach it by its
scheduler address (``--dask tcp://127.0.0.1:PORT``), as they would a remote one. Small tiles and batches make
many partitions of little work each (two cores).
"""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from engine.distributed.partitions import partition_tiles
from engine.progress import Progress
from engine.tools.cluster import ClusterParams
from engine.tools.cluster import run as run_cluster
from tests.engine.distributed.helpers import assert_same_tiles, tile_columns, wait_until_idle, worker_pids
from tests.engine.helpers import REPO, run_cli, work_events

FAST = {"backbone": "efficientnet_lite0", "tile_size": "32px", "batch_size": 2, "k": 4}     # 32 tiles a partition


def _cluster(raster, out, **kw):
    return run_cluster(ClusterParams(raster=str(raster), out=str(out), **{**FAST, **kw}))


@pytest.fixture(scope="module")
def kampala_single(kampala_z19, tmp_path_factory):
    """The single-process run everything here is compared with."""
    out = tmp_path_factory.mktemp("single") / "single.gpkg"
    _cluster(kampala_z19, out, use_cache=False)
    return out


def test_cluster_on_dask_gives_the_labels_of_one_process(dask_cluster, kampala_z19, kampala_single, tmp_path):
    cluster, _ = dask_cluster
    cache = Path(os.environ["URBANFORM_CACHE"]) / "features"
    abandoned = cache / "parts" / ("0" * 32)                     # an interrupted run's store, a week untouched
    abandoned.mkdir(parents=True)
    (abandoned / "part-000000.npy").write_bytes(b"\0" * 128)
    week_ago = time.time() - 8 * 86400
    for p in (abandoned / "part-000000.npy", abandoned):
        os.utime(p, (week_ago, week_ago))
    log = io.StringIO()
    manifest = run_cluster(ClusterParams(raster=str(kampala_z19), out=str(tmp_path / "dask.gpkg"),
                                         dask=cluster.scheduler_address, **FAST), Progress("json", stream=log, min_interval=0))
    assert_same_tiles(tile_columns(kampala_single), tile_columns(tmp_path / "dask.gpkg"))
    assert manifest["dask"]["workers"] == 2 and manifest["dask"]["address"] == cluster.scheduler_address
    assert manifest["features"]["device"] == "cpu"
    # the store was gathered into the feature cache file one process writes, and removed; the abandoned store
    # went before the run, which said so
    assert (cache / f"{manifest['features']['cache_key']}.npy").is_file() and not (cache / "parts").exists()
    said = [e.get("message", "") for e in work_events(log.getvalue())]
    assert any("removed 1 store(s) of interrupted Dask runs" in m and "0" * 32 in m for m in said), said


def test_predict_and_sweep_on_dask_give_the_labels_of_one_process(dask_cluster, kampala_z19, kampala_single,
                                                                    tmp_path):
    from engine.tools.predict import PredictParams
    from engine.tools.predict import run as run_predict
    from engine.tools.sweep import SweepParams
    from engine.tools.sweep import run as run_sweep

    address = dask_cluster[0].scheduler_address
    model = str(kampala_single).replace(".gpkg", "_model.pt")
    run_predict(PredictParams(model=model, raster=str(kampala_z19), out=str(tmp_path / "p.gpkg"),
                              batch_size=FAST["batch_size"],
                              dask=address, quicklook=False))
    assert_same_tiles(tile_columns(kampala_single), tile_columns(tmp_path / "p.gpkg"))
    sweep = {"raster": str(kampala_z19), "k": "2,4", "tile_size": "32px", "backbone": "efficientnet_lite0",
             "batch_size": FAST["batch_size"], "use_cache": False}
    run_sweep(SweepParams(out=str(tmp_path / "s1.gpkg"), **sweep))
    run_sweep(SweepParams(out=str(tmp_path / "s2.gpkg"), dask=address, **sweep))
    columns = ("row", "col", "k2", "k4", "pc1", "pc2")
    assert_same_tiles(tile_columns(tmp_path / "s1.gpkg", "tiles_32px", columns),
                      tile_columns(tmp_path / "s2.gpkg", "tiles_32px", columns))


def test_the_synthetic_city_on_dask_gives_the_labels_of_one_process(dask_cluster, city, tmp_path):
    _cluster(city.raster, tmp_path / "one.gpkg", tile_size="64px", k=4, use_cache=False)
    _cluster(city.raster, tmp_path / "dask.gpkg", tile_size="64px", k=4, use_cache=False,
             dask=dask_cluster[0].scheduler_address)
    assert_same_tiles(tile_columns(tmp_path / "one.gpkg"), tile_columns(tmp_path / "dask.gpkg"))


def _parts(cache: Path) -> list[Path]:
    return sorted(cache.glob("features/parts/*/part-*.npy"))


def test_a_worker_killed_mid_run_changes_nothing(dask_cluster, city, tmp_path):
    """SIGKILL one worker while the partitions run: Dask runs its tasks again elsewhere (its nanny starts a new
    worker), and the labels are those of one process."""
    cluster, client = dask_cluster
    _cluster(city.raster, tmp_path / "one.gpkg", use_cache=False)
    cache = Path(os.environ["URBANFORM_CACHE"])
    pids = worker_pids(client)
    result: dict = {}
    runner = threading.Thread(target=lambda: result.update(m=_cluster(
        city.raster, tmp_path / "dask.gpkg", dask=cluster.scheduler_address)))
    runner.start()
    deadline = time.monotonic() + 120
    while not _parts(cache) and time.monotonic() < deadline:
        time.sleep(0.01)
    done_at_kill = len(_parts(cache))
    victim = sorted(pids.values())[0]
    os.kill(victim, signal.SIGKILL)
    runner.join(timeout=300)
    assert "m" in result, "the run did not finish"
    n_parts = -(-result["m"]["tiling"]["tiles_valid"] // partition_tiles(FAST["batch_size"]))
    assert 0 < done_at_kill < n_parts, "the worker was not killed while partitions ran"
    assert victim not in worker_pids(client).values()
    assert_same_tiles(tile_columns(tmp_path / "one.gpkg"), tile_columns(tmp_path / "dask.gpkg"))
    client.wait_for_workers(2, timeout=60)


def test_resume_after_the_client_is_killed(dask_cluster, city, tmp_path):
    """SIGKILL the CLI mid-features: the partitions it finished stay in the store, --resume reuses them (the
    manifest says how many) and the labels are those of one process; the progress events are the single-process
    stages, the first one with the dashboard link."""
    address = dask_cluster[0].scheduler_address
    args = [city.raster, "--out", tmp_path / "r.gpkg", "--backbone", "efficientnet_lite0", "--tile-size", "32px",
            "--batch-size", str(FAST["batch_size"]), "--k", "4", "--dask", address, "--progress", "json"]
    proc = subprocess.Popen([sys.executable, "-m", "engine", "cluster", *map(str, args)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:
            event = json.loads(line)
            if event.get("stage") == "features" and 0 < event["done"] < event["total"] // 2:
                break
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    cache = Path(os.environ["URBANFORM_CACHE"])
    wait_until_idle(dask_cluster[1])                  # the tasks it left running finish their partitions
    kept = len(_parts(cache))
    assert kept > 0 and not (tmp_path / "r.gpkg").exists()
    # nothing half-written next to OUT (the killed run's output lock is taken over: its process is gone)
    assert not [p for p in tmp_path.iterdir() if ".part" in p.name or p.name.startswith("r")]

    again = run_cli("cluster", *args, "--resume", check=0)
    events = work_events(again.stdout)
    assert events[0]["stage"] == "open" and "dashboard http" in events[0]["message"]
    assert "dask: " in again.stderr and "dashboard http" in again.stderr
    stages = list(dict.fromkeys(e["stage"] for e in events))
    assert stages == ["open", "scan", "features", "cluster", "write"]
    features = [e for e in events if e["stage"] == "features"]       # summed over the workers, never back
    assert [e["done"] for e in features] == sorted(e["done"] for e in features)
    assert features[-1]["done"] == features[-1]["total"]
    features_run = json.loads((tmp_path / "r_manifest.json").read_text())["dask"]["runs"][0]
    assert features_run["stage"] == "features" and kept <= features_run["kept"] < features_run["partitions"]
    _cluster(city.raster, tmp_path / "one.gpkg", use_cache=False)
    assert_same_tiles(tile_columns(tmp_path / "one.gpkg"), tile_columns(tmp_path / "r.gpkg"))


def test_deepcluster_on_dask_gives_the_labels_of_one_process(dask_cluster, kampala_z19, tmp_path):
    """--method deepcluster --dask: the training runs here, each epoch's features on the workers (with that
    epoch's network, saved where they see it); labels and training history are those of one process, and
    the networks and partitions are removed from the cache afterwards."""
    deep = {"method": "deepcluster", "epochs": 1, "crops_per_tile": 1, "batch_size": 8}
    one = _cluster(kampala_z19, tmp_path / "one.gpkg", use_cache=False, **deep)
    from engine.progress import Progress

    stream = io.StringIO()
    on = run_cluster(ClusterParams(raster=str(kampala_z19), out=str(tmp_path / "dask.gpkg"),
                                   dask=dask_cluster[0].scheduler_address, **{**FAST, **deep}),
                     progress=Progress("json", stream=stream, min_interval=0))
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert_same_tiles(tile_columns(tmp_path / "one.gpkg"), tile_columns(tmp_path / "dask.gpkg"))
    history = [(h["epoch"], h["clusters_used"]) for h in on["clustering"]["history"]]
    assert history == [(h["epoch"], h["clusters_used"]) for h in one["clustering"]["history"]] == [(0, 4), (1, 4)]
    assert [r["stage"] for r in on["dask"]["runs"]].count("features") == 2          # epochs 0 and 1
    assert any(e["stage"] == "epoch" for e in events)
    assert any(e["stage"] == "features" and "epoch 1/1" in e.get("message", "") and "partitions" in e["message"]
               for e in events)
    assert not list(Path(os.environ["URBANFORM_CACHE"]).glob("features/parts/deepcluster-*"))

    from engine.tools.sweep import SweepParams
    from engine.tools.sweep import run as run_sweep

    sweep = {"raster": str(kampala_z19), "k": "2,3", "tile_size": "32px", "backbone": "efficientnet_lite0",
             "use_cache": False, **deep}
    run_sweep(SweepParams(out=str(tmp_path / "s1.gpkg"), **sweep))
    run_sweep(SweepParams(out=str(tmp_path / "s2.gpkg"), dask=dask_cluster[0].scheduler_address, **sweep))
    columns = ("row", "col", "k2", "k3", "pc1", "pc2")
    assert_same_tiles(tile_columns(tmp_path / "s1.gpkg", "tiles_32px", columns),
                      tile_columns(tmp_path / "s2.gpkg", "tiles_32px", columns))
