"""--dask: parsed and refused before any work; a scheduler that is not there; dask imported only with it."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from engine.contract import problems as P
from engine.distributed.session import DaskAddress, DaskSession
from engine.errors import BadInput
from tests.engine.helpers import REPO, no_files_left, run_cli


@pytest.mark.parametrize("text,workers,scheduler", [("local:1", 1, None), ("local:16", 16, None),
                                                    ("tcp://127.0.0.1:8786", None, "tcp://127.0.0.1:8786"),
                                                    ("tcp://sched.lab.org:1", None, "tcp://sched.lab.org:1"),
                                                    ("tcp://[::1]:8786", None, "tcp://[::1]:8786")])
def test_addresses(text, workers, scheduler):
    address = DaskAddress.parse(text)
    assert (address.workers, address.scheduler, address.local) == (workers, scheduler, workers is not None)


@pytest.mark.parametrize("text", ["local:0", "local:", "local:-1", "local:2x", "tcp://host", "tcp://host:0",
                                  "tcp://host:65536", "http://host:8786", "host:8786", "", "tcp://:8786"])
def test_bad_addresses_are_bad_format(text):
    with pytest.raises(BadInput) as info:
        DaskAddress.parse(text)
    assert (info.value.param, info.value.code) == ("dask", P.BAD_FORMAT)


@pytest.mark.parametrize("tool", ["cluster", "predict", "sweep", "segment", "stats"])
def test_a_bad_dask_value_stops_every_tool_before_any_work(tool, tmp_path, kampala_z19, kampala_buildings):
    model = tmp_path / "m.pt"
    model.write_bytes(b"")
    run = tmp_path / "run.gpkg"
    run.write_bytes(b"")
    out = tmp_path / "o.gpkg"
    args = {"cluster": [kampala_z19, "--out", out], "sweep": [kampala_z19, "--out", out],
            "predict": [model, kampala_z19, "--out", out],
            "segment": [kampala_z19, "--model", model, "--out", out],
            "stats": [run, "--buildings", kampala_buildings]}[tool]
    proc = run_cli(tool, *args, "--dask", "local:0", "--progress", "json", check=2)
    event = json.loads(proc.stdout.splitlines()[-1])
    assert (event["param"], event["code"]) == ("dask", P.BAD_FORMAT), proc.stdout
    assert "--dask" in proc.stderr and "local:N" in proc.stderr
    assert {p.name for p in tmp_path.iterdir()} == {"m.pt", "run.gpkg"} and no_files_left(tmp_path / "cache")


def test_no_scheduler_there_is_bad_input_naming_dask(monkeypatch):
    from engine.distributed import session

    monkeypatch.setattr(session, "CONNECT_TIMEOUT_S", 1.0)
    with pytest.raises(BadInput) as info:
        DaskSession.start(DaskAddress.parse("tcp://127.0.0.1:9"))
    assert (info.value.param, info.value.code) == ("dask", P.NOT_FOUND)
    assert "no Dask scheduler answers" in str(info.value)


def test_dask_is_imported_only_with_dask(kampala_z19):
    """The CLI stays fast: a run without --dask imports neither dask nor distributed."""
    code = ("import sys; from engine.cli.main import main; "
            f"main(['probe', {str(kampala_z19)!r}, '--tile-size', '64px']); "
            "from engine.tools import cluster, predict, segment, stats, sweep; "
            "print('dask' in sys.modules or 'distributed' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == "False"


def test_the_service_leaves_dask_to_its_server():
    """--dask is no input of a process: a client never makes the server start workers or connect elsewhere."""
    from engine.contract.tools import TOOLS
    from engine.service.processes import description

    for name in ("cluster", "predict", "sweep", "segment", "stats", "probe"):
        assert "dask" in TOOLS[name].names()
        assert "dask" not in description(TOOLS[name])["inputs"]
