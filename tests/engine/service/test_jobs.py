"""Jobs on a real server: a cluster run by upload gives the CLI's clusters; dismiss and restarts leave no engine
process and no file behind; results expire; the quota refuses work with 507; /buildings_mask answers with the
mask GeoTIFF or the GeoPackage."""
from __future__ import annotations

import time

import geopandas as gpd
import numpy as np
import pytest
import rasterio

from engine.service.jobs import STOPPED
from tests.engine.helpers import SAMPLE, run_cli
from tests.engine.service.helpers import Server, assert_ogc_error, engines_of, submit, wait_for

RASTER = SAMPLE / "kampala_ug_oam_rgb_z19_epsg3857.tif"
BUILDINGS = SAMPLE / "kampala_ug_osm_buildings.geojson"
CLUSTER = {"k": 3, "tile_size": "64px", "backbone": "efficientnet_lite0", "seed": 0}
# a DeepCluster run that lasts minutes here: long enough to be dismissed or interrupted while it runs
SLOW = {"k": 3, "tile_size": "32px", "method": "deepcluster", "epochs": 100, "backbone": "efficientnet_lite0"}


def running(client, job_id, timeout=120) -> dict:
    """Wait until the job's engine is at work (a progress stage reported)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = client.get(f"/jobs/{job_id}").json()
        if info["status"] == "running" and info.get("stage"):
            return info
        assert info["status"] in ("accepted", "running"), info
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} never started")


def test_a_cluster_job_by_upload_gives_the_clusters_of_the_cli(tmp_path):
    cli = tmp_path / "cli" / "k.gpkg"
    cli.parent.mkdir()
    run_cli("cluster", RASTER, "--out", cli, "--k", 3, "--tile-size", "64px", "--backbone", "efficientnet_lite0",
            "--seed", 0, "--buildings", BUILDINGS, check=0)
    with Server(tmp_path / "server") as server, server.client() as client:
        with open(RASTER, "rb") as raster, open(BUILDINGS, "rb") as buildings:
            info = submit(client, "cluster", {**CLUSTER, "out": "k.gpkg"},
                          files=[("raster", (RASTER.name, raster)), ("buildings", (BUILDINGS.name, buildings))])
        seen = []
        while (status := client.get(f"/jobs/{info['jobID']}").json())["status"] not in ("successful", "failed"):
            seen.append(status["progress"])
            time.sleep(0.1)
        assert status["status"] == "successful", status
        assert status["progress"] == 100 and seen == sorted(seen)
        results = client.get(f"/jobs/{info['jobID']}/results").json()
        assert {"gpkg", "tif", "manifest", "stats_csv"} <= set(results)
        assert results["tif"]["title"] == "k_clusters.tif"
        for key in ("gpkg", "tif"):
            response = client.get(results[key]["href"])
            assert response.status_code == 200
            assert response.headers["content-type"].startswith(results[key]["type"].split(";")[0])
            (tmp_path / results[key]["title"]).write_bytes(response.content)
    served = gpd.read_file(tmp_path / "k.gpkg", layer="tiles")
    local = gpd.read_file(cli, layer="tiles")
    assert list(served["cluster"]) == list(local["cluster"]) and "bldg_count" in served
    with rasterio.open(tmp_path / "k_clusters.tif") as a, rasterio.open(cli.parent / "k_clusters.tif") as b:
        assert np.array_equal(a.read(), b.read())


def test_dismissing_a_running_job_ends_its_engine_and_removes_its_files(tmp_path):
    with Server(tmp_path / "server") as server, server.client() as client:
        with open(RASTER, "rb") as raster:
            info = submit(client, "cluster", SLOW, files={"raster": (RASTER.name, raster)})
        job_dir = server.jobs_dir / info["jobID"]
        running(client, info["jobID"])
        assert engines_of(job_dir)
        gone = client.delete(f"/jobs/{info['jobID']}")
        assert gone.status_code == 200 and gone.json()["status"] == "dismissed"
        assert not job_dir.exists() and not engines_of(job_dir)
        assert client.get(f"/jobs/{info['jobID']}").json()["status"] == "dismissed"
        assert_ogc_error(client.get(f"/jobs/{info['jobID']}/results"), 404)


def test_a_restart_keeps_finished_jobs_and_fails_the_interrupted_one(tmp_path):
    server = Server(tmp_path / "server").start()
    try:
        with server.client() as client:
            finished = submit(client, "cluster", CLUSTER, files={"raster": (RASTER.name, RASTER.read_bytes())})
            assert wait_for(client, finished["jobID"])["status"] == "successful"
            slow = submit(client, "cluster", SLOW, files={"raster": (RASTER.name, RASTER.read_bytes())})
            running(client, slow["jobID"])
        server.kill()                                           # a crash: no chance to stop the engine
        job_dir = server.jobs_dir / slow["jobID"]
        server.start()
        with server.client() as client:
            interrupted = client.get(f"/jobs/{slow['jobID']}").json()
            assert interrupted["status"] == "failed" and interrupted["error"]["detail"] == STOPPED
            assert not engines_of(job_dir)
            assert not [p for p in job_dir.rglob("*") if p.is_file() and "out" in p.parts]
            kept = client.get(f"/jobs/{finished['jobID']}/results").json()
            assert client.get(kept["gpkg"]["href"]).status_code == 200
            # and the server takes new work
            again = submit(client, "probe", {}, files={"raster": (RASTER.name, RASTER.read_bytes())})
            assert wait_for(client, again["jobID"])["status"] == "successful"
            # a stop as systemd does it (SIGTERM) ends the running engine and fails its job the same way
            slow = submit(client, "cluster", SLOW, files={"raster": (RASTER.name, RASTER.read_bytes())})
            running(client, slow["jobID"])
        server.stop()
        assert not engines_of(server.jobs_dir / slow["jobID"])
        server.start()
        with server.client() as client:
            assert client.get(f"/jobs/{slow['jobID']}").json()["error"]["detail"] == STOPPED
    finally:
        server.stop()


def test_results_expire_after_keep_results_with_the_study_of_their_uploads(tmp_path):
    """Two uploaded scenes are one study, whose VRT the engine writes under the feature cache (the conftest's
    URBANFORM_CACHE, which the server inherits): when the job expires, its files and that VRT go."""
    studies = tmp_path / "cache" / "features" / "studies"
    with Server(tmp_path / "server", "--keep-results", "2s") as server, server.client() as client:
        scenes = [("raster", ("a.tif", RASTER.read_bytes())), ("raster", ("b.tif", RASTER.read_bytes()))]
        info = submit(client, "probe", {}, files=scenes)
        assert wait_for(client, info["jobID"])["status"] == "successful"
        deadline = time.monotonic() + 20
        while client.get(f"/jobs/{info['jobID']}").status_code != 404 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert_ogc_error(client.get(f"/jobs/{info['jobID']}"), 404)
        assert not (server.jobs_dir / info["jobID"]).exists()
        assert studies.is_dir() and list(studies.iterdir()) == []


def test_a_full_quota_refuses_new_jobs_with_507_before_work(tmp_path):
    with Server(tmp_path / "server", "--quota-gb", "0.0005") as server, server.client() as client:   # ~0.5 MB
        response = client.post("/processes/probe/execution", files={"raster": (RASTER.name, RASTER.read_bytes())})
        assert_ogc_error(response, 507)
        assert not any(server.jobs_dir.iterdir())


@pytest.fixture(scope="module")
def model_server(tmp_path_factory):
    """A server with one tiny building model (one epoch on the sample: the mask's content does not matter)."""
    data = tmp_path_factory.mktemp("mask") / "server"
    (data / "models").mkdir(parents=True)
    run_cli("train-seg", RASTER, "--buildings", BUILDINGS, "--out", data / "models" / "buildings.pt", "--epochs", 1,
            "--chip", 64, "--encoder", "efficientnet_lite0", "--chips-per-epoch", 8, "--batch-size", 4, check=0)
    with Server(data) as server:
        yield server


def test_buildings_mask_returns_the_mask_geotiff(model_server, tmp_path):
    with model_server.client() as client:
        assert client.get("/models").json() == {"models": [{"id": "buildings", "default": True}]}
        response = client.post("/buildings_mask", files={"file": ("town.tif", RASTER.read_bytes())})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "image/tiff"
        (tmp_path / "mask.tif").write_bytes(response.content)
        with rasterio.open(tmp_path / "mask.tif") as mask, rasterio.open(RASTER) as image:
            assert (mask.width, mask.height, mask.crs) == (image.width, image.height, image.crs)
            assert set(np.unique(mask.read(1))) <= {0, 1, mask.nodata}
        response = client.post("/buildings_mask", params={"response_type": "gpkg"},
                               files={"file": ("town.tif", RASTER.read_bytes())}, data={"model": "buildings"})
        assert response.status_code == 200 and response.headers["content-type"] == "application/geopackage+sqlite3"
        (tmp_path / "b.gpkg").write_bytes(response.content)
        assert "geometry" in gpd.read_file(tmp_path / "b.gpkg", layer="buildings")
        jobs = client.get("/jobs", params={"processID": "segment"}).json()["jobs"]
        assert len(jobs) == 2 and all(j["status"] == "successful" for j in jobs)


def test_buildings_mask_refuses_bad_requests(model_server):
    with model_server.client() as client:
        assert_ogc_error(client.post("/buildings_mask", files={"file": ("t.tif", RASTER.read_bytes())},
                                     data={"model": "nothing"}), 400, "not_found", "model")
        assert_ogc_error(client.post("/buildings_mask", files={"image": ("t.tif", RASTER.read_bytes())}), 400)
        assert_ogc_error(client.post("/buildings_mask", files={"model": (None, "buildings")}), 400, "required")
        assert_ogc_error(client.post("/buildings_mask", json={"file": "t.tif"}), 415)
        assert_ogc_error(client.post("/buildings_mask", params={"response_type": "png"},
                                     files={"file": ("t.tif", RASTER.read_bytes())}), 400, "bad_choice")
        jobs = client.get("/jobs", params={"processID": "segment", "status": "accepted,running,failed"}).json()
        assert jobs["jobs"] == []


def test_serve_refuses_a_public_address_without_tokens(tmp_path):
    proc = run_cli("serve", "--host", "0.0.0.0", "--data-dir", tmp_path / "d")
    assert proc.returncode == 2 and "--token-file" in proc.stderr and "refusing" in proc.stderr
    (tmp_path / "tokens").write_text("short\n")
    proc = run_cli("serve", "--host", "0.0.0.0", "--token-file", tmp_path / "tokens", "--data-dir", tmp_path / "d")
    assert proc.returncode == 2 and "at least 16 characters" in proc.stderr
    proc = run_cli("serve", "--keep-results", "soon", "--data-dir", tmp_path / "d")
    assert proc.returncode == 2 and "duration" in proc.stderr
    assert proc.stderr.startswith("error: --keep-results") or "--keep-results" in proc.stderr
