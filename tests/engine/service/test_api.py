"""The service's endpoints against a real server (uvicorn on 127.0.0.1, a free port) and a real HTTP client:
discovery derived from the tool contract, tokens, bad requests that write nothing, concurrent jobs of four
tokens, synchronous quick tools, and errors that hide the server's paths."""
from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest

from engine.contract.limits import MAX_K, MIN_K
from engine.contract.tools import TOOLS
from engine.service.processes import inputs_of
from tests.engine.helpers import SAMPLE
from tests.engine.service.helpers import TOKENS, Server, assert_ogc_error, submit, wait_for, write_tokens

RASTER = SAMPLE / "kampala_ug_oam_rgb_z19_epsg3857.tif"
MAX_UPLOAD_MB = 3


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("service")
    data = root / "data"
    (data / "data" / "city").mkdir(parents=True)
    shutil.copy(RASTER, data / "data" / "city" / "k.tif")
    (data / "data" / "notes.tif").write_text("not an image\n")
    (root / "outside.tif").write_bytes(RASTER.read_bytes())
    (data / "data" / "link.tif").symlink_to(root / "outside.tif")
    with Server(data, "--token-file", write_tokens(root / "tokens"), "--max-upload-mb", MAX_UPLOAD_MB,
                "--jobs", 2) as running:
        yield running


@pytest.fixture
def ada(server):
    with server.client(TOKENS[0]) as client:
        yield client


def test_landing_page_links_every_part_and_names_the_version(server):
    from engine import __version__

    with server.client() as anyone:                       # the landing page and conformance need no token
        landing = anyone.get("/").json()
        rels = {link["rel"] for link in landing["links"]}
        assert {"self", "service-desc", "service-doc"} <= rels
        assert any(r.endswith("/processes") for r in rels) and any(r.endswith("/job-list") for r in rels)
        assert landing["version"] == __version__
        classes = anyone.get("/conformance").json()["conformsTo"]
        assert any(c.endswith("/conf/core") for c in classes) and any(c.endswith("/conf/dismiss") for c in classes)
        assert anyone.get("/openapi.json").json()["paths"].keys() >= {"/processes/{process_id}/execution",
                                                                      "/jobs/{job_id}", "/buildings_mask"}
        assert "swagger" in anyone.get("/docs").text.lower()


def test_processes_are_the_declared_tools(ada):
    listed = ada.get("/processes").json()["processes"]
    assert [p["id"] for p in listed] == list(TOOLS)
    for tool in TOOLS.values():
        described = ada.get(f"/processes/{tool.name}").json()
        assert list(described["inputs"]) == [p.name for p in inputs_of(tool)]
        assert ("sync-execute" in described["jobControlOptions"]) == tool.quick
        for name, entry in described["inputs"].items():
            assert entry["minOccurs"] == (1 if tool.param(name).required else 0)
    k = ada.get("/processes/cluster").json()["inputs"]["k"]["schema"]
    assert (k["minimum"], k["maximum"], k["default"]) == (MIN_K, MAX_K, TOOLS["cluster"].param("k").default)
    method = ada.get("/processes/cluster").json()["inputs"]["method"]["schema"]
    assert method["enum"] == list(TOOLS["cluster"].param("method").choices)
    assert "progress" not in ada.get("/processes/cluster").json()["inputs"]       # the CLI's own option
    assert set(ada.get("/processes/cluster").json()["outputs"]) >= {"gpkg", "tif", "manifest"}


def test_a_token_is_needed_and_must_be_known(server):
    with server.client() as anonymous:
        assert_ogc_error(anonymous.get("/processes"), 401)
        assert_ogc_error(anonymous.get("/jobs"), 401)
        response = anonymous.post("/processes/probe/execution", json={"inputs": {"raster": "city/k.tif"}})
        assert_ogc_error(response, 401)
        assert response.headers["www-authenticate"] == "Bearer"
    with server.client("wrong-token-0123456789abcdef") as stranger:
        assert_ogc_error(stranger.get("/jobs"), 401)
    assert not any(server.jobs_dir.iterdir())


BAD = {
    "missing required input": ("cluster", {}, 400, "required", "raster"),
    "wrong type": ("cluster", {"raster": "city/k.tif", "k": "abc"}, 400, "out_of_range", "k"),
    "out of range": ("cluster", {"raster": "city/k.tif", "k": 1}, 400, "out_of_range", "k"),
    "bad choice": ("cluster", {"raster": "city/k.tif", "method": "magic"}, 400, "bad_choice", "method"),
    "unknown input": ("cluster", {"raster": "city/k.tif", "rastr": 1}, 400, "unknown", "rastr"),
    "server-side option": ("cluster", {"raster": "city/k.tif", "cache_dir": "/tmp"}, 400, "unknown", "cache_dir"),
    "missing file": ("cluster", {"raster": "city/none.tif"}, 400, "not_found", "raster"),
    "traversal": ("cluster", {"raster": {"href": "../../etc/passwd"}}, 400, "not_allowed", "raster"),
    "traversal inside": ("cluster", {"raster": "city/../../tokens"}, 400, "not_allowed", "raster"),
    "absolute path": ("cluster", {"raster": "/etc/passwd"}, 400, "not_allowed", "raster"),
    "vsicurl": ("cluster", {"raster": "/vsicurl/http://169.254.169.254/latest"}, 400, "not_allowed", "raster"),
    "vsi relative": ("cluster", {"raster": "vsizip/city/k.zip"}, 400, "not_allowed", "raster"),
    "url": ("cluster", {"raster": {"href": "http://127.0.0.1:22/x.tif"}}, 400, "not_allowed", "raster"),
    "file url": ("cluster", {"raster": "file:///etc/passwd"}, 400, "not_allowed", "raster"),
    "link out of the root": ("cluster", {"raster": "link.tif"}, 400, "not_allowed", "raster"),
    "output with a folder": ("cluster", {"raster": "city/k.tif", "out": "../x.gpkg"}, 400, "bad_format", "out"),
    "output suffix": ("cluster", {"raster": "city/k.tif", "out": "x.shp"}, 400, "bad_format", "out"),
    "file as a number": ("cluster", {"raster": 5}, 400, "bad_format", "raster"),
    "unknown process": ("magic", {}, 404, None, None),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_a_bad_request_is_refused_with_an_ogc_exception_and_writes_nothing(ada, server, case):
    process, inputs, status, code, param = BAD[case]
    response = ada.post(f"/processes/{process}/execution", json={"inputs": inputs},
                        headers={"Prefer": "respond-async"})
    assert_ogc_error(response, status, code, param)
    assert not any(server.jobs_dir.iterdir()), list(server.jobs_dir.iterdir())
    assert ada.get("/jobs", params={"processID": process}).json()["jobs"] == []


def test_bad_bodies_are_refused(ada, server):
    assert_ogc_error(ada.post("/processes/probe/execution", content=b"{not json",
                              headers={"content-type": "application/json"}), 400, "bad_format")
    assert_ogc_error(ada.post("/processes/probe/execution", json=[1, 2]), 400, "bad_format")
    assert_ogc_error(ada.post("/processes/probe/execution", content=b"x", headers={"content-type": "text/plain"}),
                     415)
    with open(RASTER, "rb") as f:                          # a file for an input that is not a file
        assert_ogc_error(ada.post("/processes/probe/execution", files={"k": ("k.tif", f)}), 400, "bad_format")
    vrt = b'<VRTDataset rasterXSize="1" rasterYSize="1"><VRTRasterBand band="1"><SimpleSource>' \
          b'<SourceFilename>/etc/passwd</SourceFilename></SimpleSource></VRTRasterBand></VRTDataset>'
    assert_ogc_error(ada.post("/processes/probe/execution", files={"raster": ("x.tif", vrt)}), 400, "not_allowed",
                     "raster")
    assert not any(server.jobs_dir.iterdir())


def test_an_upload_beyond_the_limit_is_refused_before_it_is_stored(ada, server, tmp_path):
    big = tmp_path / "big.tif"
    big.write_bytes(b"\0" * ((MAX_UPLOAD_MB + 1) << 20))
    with open(big, "rb") as f:
        response = ada.post("/processes/probe/execution", files={"raster": ("big.tif", f)})
    body = assert_ogc_error(response, 413)
    assert f"{MAX_UPLOAD_MB} MiB" in body["detail"]
    assert not any(server.jobs_dir.iterdir())


def test_quick_tools_answer_synchronously(ada):
    answer = ada.post("/processes/check/execution", json={"inputs": {}})
    assert answer.status_code == 200, answer.text
    info = answer.json()["result"]["value"]
    assert info["ok"] is True and "cpu" in info["devices"]
    probe = ada.post("/processes/probe/execution", json={"inputs": {"raster": "city/k.tif", "tile_size": "64px"}})
    assert probe.status_code == 200 and probe.json()["result"]["value"]["tiles"] == (768 // 64) * (512 // 64)
    assert ada.get("/jobs", params={"processID": "check,probe"}).json()["jobs"] == []   # answered: nothing kept


def test_a_raster_input_takes_several_references_or_a_folder_as_one_study(ada):
    described = ada.get("/processes/cluster").json()["inputs"]["raster"]
    assert described["maxOccurs"] == "unbounded" and described["minOccurs"] == 1
    assert ada.get("/processes/change").json()["inputs"]["raster_before"]["maxOccurs"] == 1
    for raster in (["city/k.tif", {"href": "city/k.tif"}], "city", [{"href": "city"}]):
        probe = ada.post("/processes/probe/execution", json={"inputs": {"raster": raster, "tile_size": "64px"}})
        assert probe.status_code == 200, probe.text
        assert probe.json()["result"]["value"]["tiles"] == (768 // 64) * (512 // 64)
    assert_ogc_error(ada.post("/processes/probe/execution", json={"inputs": {"raster": ["city/k.tif", "../x.tif"]}}),
                     400, "not_allowed", "raster")
    assert_ogc_error(ada.post("/processes/probe/execution", json={"inputs": {"raster": []}}), 400, param="raster")
    # a folder whose rasters lead out of the data root (the root's own link.tif) is refused as the link is
    with open(RASTER, "rb") as one, open(RASTER, "rb") as two:          # two uploads of one input: one study
        probe = ada.post("/processes/probe/execution", data={"inputs": '{"tile_size": "64px"}'},
                         files=[("raster", ("a.tif", one)), ("raster", ("b.tif", two))])
    assert probe.status_code == 200, probe.text
    assert probe.json()["result"]["value"]["tiles"] == (768 // 64) * (512 // 64)
    body = assert_ogc_error(ada.post("/processes/probe/execution", json={"inputs": {"raster": ["."]}}), 400,
                            "not_allowed", "raster")
    assert "link" in body["detail"]


def test_eight_concurrent_jobs_of_four_tokens_none_lost_each_sees_its_own(server):
    clients = [server.client(token) for token in TOKENS]
    try:
        work = [(clients[i % 4], f"{32 * (1 + i // 4)}px") for i in range(8)]
        with ThreadPoolExecutor(8) as pool:
            infos = list(pool.map(lambda w: submit(w[0], "probe", {"raster": "city/k.tif", "tile_size": w[1]}),
                                  work))
        ids = [info["jobID"] for info in infos]
        assert len(set(ids)) == 8
        for (client, size), job_id in zip(work, ids, strict=True):
            done = wait_for(client, job_id)
            assert done["status"] == "successful", done
            tiles = client.get(f"/jobs/{job_id}/results").json()["result"]["value"]["tiles"]
            side = int(size[:-2])
            assert tiles == (768 // side) * (512 // side)
        for i, client in enumerate(clients):
            own = {j["jobID"] for j in client.get("/jobs", params={"processID": "probe"}).json()["jobs"]}
            assert own == {ids[i], ids[i + 4]}
            other = ids[(i + 1) % 4]
            assert_ogc_error(client.get(f"/jobs/{other}"), 404)
            assert_ogc_error(client.get(f"/jobs/{other}/results"), 404)
            assert_ogc_error(client.delete(f"/jobs/{other}"), 404)
    finally:
        for client in clients:
            client.close()


def test_a_failed_job_says_why_without_the_servers_paths(ada, server):
    info = submit(ada, "cluster", {"raster": "notes.tif", "k": 2})
    done = wait_for(ada, info["jobID"])
    assert done["status"] == "failed" and done["error"]["detail"], done
    assert str(server.data_dir) not in str(done) and "notes.tif" in done["error"]["detail"]
    body = assert_ogc_error(ada.get(f"/jobs/{info['jobID']}/results"), 400 if done["error"]["exit_code"] == 2
                            else 500)
    assert str(server.data_dir) not in body["detail"]
