"""The plugin runs the engine on an engine server (issue 13 part 5), in real QGIS.

- the request a remote run sends: named inputs from the command line, every input file (a Shapefile with its
  sidecars) streamed from disk in a multipart body, received whole by a small recording HTTP server;
- the Engine setting: the mode and the URL in the settings, the token in QGIS's authentication database only;
- against a real server (``python -m engine serve`` with a token file, started here): the dock runs a cluster job
  there and loads its layers styled as after a local run, cancels one (no file left, the job dismissed), marks
  the widget of a bad input the engine found there; errors name the input, the token or the URL; Processing runs
  on the server too.
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

from .helpers import (
    BUILDINGS,
    REPO,
    SAMPLE,
    clean_settings,
    engine_here,
    make_dock,
    project_layer_names,
    sample_layers,
    set_params,
    wait_for,
)

__all__ = ["clean_settings", "engine_here", "make_dock", "sample_layers"]       # fixtures used here

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
    # the server takes plain output names: only its copy is renamed (the results come back keyed)
    assert [remote.server_name(n) for n in ("my run é.gpkg", "..x.gpkg", "é.gpkg", "a.b.pt")] == [
        "my_run.gpkg", "x.gpkg", "out.gpkg", "a_b.pt"]
    # a weights file is uploaded; the word imagenet is sent as text
    values = {"raster": str(SAMPLE), "out": "o.gpkg", "weights": str(BUILDINGS), "pca_dims": "auto", "lr": "0.5"}
    inputs, files = remote.job_inputs(TOOLS["cluster"], values)
    assert inputs == {"out": "o.gpkg", "pca_dims": "auto", "lr": 0.5} and ("weights", BUILDINGS) in files
    # several rasters (one study): each one an upload of the raster input, in order
    req = ClusterRequest(raster=[str(SAMPLE), str(tmp_path / "b.tif")], out=str(tmp_path / "o.gpkg"))
    values = from_argv(TOOLS["cluster"], req.argv())
    assert values["raster"] == [str(SAMPLE), str(tmp_path / "b.tif")]
    _, files = remote.job_inputs(TOOLS["cluster"], values)
    assert files[:2] == [("raster", SAMPLE), ("raster", tmp_path / "b.tif")]


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


# -- against the real server ---------------------------------------------------------------------------------------
TOKEN = "test-token-of-the-remote-runner-0123456789"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def engine_server(tmp_path_factory):
    """``python -m engine serve`` with a token file, on a free port, until the module's tests are done."""
    import os
    import subprocess
    import sys
    import time
    import urllib.request

    folder = tmp_path_factory.mktemp("server")
    (folder / "tokens").write_text(f"tests: {TOKEN}\n", encoding="utf-8")
    python = REPO / ".venv" / "bin" / "python"
    port = free_port()
    env = dict(os.environ, URBANFORM_CACHE=str(folder / "cache"))
    with open(folder / "server.log", "wb") as log:
        proc = subprocess.Popen([str(python if python.exists() else sys.executable), "-m", "engine", "serve",
                                 "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(folder / "data"),
                                 "--token-file", str(folder / "tokens"), "--log-level", "warning"],
                                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        end = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(url + "/", timeout=2) as answer:
                    landing = json.loads(answer.read())
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < end, (folder / "server.log").read_text()
                time.sleep(0.2)
        yield {"url": url, "version": landing["version"], "log": folder / "server.log"}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def server_jobs(url: str) -> list[dict]:
    from urbanform.plugin.runner import remote

    return remote.get_json(remote.Server(url, TOKEN), "jobs")["jobs"]


@pytest.fixture
def remote_dock(make_dock, auth_db, engine_server):
    """A dock set (through its widgets) to run on the test server with its token; it checked the server."""
    dock = make_dock()
    choice = dock.engineChoice
    choice.modeCombo.setCurrentIndex(choice.modeCombo.findData("server"))
    choice.urlEdit.setText(engine_server["url"])
    choice.urlEdit.editingFinished.emit()
    choice.tokenEdit.setText(TOKEN)
    choice.tokenEdit.editingFinished.emit()
    assert choice.tokenEdit.text() == "" and "saved" in choice.tokenEdit.placeholderText()
    assert dock.enginePython.isHidden() and not choice.urlEdit.isHidden()      # the server's rows, not the Python
    assert wait_for(lambda: "devices: " in dock.engineLabel.text(), 60), dock.engineLabel.text()
    return dock


def run_dock(dock, timeout: float = 120) -> bool:
    ended = []
    dock.runFinished.connect(ended.append)
    assert dock.run(), dock.problemsLabel.text()
    assert wait_for(lambda: bool(ended), timeout), dock.statusLabel.text()
    dock.runFinished.disconnect()
    return ended[0]


def test_the_dock_runs_a_cluster_job_on_the_server_and_loads_its_layers(remote_dock, engine_server, sample_layers,
                                                                        tmp_path, qgis_iface):
    from qgis.core import Qgis, QgsProject

    dock = remote_dock
    version = engine_server["version"]
    assert dock.engineLabel.text().startswith(f"Server {engine_server['url']}, Urban Form Mapper {version}")
    assert "devices: cpu" in dock.engineLabel.text() and "torch" in dock.engineLabel.text()
    out = tmp_path / "out" / "remote run.gpkg"             # a name the server would not take as it is
    out.parent.mkdir()
    set_params(dock, out, k=3, backbone="efficientnet_lite0", weights="imagenet", tile=64)
    assert wait_for(lambda: dock.runButton.isEnabled(), 10), dock.problemsLabel.text()
    assert dock.estimateLabel.text() == f"Runs on the engine server {engine_server['url']}"
    progress = []
    dock.progressBar.valueChanged.connect(progress.append)
    task_status = []
    assert run_dock_watching(dock, task_status) is True, dock.statusLabel.text()
    # progress and status came from the job (the upload, the engine's stages, the download)
    assert progress and max(progress) == 100
    assert any(s.startswith("upload") for s in task_status) and any(s.startswith("download") for s in task_status)
    # the results are the local files the run names (its model too, for predict), loaded and styled as after a
    # local run (QML next to them)
    assert sorted(p.name for p in out.parent.iterdir() if p.suffix != ".qml") == [
        "remote run.gpkg", "remote run_clusters.tif", "remote run_manifest.json", "remote run_model.pt",
        "remote run_quicklook.png"]
    group = QgsProject.instance().layerTreeRoot().findGroup("remote run")
    assert group is not None and [c.name() for c in group.children()] == ["remote run tiles",
                                                                         "remote run clusters (raster)"]
    tiles, raster = (node.layer() for node in group.children())
    assert tiles.featureCount() == 96 and tiles.source().startswith(str(out))
    assert tiles.renderer().type() == "categorizedSymbol" and len(tiles.renderer().categories()) == 3
    assert raster.renderer().type() == "paletted" and len(raster.renderer().classes()) == 3
    del tiles, raster, group
    assert any("remote run: 96 tiles" in m for m in qgis_iface.messageBar().get_messages(Qgis.Success))
    # the job was dismissed on the server once its results were here
    jobs = [job for job in server_jobs(engine_server["url"]) if job["processID"] == "cluster"]
    assert [job["status"] for job in jobs] == ["dismissed"]


def run_dock_watching(dock, statuses: list) -> bool:
    """run_dock, keeping every status line the running task sent."""
    ended = []
    dock.runFinished.connect(ended.append)
    assert dock.run(), dock.problemsLabel.text()
    dock.task.statusChanged.connect(statuses.append)
    assert wait_for(lambda: bool(ended), 120), dock.statusLabel.text()
    dock.runFinished.disconnect()
    return ended[0]


def test_cancel_dismisses_the_job_and_leaves_no_file(remote_dock, engine_server, sample_layers, tmp_path,
                                                     qgis_iface):
    from dataclasses import replace

    dock = remote_dock
    out = tmp_path / "out"
    out.mkdir()
    original = dock.request
    dock.request = lambda: replace(original(), extra=["--batch-size", "2"])     # slow enough to cancel
    set_params(dock, out / "c.gpkg", backbone="resnet50", weights="none", tile=32, k=3)
    ended = []
    dock.runFinished.connect(ended.append)
    before = project_layer_names()
    known = {job["jobID"] for job in server_jobs(engine_server["url"])}
    assert dock.run(), dock.problemsLabel.text()
    assert wait_for(lambda: dock.statusLabel.text().startswith("features"), 120), dock.statusLabel.text()
    dock.cancelButton.click()
    assert wait_for(lambda: bool(ended), 60) and ended == [False]
    assert "Cancelled" in dock.statusLabel.text(), dock.statusLabel.text()
    assert list(out.iterdir()) == [] and project_layer_names() == before
    jobs = [job for job in server_jobs(engine_server["url"]) if job["jobID"] not in known]
    assert [(job["processID"], job["status"]) for job in jobs] == [("cluster", "dismissed")]


def test_a_bad_input_the_engine_finds_on_the_server_marks_its_widget(remote_dock, sample_layers, tmp_path):
    from urbanform.plugin.ui import marks

    dock = remote_dock
    (tmp_path / "out").mkdir()
    set_params(dock, tmp_path / "out" / "few.gpkg", k=100, backbone="efficientnet_lite0", weights="imagenet")
    assert dock.runButton.isEnabled(), dock.problemsLabel.text()      # no tile count here: the server finds it
    assert run_dock(dock) is False
    expected = "Clusters (K): 100 is larger than the number of valid tiles (96)."
    assert dock.kSpin.property(marks.PROBLEM) == "k:out_of_range"
    assert dock.statusLabel.text().startswith(f"Failed: {expected}"), dock.statusLabel.text()
    assert list((tmp_path / "out").iterdir()) == []


def test_the_dock_says_a_wrong_token_and_where_to_set_it(make_dock, auth_db, engine_server, sample_layers, tmp_path,
                                                         qgis_iface):
    from qgis.core import Qgis

    dock = make_dock()
    choice = dock.engineChoice
    choice.modeCombo.setCurrentIndex(choice.modeCombo.findData("server"))
    choice.urlEdit.setText(engine_server["url"])
    choice.urlEdit.editingFinished.emit()
    choice.tokenEdit.setText("not-the-servers-token-0123")
    choice.tokenEdit.editingFinished.emit()
    set_params(dock, tmp_path / "w.gpkg")
    assert wait_for(lambda: "refused the token" in dock.engineLabel.text(), 60), dock.engineLabel.text()
    assert dock.engineLabel.text().startswith("Engine server not usable") and not dock.engineGroup.isCollapsed()
    assert not dock.runButton.isEnabled() and "under Engine (Runs on: Server)" in dock.problemsLabel.text()
    assert dock.run() is False
    assert any("refused the token" in m for m in qgis_iface.messageBar().get_messages(Qgis.Critical))
    # the right token: Check asks again and the server is usable
    choice.tokenEdit.setText(TOKEN)
    choice.tokenEdit.editingFinished.emit()
    assert wait_for(lambda: "devices: " in dock.engineLabel.text(), 60), dock.engineLabel.text()
    assert wait_for(lambda: dock.runButton.isEnabled(), 10), dock.problemsLabel.text()
    # back to this computer: the Python and the set-up rows again, and the local engine's check
    choice.modeCombo.setCurrentIndex(choice.modeCombo.findData("local"))
    assert not dock.enginePython.isHidden() and choice.urlEdit.isHidden()
    assert wait_for(lambda: "torch" in dock.engineLabel.text() and "Server" not in dock.engineLabel.text(), 120)


def test_errors_name_the_input_the_token_or_the_url(urbanform, engine_server, tmp_path):
    from urbanform.engine.contract.progress import EXIT_BAD_INPUT
    from urbanform.plugin.runner import remote

    url = engine_server["url"]
    args = ["cluster", str(SAMPLE), "--out", str(tmp_path / "o.gpkg"), "--progress", "json"]
    # a bad input the server's checks refuse before any work: named by its parameter and code
    result = remote.run_remote(remote.Server(url, TOKEN), [*args, "--k", "300"])
    assert (result.returncode, result.param, result.code) == (EXIT_BAD_INPUT, "k", "out_of_range")
    assert result.problem is not None and "300 is out of range" in result.message
    # an input file that is not there: named before anything is sent
    result = remote.run_remote(remote.Server(url, TOKEN), ["cluster", str(tmp_path / "gone.tif"), *args[2:]])
    assert (result.returncode, result.param, result.code) == (EXIT_BAD_INPUT, "raster", "not_found")
    # a wrong or missing token: said so, with where to set it
    for token in ("wrong-token-0123456789", ""):
        result = remote.run_remote(remote.Server(url, token), args)
        assert not result.ok and "refused the token" in result.message and "under Engine" in result.message
        assert remote.server_check(remote.Server(url, token))["error"] == result.message
    # a server that is not there
    result = remote.run_remote(remote.Server(f"http://127.0.0.1:{free_port()}", TOKEN), args)
    assert not result.ok and "cannot be reached" in result.message and "server URL" in result.message
    assert list(tmp_path.iterdir()) == []


def test_processing_runs_on_the_server_too(urbanform, qgis_processing, auth_db, engine_server, tmp_path):
    import processing
    from qgis.core import QgsProcessingFeedback, QgsVectorLayer

    from urbanform.plugin.processing import cluster
    from urbanform.plugin.provider import UrbanFormProvider
    from urbanform.plugin.requests import BACKBONES
    from urbanform.plugin.runner import server_settings

    server_settings.set_mode(server_settings.SERVER)
    server_settings.set_url(engine_server["url"])
    assert server_settings.save_token(TOKEN) is None
    registry = QgsApplication.processingRegistry()
    assert registry.addProvider(UrbanFormProvider())
    try:
        out = tmp_path / "p.gpkg"
        feedback = QgsProcessingFeedback()
        result = processing.run("urbanform:cluster", {
            "INPUT": str(SAMPLE), "K": 3, "BACKBONE": BACKBONES.index("efficientnet_lite0"),
            "WEIGHTS": cluster.WEIGHT_CHOICES.index("imagenet"), "OUTPUT": str(out)}, feedback=feedback)
    finally:
        registry.removeProvider("urbanform")
    assert result["OUTPUT"] == str(out) and Path(result["CLUSTER_RASTER"]).is_file()
    tiles = QgsVectorLayer(f"{out}|layername=tiles", "tiles", "ogr")
    assert tiles.isValid() and tiles.featureCount() == 96
    assert feedback.progress() > 90
