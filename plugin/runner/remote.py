"""Run one engine command as a job on an Urban Form Mapper server (``python -m engine serve``), stdlib only.

The server speaks OGC API - Processes: a process per engine tool, jobs that
report their progress, results to download. ``run_remote(server, args, ...)``
takes the same engine command line (``args``, as a request's ``argv()``
builds it) and callbacks as :func:`plugin.runner.engine_process.run_engine`
and returns the same :class:`EngineResult`, so the dock's task and the
Processing algorithms do not care where the engine runs:

1. the command line becomes named inputs (``engine.contract.params.from_argv``);
   every input file (a raster, a vector layer with a Shapefile's sidecars, a
   model) is uploaded in a ``multipart/form-data`` body streamed from disk in
   chunks, an output file is sent as its name only, working folders (the
   feature cache) are left to the server;
2. the job is submitted asynchronously and its status polled every
   ``POLL_S`` seconds; each change is passed to ``on_event`` as the engine's
   own progress event (``stage``, ``done``, ``total``, ``message``), so the
   progress bar and status line work as for a local run; uploads and
   downloads report the stages ``upload`` and ``download`` (a message, no
   counts: they never move a tool's progress bar);
3. cancelling dismisses the job (``DELETE /jobs/{id}``);
4. on success every result is downloaded to the local path the plugin
   expects (``output_files`` of the local values; the server keys its results
   the same way), each under a temporary name first and renamed only when all
   have arrived, so a failed or cancelled run leaves nothing half-written;
   the job is then dismissed on the server (its files are removed there).

Errors come back as the engine's: a bad input the server pins on a
parameter gives exit code EXIT_BAD_INPUT with its ``param`` and ``code`` (the
dock marks the widget); a refused token and an unreachable server say where
to fix them. Nothing here touches Qt: it runs on a worker thread.
"""
from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from ...engine.contract.outputs import partial_name
from ...engine.contract.params import (BOOL, FLOAT, FOLDER, INPUT_FILES, INT, OUT_FILE, OUT_FOLDER, Tool, from_argv,
                                      output_files)
from ...engine.contract.problems import NOT_FOUND
from ...engine.contract.progress import EXIT_BAD_INPUT, EXIT_CANCELLED, EXIT_FAILED, status_text
from ...engine.contract.runner import EngineResult
from ...engine.contract.tools import TOOLS

POLL_S = 0.5                  # how often the job's status is asked
CHUNK = 1 << 20               # bytes read from a file (upload) or a response (download) at a time
TIMEOUT_S = 60.0              # one request without an answer for this long has failed
RETRY_S = 30.0                # the server may be restarting: polling gives up after this long without an answer
SIDECARS = {".shp": (".shx", ".dbf", ".prj", ".cpg")}    # files that travel with an input file of this suffix
WHERE_TO_SET = "in the Urban Form Mapper panel under Engine (Runs on: Server)"
EVENT_KEYS = ("stage", "done", "total", "message", "step", "steps")   # the engine's progress event fields


@dataclass(frozen=True)
class Server:
    """An engine server: its base URL (``http://gpu-box:8000``) and the token it expects (empty: none)."""

    url: str
    token: str = ""

    def endpoint(self, path: str) -> str:
        """``jobs/abc`` -> ``http://gpu-box:8000/jobs/abc`` (a server under a path prefix keeps it)."""
        return urllib.parse.urljoin(self.url.rstrip("/") + "/", path.lstrip("/"))

    def headers(self, url: str) -> dict:
        """The token, for URLs of this server only (a result link elsewhere never receives it)."""
        if self.token and _origin(url) == _origin(self.url):
            return {"Authorization": f"Bearer {self.token}"}
        return {}


def progress_event(status: dict) -> dict:
    """The engine's progress event in a job's status info: its stage, done, total and message (the server's
    message is the whole status line, ``features 12/96: ...``: the engine's own message is what follows)."""
    event = {k: status[k] for k in EVENT_KEYS if status.get(k) is not None}
    message = str(event.get("message") or "")
    prefix = status_text({k: v for k, v in event.items() if k != "message"})
    if message == prefix:
        message = ""
    elif message.startswith(prefix + ": "):
        message = message[len(prefix) + 2:]
    event["message"] = message
    return event


class Cancelled(Exception):
    """The user cancelled while a file was being uploaded or downloaded."""


class ServerError(Exception):
    """A request the server refused or could not answer; ``status`` 0 when it was not reached at all."""

    def __init__(self, message: str, status: int = 0, problem: dict | None = None):
        super().__init__(message)
        self.status = status
        self.problem = problem or {}


# -- the request: named inputs and the files to upload --------------------------------------------------------
def job_inputs(tool: Tool, values: dict) -> tuple[dict, list[tuple[str, Path]]]:
    """(JSON inputs, files to upload as (input name, path)) for the named ``values`` of a command line.

    An input file goes as an upload (with its sidecars); a word that input also takes (``--weights imagenet``)
    as text. An output file goes as its name only: the server writes into the job's folder. Working and output
    folders, and CLI-only options (``--progress``), are left out. Numbers go as JSON numbers where they are
    numbers (``"auto"`` stays text), flags as booleans, the rest as the CLI's text.
    """
    inputs: dict = {}
    files: list[tuple[str, Path]] = []
    for param in tool.params:
        if param.name not in values or not param.api or param.type in (FOLDER, OUT_FOLDER):
            continue
        value = values[param.name]
        if param.type in INPUT_FILES and param.many and isinstance(value, list):     # several rasters: a study
            files += [(param.name, path) for each in value for path in with_sidecars(Path(each))]
        elif param.type in INPUT_FILES and value not in param.words:
            files += [(param.name, path) for path in with_sidecars(Path(value))]
        elif param.type == OUT_FILE:
            inputs[param.name] = server_name(Path(value).name)
        elif param.type == BOOL:
            inputs[param.name] = bool(value)
        elif param.type in (INT, FLOAT):
            inputs[param.name] = _number(value, param.type)
        else:
            inputs[param.name] = value
    return inputs, files


def server_name(name: str) -> str:
    """An output's file name as the server takes it (letters, digits, ``._-``, no folders): ``my run.gpkg`` ->
    ``my_run.gpkg``. Only the server's copy is named so: the results come back keyed, to the local names."""
    stem, suffix = os.path.splitext(name)
    safe = re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_-")[:100] or "out"
    return safe + re.sub(r"[^A-Za-z0-9.]+", "", suffix)[:12]


def with_sidecars(path: Path) -> list[Path]:
    """``roads.shp`` -> roads.shp and those of roads.shx, .dbf, .prj, .cpg that exist (any case of suffix)."""
    found = [path]
    for suffix in SIDECARS.get(path.suffix.lower(), ()):
        for candidate in (path.with_suffix(suffix), path.with_suffix(suffix.upper())):
            if candidate.is_file():
                found.append(candidate)
                break
    return found


def _number(text, kind: str):
    try:
        number = float(text)
    except (TypeError, ValueError):
        return text                                    # a word: auto, none
    if kind == INT and number == int(number):
        return int(number)
    return number


class MultipartBody:
    """A ``multipart/form-data`` body that streams its files from disk, ``CHUNK`` bytes at a time.

    ``fields``: (name, text) parts; ``files``: (name, path) parts, the file name being the path's. ``length``
    is known before the first byte is sent (the request's Content-Length), so nothing is read into memory
    whole. Iterating it yields the body; ``on_bytes(sent, total, name)`` follows the files' bytes and may raise
    (Cancelled) to stop the upload.
    """

    def __init__(self, fields: list[tuple[str, str]], files: list[tuple[str, Path]], boundary: str | None = None,
                 on_bytes: Callable[[int, int, str], None] | None = None):
        self.boundary = boundary or uuid.uuid4().hex
        self.on_bytes = on_bytes
        self.parts: list[tuple[bytes, bytes | Path, int]] = []          # (head, text or file, size in bytes)
        for name, text in fields:
            data = text.encode("utf-8")
            self.parts.append((self._head(name, None, "application/json"), data, len(data)))
        for name, path in files:
            path = Path(path)
            self.parts.append((self._head(name, path.name, "application/octet-stream"), path,
                               os.path.getsize(path)))
        self.closing = f"--{self.boundary}--\r\n".encode("ascii")
        self.file_bytes = sum(size for _, content, size in self.parts if isinstance(content, Path))

    def _head(self, name: str, filename: str | None, content_type: str) -> bytes:
        disposition = f'form-data; name="{_quoted(name)}"'
        if filename is not None:
            disposition += f'; filename="{_quoted(filename)}"'
        return (f"--{self.boundary}\r\nContent-Disposition: {disposition}\r\nContent-Type: {content_type}\r\n\r\n"
                .encode("utf-8"))

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    @property
    def length(self) -> int:
        """The body's size in bytes (the Content-Length), from the files' sizes when the body was made."""
        return sum(len(head) + size + 2 for head, _, size in self.parts) + len(self.closing)

    def __iter__(self) -> Iterator[bytes]:
        sent = 0
        for head, content, size in self.parts:
            yield head
            if isinstance(content, Path):
                read = 0
                with open(content, "rb") as stream:
                    while True:
                        chunk = stream.read(CHUNK)
                        if not chunk:
                            break
                        read += len(chunk)
                        sent += len(chunk)
                        if read > size:
                            raise OSError(f"{content} grew while it was being uploaded; run again.")
                        if self.on_bytes is not None:
                            self.on_bytes(sent, self.file_bytes, content.name)
                        yield chunk
                if read != size:
                    raise OSError(f"{content} shrank while it was being uploaded; run again.")
            else:
                yield content
            yield b"\r\n"
        yield self.closing


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.0f} MB" if size >= 1e7 else f"{size / 1e6:.1f} MB"


def _quoted(text: str) -> str:
    """A name fit for a quoted header parameter (the HTML form encoding of quotes and line breaks)."""
    return text.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


# -- HTTP --------------------------------------------------------------------------------------------------------
def _origin(url: str) -> tuple:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme, parts.hostname, parts.port or {"http": 80, "https": 443}.get(parts.scheme)


def request(server: Server, method: str, url: str, body=None, headers: dict | None = None,
            timeout: float = TIMEOUT_S):
    """Send one request; the open response (2xx), else ServerError with the server's problem details."""
    url = url if urllib.parse.urlsplit(url).scheme else server.endpoint(url)
    all_headers = {"Accept": "application/json", **server.headers(url), **(headers or {})}
    req = urllib.request.Request(url, data=body, headers=all_headers, method=method)
    try:
        return urllib.request.urlopen(req, timeout=timeout)          # noqa: S310 - the user's own server URL
    except urllib.error.HTTPError as exc:
        raise _http_error(server, exc) from None
    except (urllib.error.URLError, OSError) as exc:
        if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, Cancelled):
            raise exc.reason from None
        reason = getattr(exc, "reason", None) or exc
        raise ServerError(f"The engine server {server.url} cannot be reached ({reason}). Check the server URL "
                          f"{WHERE_TO_SET}, and that the server is running.") from None


def get_json(server: Server, url: str, timeout: float = TIMEOUT_S) -> dict:
    with request(server, "GET", url, timeout=timeout) as response:
        return _json(response.read())


def _json(data: bytes) -> dict:
    try:
        value = json.loads(data.decode("utf-8") or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _http_error(server: Server, exc: urllib.error.HTTPError) -> ServerError:
    try:
        problem = _json(exc.read())
    except OSError:
        problem = {}
    finally:
        exc.close()
    detail = str(problem.get("detail") or problem.get("title") or exc.reason or "")
    if exc.code == 401:
        return ServerError(f"The engine server {server.url} refused the token (HTTP 401): it is wrong or missing. "
                           f"Set the server's token {WHERE_TO_SET}.", 401, problem)
    if exc.code == 403:
        return ServerError(f"The engine server {server.url} does not allow this (HTTP 403): {detail}", 403, problem)
    return ServerError(f"The engine server answered {exc.code}: {detail}", exc.code, problem)


# -- one run -------------------------------------------------------------------------------------------------------
def run_remote(server: Server, args: list[str], on_event: Callable[[dict], None] | None = None,
               is_cancelled: Callable[[], bool] = lambda: False, grace: float = 30.0,
               outputs: list[Path] | None = None, on_start: Callable[[int], None] | None = None,
               poll: float = POLL_S) -> EngineResult:
    """Run the engine command ``args`` (``[TOOL, ...]``) as a job on ``server``; its EngineResult.

    As ``run_engine`` (``outputs``, ``grace`` and ``on_start`` are for a local process and not needed here:
    the files come from the contract's output names, and a job is dismissed at once).
    """
    tool = TOOLS.get(args[0]) if args else None
    if tool is None:
        return _failed(f"The engine has no tool {args[0] if args else ''!r}.", "")
    if not server.url.strip():
        return _failed(f"No engine server URL is set: set it {WHERE_TO_SET}, or run on this computer.", tool.name)
    try:
        values = from_argv(tool, args)
    except ValueError as exc:
        return _failed(str(exc), tool.name)
    return _Job(server, tool, values, on_event, is_cancelled, poll).run()


def _failed(message: str, tool: str, exit_code: int = EXIT_FAILED, **fields) -> EngineResult:
    """A run that ended with ``message`` (as the engine's ``error:`` line); ``fields``: EngineResult's others."""
    return EngineResult(exit_code, f"error: {message}\n", False, tool=tool, **fields)


class _Job:
    """One job on the server, from its submission to its downloaded results."""

    def __init__(self, server: Server, tool: Tool, values: dict, on_event, is_cancelled, poll: float):
        self.server, self.tool, self.values = server, tool, values
        self.on_event = on_event or (lambda event: None)
        self.is_cancelled = is_cancelled
        self.poll = poll
        self.url: str | None = None              # the job's status URL, once submitted
        self.last: dict = {}                     # the engine's last progress event (or its JSON answer)
        self.passed: dict = {}                   # the last event passed to on_event
        self.results_url: str | None = None      # the job's results, while they are being downloaded

    def run(self) -> EngineResult:
        try:
            return self._run()
        except Cancelled:
            self.dismiss()
            return EngineResult(EXIT_CANCELLED, "", True, self.last, tool=self.tool.name)
        except (ServerError, OSError) as exc:      # OSError: a local file that cannot be read or written
            if self.results_url is not None:       # a finished run: its results stay on the server
                return _failed(f"{exc} The results stay on the server: {self.results_url}", self.tool.name,
                               last_event=self.last)
            self.dismiss()
            if isinstance(exc, ServerError):
                return self._refused(exc)
            return _failed(str(exc), self.tool.name, last_event=self.last)

    def _run(self) -> EngineResult:
        missing = self._missing_input()
        if missing is not None:
            return missing
        # the process, asked before any upload: an unknown server, a refused token or an old server without the
        # tool are said at once, not after (or instead of: a server may close the connection) a long upload
        get_json(self.server, f"processes/{urllib.parse.quote(self.tool.name)}")
        status = self.follow(self.submit())
        if status.get("status") == "dismissed":
            return EngineResult(EXIT_CANCELLED, "", True, self.last, tool=self.tool.name)
        if status.get("status") != "successful":
            return self._job_failed(status)
        self.results_url = self._results_url(status)
        results = get_json(self.server, self.results_url)
        if "result" in results and isinstance(results["result"], dict) and "value" in results["result"]:
            self.last = results["result"]["value"]          # a tool that prints JSON: its answer, as run_engine
        else:
            self.download(results)
        self.results_url = None
        self.dismiss()
        return EngineResult(0, "", False, self.last, tool=self.tool.name)

    def _missing_input(self) -> EngineResult | None:
        """A bad input before any upload: an input file that is not there (as the engine would say)."""
        for param in self.tool.params:
            value = self.values.get(param.name)
            if isinstance(value, list):                 # several rasters (a study): the first one missing
                value = next((v for v in value if not Path(v).is_file()), None)
            if param.type in INPUT_FILES and value is not None and value not in param.words \
                    and not Path(value).is_file():
                message = f"{param.title}: {value} does not exist."
                return _failed(message, self.tool.name, EXIT_BAD_INPUT, error=message, param=param.name,
                               code=NOT_FOUND)
        return None

    # -- submit, follow, dismiss ----------------------------------------------------------------------------
    def submit(self) -> dict:
        """Upload the inputs and start the job; its first status (``self.url`` is then its status URL)."""
        inputs, files = job_inputs(self.tool, self.values)

        def on_bytes(sent: int, total: int, name: str) -> None:
            if self.is_cancelled():
                raise Cancelled()
            self._event({"stage": "upload", "message": f"{name} ({_megabytes(sent)} of {_megabytes(total)})"},
                        engine=False)

        body = MultipartBody([("inputs", json.dumps({"inputs": inputs}))], files, on_bytes=on_bytes)
        headers = {"Content-Type": body.content_type, "Content-Length": str(body.length), "Prefer": "respond-async"}
        url = self.server.endpoint(f"processes/{urllib.parse.quote(self.tool.name)}/execution")
        with request(self.server, "POST", url, body=iter(body), headers=headers) as response:
            location = response.headers.get("Location")
            status = _json(response.read())
        if location:
            self.url = urllib.parse.urljoin(url, location)
        elif status.get("jobID"):
            self.url = self.server.endpoint(f"jobs/{status['jobID']}")
        else:
            raise ServerError("The engine server started no job (no Location in its answer); is the URL the "
                              f"Urban Form Mapper server's? Check it {WHERE_TO_SET}.")
        return status

    def follow(self, status: dict) -> dict:
        """Poll the job until it ends, passing its progress on; Cancelled when the user cancels."""
        next_poll = time.monotonic() + self.poll
        lost_since = None
        while status.get("status") not in ("successful", "failed", "dismissed"):
            if self.is_cancelled():
                raise Cancelled()
            if time.monotonic() < next_poll:
                time.sleep(min(0.1, self.poll))
                continue
            next_poll = time.monotonic() + self.poll
            try:
                status = get_json(self.server, self.url)
                lost_since = None
            except ServerError as exc:
                if exc.status:                                # the server answered: that is the answer
                    raise
                lost_since = lost_since or time.monotonic()
                if time.monotonic() - lost_since > RETRY_S:
                    raise ServerError(f"{exc} The job {self.url} may still be running there.") from None
                continue
            self._event(progress_event(status))
        return status

    def dismiss(self) -> None:
        """Dismiss the job (it stops, and the server removes its files); never raises."""
        if self.url is None:
            return
        try:
            request(self.server, "DELETE", self.url, timeout=10).close()
        except (ServerError, Cancelled, OSError):
            pass
        self.url = None

    def _event(self, event: dict, engine: bool = True) -> None:
        """Pass a new event on; the engine's own (not an upload or a download) is kept as the last one."""
        if event.get("stage") and event != self.passed:
            self.passed = event
            if engine:
                self.last = event
            self.on_event(dict(event))

    def _results_url(self, status: dict) -> str:
        for link in status.get("links") or []:
            if isinstance(link, dict) and link.get("rel", "").endswith("results") and link.get("href"):
                return urllib.parse.urljoin(self.url, link["href"])
        return self.url.rstrip("/") + "/results"

    # -- results ---------------------------------------------------------------------------------------------
    def local_files(self, results: dict) -> dict[str, Path]:
        """Result key -> the local file it goes to: the tool's outputs named from the local output path, another
        output file by its parameter's name, and for a tool that writes into a folder, every file into it."""
        files = dict(output_files(self.tool, self.values))
        for param in self.tool.params:
            value = self.values.get(param.name)
            if value is None:
                continue
            if param.type == OUT_FILE and param.name != self.tool.output_param and param.name in results:
                files[param.name] = Path(value)
            if param.type == OUT_FOLDER:
                for key, link in results.items():
                    title = isinstance(link, dict) and link.get("title")
                    if key not in files and title:
                        files[key] = Path(value) / Path(str(title)).name
        return files

    def download(self, results: dict) -> None:
        """Every result the plugin expects, to its local path: all to temporary names first, then renamed."""
        wanted = self.local_files(results)
        links = {key: link for key, link in results.items() if key in wanted and isinstance(link, dict)
                 and link.get("href")}
        if wanted and not links:
            raise ServerError(f"The engine server returned none of the expected results ({', '.join(wanted)}); "
                              f"it returned {', '.join(results) or 'nothing'}.")
        done: list[tuple[Path, Path]] = []
        try:
            for i, (key, link) in enumerate(links.items()):
                final = wanted[key]
                temp = partial_name(final, os.getpid(), "-download")
                done.append((temp, final))
                self._download(urllib.parse.urljoin(self.url, link["href"]), temp, i, len(links), final.name)
            for temp, final in done:
                os.replace(temp, final)
        finally:
            for temp, _final in done:
                try:
                    temp.unlink()
                except OSError:
                    pass

    def _download(self, url: str, temp: Path, index: int, count: int, name: str) -> None:
        self._event({"stage": "download", "message": f"{name} ({index + 1} of {count})"}, engine=False)
        with request(self.server, "GET", url, headers={"Accept": "*/*"}) as response, open(temp, "wb") as out:
            while True:
                if self.is_cancelled():
                    raise Cancelled()
                chunk = response.read(CHUNK)
                if not chunk:
                    break
                out.write(chunk)

    # -- failures --------------------------------------------------------------------------------------------
    def _job_failed(self, status: dict) -> EngineResult:
        error = status.get("error") if isinstance(status.get("error"), dict) else {}
        detail = str(error.get("detail") or status.get("message") or "the job failed on the server")
        code = int(error.get("exit_code") or EXIT_FAILED)
        if code == EXIT_CANCELLED:
            return EngineResult(EXIT_CANCELLED, "", True, self.last, tool=self.tool.name)
        self.dismiss()
        return EngineResult(code, f"error: {detail}\n", False, self.last, tool=self.tool.name,
                            error=detail if code == EXIT_BAD_INPUT else "", param=error.get("param") or None,
                            code=error.get("code") or None)

    def _refused(self, exc: ServerError) -> EngineResult:
        problem = exc.problem
        if exc.status == 400 and problem.get("param"):
            detail = str(problem.get("detail") or exc)
            return EngineResult(EXIT_BAD_INPUT, f"error: {detail}\n", False, self.last, tool=self.tool.name,
                                error=detail, param=problem["param"], code=problem.get("code") or None)
        return _failed(str(exc), self.tool.name, last_event=self.last)


# -- the server's own check ----------------------------------------------------------------------------------------
def server_check(server: Server) -> dict:
    """What the Engine box shows for a server: ``{'ok', 'server', 'version'}`` and the engine's check there
    (``python``, ``torch``, ``devices``...), or ``{'ok': False, 'error'}`` with the fix."""
    if not server.url.strip():
        return {"ok": False, "server": server.url, "error": f"No engine server URL is set: set it {WHERE_TO_SET}."}
    try:
        landing = get_json(server, "")
        body = json.dumps({"inputs": {}}).encode("utf-8")
        with request(server, "POST", f"processes/{TOOLS['check'].name}/execution", body=body,
                     headers={"Content-Type": "application/json"}) as response:
            answer = _json(response.read())
    except ServerError as exc:
        return {"ok": False, "server": server.url, "error": str(exc)}
    value = answer.get("result", {}).get("value") if isinstance(answer.get("result"), dict) else None
    if not isinstance(value, dict):
        return {"ok": False, "server": server.url, "error": f"{server.url} answered, but not as an Urban Form "
                                                             "Mapper engine server; check the URL."}
    info = {**value, "server": server.url, "version": landing.get("version")}
    if not value.get("ok", True):
        info["error"] = f"the server's engine does not work: {value.get('error', 'its check failed')}"
    info["ok"] = bool(value.get("ok", True))
    return info
