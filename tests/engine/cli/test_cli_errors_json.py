"""Bad input found by the engine itself, as a client of ``--progress json`` reads it: exit 2, one ``error:``
line on stderr and one error event on stdout (``engine.contract.progress``) naming the parameter at fault
(the contract's name) and its code, so that each face can name it in its own words. Real subprocesses,
real GeoTIFFs cut with real bytes."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from engine.contract import problems as P
from engine.contract import progress as contract
from engine.contract.tools import TOOLS
from tests.engine.helpers import run_cli, write_raster


def cli(*args):
    return run_cli(*args, process=True)


def events(proc) -> list[dict]:
    """Every stdout line is a JSON event (nothing else is printed there with --progress json)."""
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def error_of(proc) -> dict:
    """The run's error event: exit 2, one stderr line, and the error event last on stdout (and only there)."""
    assert proc.returncode == contract.EXIT_BAD_INPUT, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    seen = events(proc)
    errors = [e for e in seen if contract.is_error(e)]
    assert len(errors) == 1 and seen[-1] is errors[0], seen
    assert set(errors[0]) == {contract.ERROR, contract.PARAM, contract.CODE}
    return errors[0]


def noise(path: Path, shape=(3, 700, 900), **kw) -> Path:
    data = np.random.default_rng(0).integers(1, 256, size=shape, dtype=np.uint8)
    return write_raster(path, data, **kw)


def test_a_truncated_geotiff_names_the_raster_with_its_code(tmp_path):
    whole = noise(tmp_path / "whole.tif", tiled=True, blockxsize=256, blockysize=256, compress="deflate")
    half = tmp_path / "half.tif"
    half.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    out = tmp_path / "out"
    out.mkdir()
    proc = cli("cluster", half, "--out", out / "o.gpkg", "--weights", "none", "--progress", "json")
    error = error_of(proc)
    assert error[contract.PARAM] == "raster" and error[contract.CODE] == P.BAD_FORMAT
    assert "half.tif' is damaged or truncated" in error[contract.ERROR]
    # stderr is the same error, as a terminal shows it: named once ("raster 'x.tif'"), not "RASTER: raster ..."
    assert proc.stderr.strip() == f"error: {error[contract.ERROR]}"
    assert list(out.iterdir()) == []


def test_a_missing_raster_is_not_found_and_its_stderr_line_uses_the_flag(tmp_path):
    proc = cli("cluster", tmp_path / "none.tif", "--out", tmp_path / "o.gpkg", "--progress", "json")
    error = error_of(proc)
    assert error[contract.PARAM] == "raster" and error[contract.CODE] == P.NOT_FOUND
    assert proc.stderr.strip() == f"error: RASTER: {tmp_path / 'none.tif'} does not exist."


def test_k_larger_than_the_valid_tiles_names_k(tmp_path):
    data = np.zeros((3, 256, 256), dtype=np.uint8)            # 16 tiles of 64 px, 3 of them valid (0 is nodata)
    data[:, :64, :192] = np.random.default_rng(1).integers(1, 256, size=(3, 64, 192), dtype=np.uint8)
    raster = write_raster(tmp_path / "mostly_nodata.tif", data, nodata=0)
    proc = cli("cluster", raster, "--out", tmp_path / "o.gpkg", "--k", "4", "--weights", "none",
               "--backbone", "resnet18", "--progress", "json")
    error = error_of(proc)
    assert error[contract.PARAM] == "k" and error[contract.CODE] == P.OUT_OF_RANGE
    assert error[contract.ERROR].startswith("--k 4 is larger than the number of valid tiles (3)")
    assert [p.name for p in tmp_path.iterdir() if p.name != "cache"] == ["mostly_nodata.tif"]


def test_a_contract_problem_comes_with_its_title_and_any_param_is_a_declared_one(tmp_path):
    raster = noise(tmp_path / "r.tif", shape=(3, 128, 128))
    proc = cli("cluster", raster, "--out", tmp_path / "o.gpkg", "--k", "300", "--progress", "json")
    error = error_of(proc)
    assert (error[contract.PARAM], error[contract.CODE]) == ("k", P.OUT_OF_RANGE)
    assert error[contract.ERROR].startswith("Number of clusters (K): 300 is out of range")
    assert proc.stderr.startswith("error: --k: 300 is out of range")
    # an error found after the declared checks (no tile inside the extent): the message is there, and the
    # parameter, where the engine names one, is a declared one (else null)
    proc = cli("cluster", raster, "--out", tmp_path / "o.gpkg", "--extent", "0,0,1,1", "--progress", "json")
    error = error_of(proc)
    assert "no tile centre lies inside" in error[contract.ERROR]
    assert error[contract.PARAM] in (None, *TOOLS["cluster"].names())


def test_without_json_progress_stdout_has_no_error_event(tmp_path):
    proc = cli("cluster", tmp_path / "none.tif", "--out", tmp_path / "o.gpkg", "--progress", "log")
    assert proc.returncode == contract.EXIT_BAD_INPUT and proc.stdout == ""
    assert proc.stderr.strip().startswith("error: RASTER:")


def test_the_error_event_is_declared_once():
    event = contract.error_event("raster 'x.tif' is damaged", "raster", P.BAD_FORMAT)
    assert event == {"error": "raster 'x.tif' is damaged", "param": "raster", "code": "bad_format"}
    assert contract.error_event("no tile") == {"error": "no tile", "param": None, "code": None}
    assert contract.is_error(event) and not contract.is_error({"stage": "open", "done": 0, "total": 0})
