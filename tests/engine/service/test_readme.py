"""The README's Server section works as written.

Its code blocks are taken from README.md and run: the curl lines against a live ``python -m engine serve``
started here on a free port (the README's ``127.0.0.1:8000`` becomes that port, ``.venv/bin/python`` this
Python), in a folder holding ``image.tif`` (the Kampala sample) and the server's ``service_data/``, with the tiny
session model as ``service_data/models/buildings.pt``. The commands that need a machine of their own (``make
serve``, the systemd unit, a real training) are parsed by the service's and the engine's own argument parsers.
Skipped without curl (``apt-get install curl``).
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.engine.helpers import REPO, SAMPLE

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

README = REPO / "README.md"
README_URL = "127.0.0.1:8000"


# ----------------------------------------------------------------------------- the README's blocks


def server_blocks() -> list[str]:
    """The indented code blocks of the README's '## Server' section, unindented, in order."""
    section = README.read_text(encoding="utf-8").split("\n## Server", 1)[1].split("\n## ", 1)[0]
    blocks, current = [], []
    for line in section.splitlines():
        if line.startswith("    "):
            current.append(line[4:])
        elif not line.strip() and current:
            current.append("")                    # a blank line inside a block (the systemd unit)
        elif current:
            blocks.append("\n".join(current).strip())
            current = []
    if current:
        blocks.append("\n".join(current).strip())
    return blocks


def block(marker: str) -> str:
    """The one Server block that contains ``marker``."""
    found = [b for b in server_blocks() if marker in b]
    assert len(found) == 1, f"expected one README Server block with {marker!r}, found {len(found)}"
    return found[0]


def commands(text: str) -> list[str]:
    """The command lines of a block: continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n\s*", "", text)
    return [re.sub(r"\s+#\s.*$", "", line).strip() for line in joined.splitlines() if line.strip()]


def json_documents(text: str) -> list:
    """The JSON documents curl printed one after the other (without newlines between them)."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while at < len(text.rstrip()):
        document, end = decoder.raw_decode(text, at)
        found.append(document)
        at = end + len(text[end:]) - len(text[end:].lstrip())
    return found


def for_this_server(text: str, port: int) -> str:
    return text.replace(README_URL, f"127.0.0.1:{port}").replace(".venv/bin/python", shlex.quote(sys.executable))


def run_shell(text: str, cwd: Path, timeout: float = 120) -> str:
    """Run ``text`` with bash -e in ``cwd``; its stdout (the test fails with stdout and stderr otherwise)."""
    proc = subprocess.run(["bash", "-e", "-c", text], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"exit {proc.returncode}\n$ {text}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    return proc.stdout


# ----------------------------------------------------------------------------- a live server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(data_dir: Path, *options: str):
    """``python -m engine serve`` on a free loopback port; (process, port) once it answers."""
    port = free_port()
    log = open(data_dir.parent / f"serve-{port}.log", "w")      # noqa: SIM115 - closed by stop_server
    proc = subprocess.Popen([sys.executable, "-m", "engine", "serve", "--host", "127.0.0.1", "--port", str(port),
                             "--data-dir", str(data_dir), "--log-level", "warning", *options],
                            cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    proc.log = log
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.flush()
            raise AssertionError(f"the server exited ({proc.returncode}): {Path(log.name).read_text()}")
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
            return proc, port
        except httpx.TransportError:
            time.sleep(0.2)
    stop_server(proc)
    raise AssertionError("the server did not answer within 60 s")


def stop_server(proc) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    proc.log.close()


@pytest.fixture(scope="module")
def work(tmp_path_factory, tiny_seg_model):
    """A folder as the README's reader has it: image.tif, and service_data/ with the model in models/."""
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed (apt-get install curl)")
    folder = tmp_path_factory.mktemp("readme")
    shutil.copy(SAMPLE / "kampala_ug_oam_rgb_z19_epsg3857.tif", folder / "image.tif")
    (folder / "service_data" / "models").mkdir(parents=True)
    for f in tiny_seg_model.parent.glob("buildings*"):          # the model and the checkpoint next to it
        shutil.copy(f, folder / "service_data" / "models" / f.name)
    return folder


@pytest.fixture(scope="module")
def server(work):
    proc, port = start_server(work / "service_data")
    yield port
    stop_server(proc)


# ----------------------------------------------------------------------------- the curl lines


def test_buildings_mask_lines(server, work):
    import rasterio

    text = block("/buildings_mask")
    assert "curl -F file=@image.tif http://127.0.0.1:8000/buildings_mask -o mask.tif" in text
    for line in commands(text):
        for name in ("mask.tif", "buildings.gpkg"):
            (work / name).unlink(missing_ok=True)
        run_shell(for_this_server(line, server), work)
        out = work / line.rsplit("-o ", 1)[1]
        if out.suffix == ".tif":
            with rasterio.open(out) as mask, rasterio.open(work / "image.tif") as image:
                assert (mask.width, mask.height, mask.count) == (image.width, image.height, 1), line
        else:
            assert out.read_bytes()[:16] == b"SQLite format 3\x00", f"{line}: {out.read_bytes()[:200]!r}"


def test_models_line_answers_what_its_comment_says(server, work):
    line = next(c for c in block("/models").splitlines() if c.startswith("curl"))
    command, _, comment = line.partition(" # ")
    assert json.loads(run_shell(for_this_server(command, server), work)) == json.loads(comment)


def test_async_job_lines(server, work):
    import geopandas as gpd

    text = block("Prefer: respond-async")
    out = run_shell(for_this_server(text, server), work, timeout=180)
    job, rest = out.split("\n", 1)                             # `echo $job`, then curl's JSON answers
    assert re.fullmatch(rf"http://127\.0\.0\.1:{server}/jobs/[0-9a-f-]{{36}}", job), job
    status, links, dismissed = json_documents(rest)
    assert status["status"] == "successful", status
    assert dismissed["status"] == "dismissed", dismissed
    assert {"gpkg", "tif", "manifest", "quicklook", "model"} == set(links)   # as the README's comment lists
    assert not (work / "service_data" / "jobs" / status["jobID"]).exists()
    tiles = gpd.read_file(work / "clusters.gpkg", layer="tiles")
    k = json.loads(re.search(r"-F 'inputs=(.*?)'", text).group(1))["inputs"]["k"]
    assert tiles["cluster"].nunique() == k


def test_reference_lines(server, work):
    out = run_shell(for_this_server(block('"href"'), server), work)
    answer = json.loads(out)
    assert "result" in answer and isinstance(answer["result"]["value"], dict), answer


def test_token_lines(work, tmp_path):
    make_token, make_serve, use_token = commands(block("secrets.token_urlsafe"))
    run_shell(for_this_server(make_token, 0), tmp_path)
    assert oct((tmp_path / "tokens").stat().st_mode & 0o777) == "0o600"
    options = dict(word.split("=", 1) for word in shlex.split(make_serve)[2:])
    assert options["HOST"] == "0.0.0.0"
    # the same server, kept on loopback here: a token file makes it ask for the token all the same
    proc, port = start_server(tmp_path / "service_data", "--token-file", str(tmp_path / options["TOKEN_FILE"]))
    try:
        assert json.loads(run_shell(for_this_server(use_token, port), tmp_path))["jobs"] == []
        assert httpx.get(f"http://127.0.0.1:{port}/jobs").status_code == 401
    finally:
        stop_server(proc)


# ----------------------------------------------------------------------------- what runs elsewhere


def serve_options(argv: list[str]):
    from engine.service.main import build_parser

    assert argv[:3] == ["-m", "engine", "serve"], argv
    return build_parser().parse_args(argv[3:])


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_serve_lines_run_serve_with_their_options():
    lines = [c for b in server_blocks() for c in commands(b) if c.startswith("make serve")]
    assert len(lines) >= 3
    for line in lines:
        given = dict(word.split("=", 1) for word in shlex.split(line)[2:])
        # -n: print the command only; -o: whatever the state of the venv, do not set it up
        # under `make test` the parent make's MAKELEVEL/MAKEFLAGS would make this one print "make[1]: ..." lines
        env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
        printed = subprocess.run(["make", "-n", "--no-print-directory", "-o", ".venv/.setup-done",
                                  *shlex.split(line)[1:]], cwd=REPO, env=env, capture_output=True, text=True,
                                 check=True).stdout.strip().splitlines()[-1]
        python, *argv = shlex.split(printed)
        assert python == ".venv/bin/python"
        args = serve_options(argv)
        assert args.host == given.get("HOST", "127.0.0.1") and args.port == int(given.get("PORT", 8000))
        assert str(args.data_dir) == given.get("DATA_DIR", "service_data")
        assert args.jobs == (int(given["JOBS"]) if "JOBS" in given else None)
        assert str(args.token_file) == given["TOKEN_FILE"] if "TOKEN_FILE" in given else args.token_file is None


def with_option(argv: list[str], name: str, value: "str | None") -> list[str]:
    """``argv`` with option ``name`` given ``value`` (None: left out)."""
    if name in argv:
        i = argv.index(name)
        argv = argv[:i] + argv[i + 2:]
    return argv + ([name, value] if value is not None else [])


def test_systemd_unit(tmp_path):
    from engine.service.main import config_from

    unit = block("[Unit]")
    keys = dict(line.split("=", 1) for line in unit.splitlines() if "=" in line)
    assert keys["Restart"] == "on-failure" and keys["User"]
    python, *argv = shlex.split(keys["ExecStart"])
    assert python == keys["WorkingDirectory"] + "/.venv/bin/python"
    args = serve_options(argv)
    assert args.host == "0.0.0.0" and args.token_file is not None
    # accepted as it stands once its token file exists, refused beyond loopback without one
    tokens = tmp_path / "tokens"
    tokens.write_text("a-token-of-sixteen-characters-or-more\n")
    here = with_option(with_option(argv, "--token-file", str(tokens)), "--data-dir", str(tmp_path / "data"))
    assert config_from(serve_options(here)).needs_token
    with pytest.raises(ValueError, match="without --token-file"):
        config_from(serve_options(with_option(here, "--token-file", None)))


def test_train_seg_line_parses():
    from engine.cli.parser import build_parser

    line = next(c for c in commands(block("train-seg")) if "train-seg" in c)
    python, *argv = shlex.split(line)
    assert python == ".venv/bin/python" and argv[:2] == ["-m", "engine"]
    args = build_parser().parse_args(argv[2:])
    assert Path(args.out).parent == Path("service_data/models")
    assert os.path.splitext(args.out)[1] == ".pt"
