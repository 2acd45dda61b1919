"""``python -m engine serve --dask ADDRESS`` (issue 14): every job of a tool that declares ``--dask`` runs on the
server's Dask cluster. Checked without a cluster: the server's engine Python is a stand-in script that writes its
command line down and fails, so the job's command line is read, not run."""
from __future__ import annotations

import stat
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from engine.contract.tools import TOOLS  # noqa: E402
from engine.service.app import create_app  # noqa: E402
from engine.service.config import ServiceConfig  # noqa: E402
from engine.contract.dask import argv_with_dask, with_dask  # noqa: E402
from engine.service.main import build_parser, config_from, main  # noqa: E402


def test_serve_takes_a_dask_address_and_refuses_a_bad_one(tmp_path, capsys):
    parse = lambda *a: config_from(build_parser().parse_args(["--data-dir", str(tmp_path), *a]))  # noqa: E731
    assert parse().dask is None
    assert parse("--dask", "local:2").dask == "local:2"
    assert parse("--dask", "tcp://10.0.0.5:8786").dask == "tcp://10.0.0.5:8786"
    for bad in ("local:0", "tcp://host", "dask.example.org:8786"):
        with pytest.raises(ValueError, match="local:N"):
            parse("--dask", bad)
    assert main(["--data-dir", str(tmp_path), "--dask", "local:0"]) == 2
    assert "--dask local:0" in capsys.readouterr().err


def test_the_tools_that_declare_dask_get_it():
    values = {"raster": "r.tif", "out": "o.gpkg"}
    for name in ("cluster", "predict", "sweep", "segment", "stats"):
        assert with_dask(TOOLS[name], values, "local:2")["dask"] == "local:2", name
    assert "dask" not in with_dask(TOOLS["export"], values, "local:2")
    assert with_dask(TOOLS["cluster"], {**values, "method": "deepcluster"}, "local:2")["dask"] == "local:2"
    assert "dask" not in with_dask(TOOLS["probe"], values, "local:2")              # only with --plan
    assert with_dask(TOOLS["probe"], {**values, "plan": True}, "local:2")["dask"] == "local:2"
    assert with_dask(TOOLS["cluster"], values, None) == values
    # the same rule on a command line (the plugin's Engine setting)
    assert argv_with_dask(["cluster", "r.tif", "--out", "o.gpkg"], "local:2")[-2:] == ["--dask", "local:2"]
    assert argv_with_dask(["cluster", "r.tif", "--method", "deepcluster"], "local:2")[-1] == "local:2"
    given = ["cluster", "r.tif", "--dask", "local:1"]
    assert argv_with_dask(given, "local:2") == given
    assert argv_with_dask(["export", "r.gpkg", "o.shp"], "local:2") == ["export", "r.gpkg", "o.shp"]
    assert argv_with_dask(["probe", "r.tif", "--plan"], "tcp://h:8786")[-2:] == ["--dask", "tcp://h:8786"]
    assert argv_with_dask(["probe", "r.tif"], "tcp://h:8786") == ["probe", "r.tif"]


@pytest.fixture
def recorded(tmp_path):
    """A stand-in engine Python that writes its arguments to a file and fails."""
    record = tmp_path / "argv.txt"
    script = tmp_path / "python"
    script.write_text(f'#!/bin/sh\necho "$@" >> {record}\nexit 1\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script, record


def test_a_job_of_the_server_runs_with_its_dask(tmp_path, recorded, kampala_z19):
    script, record = recorded
    config = ServiceConfig(data_dir=tmp_path / "data", dask="local:3", python=str(script))
    with TestClient(create_app(config)) as client:
        assert client.get("/").json()["dask"] == "local:3"
        with open(kampala_z19, "rb") as image:
            answer = client.post("/processes/cluster/execution", headers={"Prefer": "respond-async"},
                                 data={"inputs": '{"inputs": {"k": 2, "tile_size": "128px"}}'},
                                 files={"raster": ("image.tif", image, "image/tiff")})
        assert answer.status_code == 201, answer.text
        job = answer.json()["jobID"]
        deadline = time.monotonic() + 30
        while client.get(f"/jobs/{job}").json()["status"] in ("accepted", "running") and time.monotonic() < deadline:
            time.sleep(0.05)
        # a client cannot choose the cluster: dask is no input of the process
        described = client.get("/processes/cluster").json()["inputs"]
        assert "dask" not in described
    line = record.read_text().split()
    assert line[:3] == ["-m", "engine", "cluster"]
    assert line[line.index("--dask") + 1] == "local:3"
