"""The plugin runs the engine on an engine server (issue 13 part 5), in real QGIS.

- the request a remote run sends: named inputs from the command line, every input file (a Shapefile with its
  sidecars) streamed from disk in a multipart body, received whole by a small recording HTTP server;
- the Engine setting: the mode and the URL in the settings, the token in QGIS's authentication database only;
"""
from __future__ import annotations

import email.parser
import email.policy
import http.server
import json
import threading
from pathlib import Path

import pytest
from qgis.core import QgsApplication, QgsSettings

from .helpers import BUILDINGS, SAMPLE, clean_settings

__all__ = ["clean_settings"]          # fixtures used here

MASTER_PASSWORD = "urbanform-tests-master"      # the test profile's (.qgis-settings) authentication database


# -- a server that records what it receives ---------------------------------------------------------------------
class Recorder(http.server.ThreadingHTTPServer):
    """Answers every POST with 201 and a job's status; keeps each request's headers, body and read sizes."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), RecordingHandler)
        self.received: list[dict] = []
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class RecordingHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        self.server.received.append({"method": "GET", "path": self.path, "headers": dict(self.headers)})
        self._answer(200, {"id": self.path.rsplit("/", 1)[-1], "status": "successful"})

    def do_POST(self) -> None:  # noqa: N802 - http.server API
        length = int(self.headers["Content-Length"])
        body = bytearray()
        while len(body) < length:
            body += self.rfile.read(min(65536, length - len(body)))
        self.server.received.append({"method": "POST", "path": self.path, "headers": dict(self.headers),
                                     "body": bytes(body)})
        self._answer(201, {"jobID": "job1", "status": "accepted"}, {"Location": "/jobs/job1"})

    def do_DELETE(self) -> None:  # noqa: N802 - http.server API
        self.server.received.append({"method": "DELETE", "path": self.path, "headers": dict(self.headers)})
        self._answer(200, {"jobID": "job1", "status": "dismissed"})

    def _answer(self, code: int, document: dict, headers: dict | None = None) -> None:
        data = json.dumps(document).encode()
        self.send_response(code)
        for key, value in {"Content-Type": "application/json", "Content-Length": str(len(data)),
                           **(headers or {})}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def recorder():
    server = Recorder()
    yield server
    server.stop()


def multipart_parts(headers: dict, body: bytes) -> list[tuple[str, str | None, bytes]]:
    """(field name, file name, content) of each part of a multipart/form-data body, parsed by the stdlib."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {headers['Content-Type']}\r\n\r\n".encode() + body)
    assert message.is_multipart()
    return [(part.get_param("name", header="content-disposition"), part.get_filename(),
             part.get_payload(decode=True)) for part in message.iter_parts()]


# -- the request ---------------------------------------------------------------------------------------------------
def shapefile(folder: Path) -> Path:
    """A Shapefile with its sidecars (their bytes are all that matters here)."""
    folder.mkdir(parents=True, exist_ok=True)
    for suffix in (".shp", ".shx", ".dbf", ".prj", ".cpg"):
        (folder / f"roads{suffix}").write_bytes(f"roads{suffix} ".encode() * 100)
    return folder / "roads.shp"


def test_job_inputs_are_the_named_values_with_files_to_upload(urbanform, tmp_path):
    from urbanform.engine.contract.params import from_argv
    from urbanform.engine.contract.tools import TOOLS
    from urbanform.plugin.requests import ClusterRequest
    from urbanform.plugin.runner import remote

    roads = shapefile(tmp_path / "roads")
    req = ClusterRequest(raster=str(SAMPLE), out=str(tmp_path / "out" / "run.gpkg"), k=3, tile_size=64,
                         backbone="efficientnet_lite0", weights="imagenet", buildings=str(BUILDINGS), roads=str(roads),
                         extent=(1.0, 2.0, 3.0, 4.5), overwrite=True, extra=["--cache-dir", str(tmp_path / "cache"),
                                                                             "--no-quicklook", "--pca-dims", "auto"])
    values = from_argv(TOOLS["cluster"], req.argv())
    inputs, files = remote.job_inputs(TOOLS["cluster"], values)
    # the output as a file name only, numbers as numbers, a word as text, flags as booleans; no cache, no progress
    assert inputs == {"out": "run.gpkg", "k": 3, "extent": "1.0,2.0,3.0,4.5", "pca_dims": "auto",
                      "overwrite": True, "quicklook": False}, inputs
    assert files == [("raster", SAMPLE), ("buildings", BUILDINGS), *[("roads", roads.with_suffix(s)) for s in
                                                                     (".shp", ".shx", ".dbf", ".prj", ".cpg")]]
    # a weights file is uploaded; the word imagenet is sent as text
    values = {"raster": str(SAMPLE), "out": "o.gpkg", "weights": str(BUILDINGS), "pca_dims": "auto", "lr": "0.5"}
    inputs, files = remote.job_inputs(TOOLS["cluster"], values)
    assert inputs == {"out": "o.gpkg", "pca_dims": "auto", "lr": 0.5} and ("weights", BUILDINGS) in files


def test_the_body_streams_every_file_from_disk_and_arrives_whole(urbanform, tmp_path, recorder, monkeypatch):
    from urbanform.plugin.runner import remote

    monkeypatch.setattr(remote, "CHUNK", 4096)
    roads = shapefile(tmp_path / "roads")
    big = tmp_path / "big image.tif"
    big.write_bytes(bytes(range(256)) * 1000)                       # 256 kB: 63 chunks of 4 kB
    files = [("raster", big), *[("roads", p) for p in remote.with_sidecars(roads)]]
    seen = []
    body = remote.MultipartBody([("inputs", json.dumps({"inputs": {"k": 3}}))], files,
                                on_bytes=lambda sent, total, name: seen.append((sent, total, name)))
    chunks = list(body)
    assert max(len(c) for c in chunks) <= 4096                       # never a whole file in memory
    assert sum(len(c) for c in chunks) == body.length
    assert seen[-1][:2] == (body.file_bytes, body.file_bytes) and len(seen) > 60

    server = remote.Server(recorder.url, "tok")
    headers = {"Content-Type": body.content_type, "Content-Length": str(body.length)}
    with remote.request(server, "POST", "processes/cluster/execution", body=iter(body), headers=headers) as answer:
        assert answer.status == 201 and answer.headers["Location"] == "/jobs/job1"
    received = recorder.received[-1]
    assert received["path"] == "/processes/cluster/execution"
    assert received["headers"]["Authorization"] == "Bearer tok"
    assert "Transfer-Encoding" not in received["headers"]               # a Content-Length, not chunks
    parts = multipart_parts(received["headers"], received["body"])
    assert parts[0] == ("inputs", None, b'{"inputs": {"k": 3}}')
    assert [(name, filename) for name, filename, _ in parts[1:]] == [
        ("raster", "big image.tif"), *[("roads", f"roads{s}") for s in (".shp", ".shx", ".dbf", ".prj", ".cpg")]]
    for (_name, _filename, content), (_, path) in zip(parts[1:], files, strict=True):
        assert content == path.read_bytes()


def test_a_file_that_changes_while_it_is_sent_stops_the_upload(urbanform, tmp_path):
    from urbanform.plugin.runner import remote

    path = tmp_path / "a.tif"
    path.write_bytes(b"x" * 10)
    body = remote.MultipartBody([], [("raster", path)])
    stream = iter(body)
    next(stream)                                    # the part's head: the size is known by now
    path.write_bytes(b"x" * 5)
    with pytest.raises(OSError, match="shrank"):
        list(stream)


def test_the_token_goes_to_its_own_server_only(urbanform):
    from urbanform.plugin.runner.remote import Server

    server = Server("http://gpu-box:8000/urbanform/", "t")
    assert server.endpoint("jobs/a") == "http://gpu-box:8000/urbanform/jobs/a"
    assert server.headers("http://gpu-box:8000/urbanform/jobs/a/results/gpkg") == {"Authorization": "Bearer t"}
    assert server.headers("http://elsewhere:8000/jobs/a") == {} and Server("http://gpu-box:8000").headers("x") == {}


# -- the Engine setting --------------------------------------------------------------------------------------------
@pytest.fixture
def auth_db(urbanform):
    """The test profile's authentication database, unlocked with the tests' master password (a profile whose
    database has another one is reset: it is the tests' own)."""
    manager = QgsApplication.authManager()
    assert not manager.isDisabled(), manager.disabledMessage()
    if not manager.setMasterPassword(MASTER_PASSWORD, True):
        manager.clearMasterPassword()
        manager.eraseAuthenticationDatabase(False)
        assert manager.setMasterPassword(MASTER_PASSWORD, True)
    yield manager
    from urbanform.plugin.runner import server_settings

    server_settings.forget_token()


def test_the_token_is_kept_in_the_authentication_database_only(auth_db):
    from urbanform.plugin.runner import server_settings as ss
    from urbanform.plugin.runner.remote import Server

    assert ss.mode() == ss.LOCAL and ss.active_server() is None and not ss.has_token()
    ss.set_mode(ss.SERVER)
    ss.set_url(" http://127.0.0.1:8765/ ")
    assert ss.active_server() == Server("http://127.0.0.1:8765/", "")
    assert ss.save_token("s3cret-token") is None and ss.has_token()
    cfg = ss.authcfg()
    assert cfg in auth_db.configIds() and auth_db.configAuthMethodKey(cfg) == "Basic"
    assert ss.active_server() == Server("http://127.0.0.1:8765/", "s3cret-token")
    # the settings hold the mode, the URL and the configuration's id, and never the token
    qs = QgsSettings()
    qs.sync()
    stored = {key: qs.value(f"urbanform/{key}") for key in ("engine_mode", "server_url", "server_authcfg")}
    assert stored == {"engine_mode": "server", "server_url": "http://127.0.0.1:8765/", "server_authcfg": cfg}
    assert "s3cret-token" not in Path(qs.fileName()).read_text(encoding="utf-8")
    # a new token replaces the old one in the same configuration; forgetting it removes the configuration
    assert ss.save_token("other") is None and ss.authcfg() == cfg and ss.token() == "other"
    ss.forget_token()
    assert not ss.has_token() and cfg not in auth_db.configIds() and ss.token() == ""
    ss.set_mode(ss.LOCAL)
    assert ss.active_server() is None
