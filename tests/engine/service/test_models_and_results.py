"""The service's models folder, the building-mask shortcut and a cluster job's results, in-process (TestClient).

Each test here failed before its fix in engine/service/app.py:
- /models and the default model counted the ``*_checkpoint.pt`` train-seg leaves next to its model as a second
  model, so a models folder of one trained model had no default and /buildings_mask refused;
- /buildings_mask answered 500 for every upload (its part 'file' was looked up as an input of ``segment``);
- a cluster job wrote its model as ``cluster.pt`` (a default given to the optional ``save_model``) and offered no
  ``model`` result, so a client could not fetch it for ``predict``.
"""
from __future__ import annotations

import time

import pytest
import rasterio

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from engine.service.app import create_app  # noqa: E402
from engine.service.config import ServiceConfig  # noqa: E402


@pytest.fixture(scope="module")
def client(tmp_path_factory, tiny_seg_model):
    config = ServiceConfig(data_dir=tmp_path_factory.mktemp("service_data"), models_dir=tiny_seg_model.parent)
    with TestClient(create_app(config)) as c:
        yield c


def finished(client, job_id: str, timeout: float = 120) -> dict:
    """The job's status info once it is no longer accepted or running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = client.get(f"/jobs/{job_id}").json()
        if info["status"] not in ("accepted", "running"):
            return info
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still {info['status']} after {timeout} s")


def test_models_leave_out_the_train_seg_checkpoint(client, tiny_seg_model):
    assert (tiny_seg_model.parent / "buildings_checkpoint.pt").is_file()
    assert client.get("/models").json() == {"models": [{"id": "buildings", "default": True}]}


def test_buildings_mask_answers_the_mask_of_the_upload(client, kampala_z19, tmp_path):
    with open(kampala_z19, "rb") as image:
        answer = client.post("/buildings_mask", files={"file": ("image.tif", image, "image/tiff")})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "image/tiff"
    (tmp_path / "mask.tif").write_bytes(answer.content)
    with rasterio.open(tmp_path / "mask.tif") as mask, rasterio.open(kampala_z19) as source:
        assert (mask.width, mask.height, mask.count) == (source.width, source.height, 1)


def test_cluster_results_offer_the_model(client, kampala_z19):
    with open(kampala_z19, "rb") as image:
        answer = client.post("/processes/cluster/execution", headers={"Prefer": "respond-async"},
                             data={"inputs": '{"inputs": {"k": 2, "tile_size": "128px", "use_cache": false}}'},
                             files={"raster": ("image.tif", image, "image/tiff")})
    assert answer.status_code == 201, answer.text
    info = finished(client, answer.json()["jobID"])
    assert info["status"] == "successful", info
    links = client.get(f"/jobs/{info['jobID']}/results").json()
    assert {"gpkg", "tif", "manifest", "model"} <= set(links)
    assert links["model"]["title"] == "cluster_model.pt"
    model = client.get(f"/jobs/{info['jobID']}/results/model")
    assert model.status_code == 200 and len(model.content) > 1000
