"""The FastAPI application: OGC API - Processes (Part 1: Core) over the engine's tools, plus the building-mask
shortcut. ``create_app(config)``; ``python -m engine serve`` runs it on uvicorn.

Endpoints: ``/`` (landing), ``/conformance``, ``/processes``, ``/processes/{id}``,
``/processes/{id}/execution``, ``/jobs``, ``/jobs/{id}`` (GET, DELETE), ``/jobs/{id}/results``,
``/jobs/{id}/results/{key}``, ``/buildings_mask``, ``/models``; OpenAPI at ``/openapi.json``, docs at ``/docs``.
Every error is an OGC exception (``application/problem+json``: type, title, status, detail; a bad input adds
``param`` and ``code``) without tracebacks or server paths.
"""
from __future__ import annotations

import json
import logging
import re
import shutil
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..contract import problems as P
from ..contract.outputs import CHECKPOINT
from ..contract.dask import with_dask
from ..contract.params import INPUT_FILES, OUT_FILE, OUT_FOLDER, Param, Tool, check, to_argv
from ..contract.tools import TOOLS
from . import processes as D
from .config import ServiceConfig
from .jobs import JobManager, new_id
from .security import LOCAL_OWNER, RefusedPath, bearer, known, resolve_reference
from .store import ACCEPTED, DISMISSED, FAILED, RUNNING, SUCCESSFUL, Job, JobStore
from .uploads import BadBody, MultipartToDisk, TooLarge

log = logging.getLogger("engine.service")

OGC = "http://www.opengis.net/def/exceptions/ogcapi-processes-1/1.0/"
CONFORMANCE = [
    "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/ogc-process-description",
    "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/json",
    "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/oas30",
    "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/job-list",
    "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/dismiss",
]
PROBLEM_JSON = "application/problem+json"
SEGMENT = "segment"                     # the tool behind /buildings_mask
MASK_TYPES = {"tiff": ("mask", "image/tiff"), "gpkg": ("gpkg", "application/geopackage+sqlite3")}
VRT_MAGIC = (b"<VRTDataset", b"<OGRVRTDataSource")


class OGCError(Exception):
    """An error answered as an OGC exception."""

    def __init__(self, status: int, kind: str, title: str, detail: str, **extra):
        super().__init__(detail)
        self.status, self.kind, self.title, self.detail, self.extra = status, kind, title, detail, extra

    def response(self) -> JSONResponse:
        kind = self.kind if "://" in self.kind else OGC + self.kind
        body = {"type": kind, "title": self.title, "status": self.status, "detail": self.detail, **self.extra}
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        return JSONResponse(body, status_code=self.status, media_type=PROBLEM_JSON, headers=headers)


def bad_input(param: "str | None", code: str, detail: str) -> OGCError:
    return OGCError(400, "invalid-parameter-value", "Bad input", detail, param=param, code=code)


def create_app(config: ServiceConfig) -> FastAPI:
    store = JobStore(_prepared(config).database)
    manager = JobManager(config, store)

    @asynccontextmanager
    async def lifespan(app):  # noqa: ARG001 - FastAPI's signature
        manager.start()
        try:
            yield
        finally:
            await run_in_threadpool(manager.stop)

    app = FastAPI(title="Urban Form Mapper engine", version=__version__, lifespan=lifespan,
                  description="OGC API - Processes over the Urban Form Mapper engine: cluster tiles of a "
                              "very-high-resolution raster by urban form, map buildings, and their statistics.")
    app.state.config, app.state.manager, app.state.store = config, manager, store

    # -- errors: always an OGC exception, never a traceback
    @app.exception_handler(OGCError)
    async def _ogc(request, exc: OGCError):  # noqa: ARG001
        return exc.response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request, exc: StarletteHTTPException):  # noqa: ARG001
        kinds = {404: "not-found", 405: "method-not-allowed"}
        return OGCError(exc.status_code, kinds.get(exc.status_code, "http-error"), str(exc.detail),
                        f"{request.method} {request.url.path}: {exc.detail}").response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc: RequestValidationError):  # noqa: ARG001
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()))
        return bad_input(None, P.BAD_FORMAT, f"{where}: {first.get('msg', 'invalid request')}").response()

    @app.exception_handler(Exception)
    async def _crash(request, exc: Exception):
        log.exception("%s %s failed", request.method, request.url.path)
        return OGCError(500, "server-error", "Server error", "the server failed to answer this request; "
                        "its log has the details").response()

    # -- who is calling
    def owner(request: Request) -> str:
        if not config.needs_token:
            return LOCAL_OWNER
        found = known(config.owners, bearer(request.headers.get("authorization")))
        if found is None:
            given = "a wrong" if request.headers.get("authorization") else "no"
            raise OGCError(401, "unauthorized", "Unauthorized", f"{given} bearer token: send the header "
                           "'Authorization: Bearer <token>' with a token from the server's token file")
        return found

    def base(request: Request) -> str:
        return str(request.base_url).rstrip("/")

    # -- discovery
    @app.get("/", summary="Landing page")
    async def landing(request: Request):
        b = base(request)
        return {"title": "Urban Form Mapper engine", "version": __version__,
                "description": "OGC API - Processes over the Urban Form Mapper engine",
                "dask": config.dask,                 # serve --dask: where the jobs of tools with --dask run
                "links": [{"href": f"{b}/", "rel": "self", "type": "application/json"},
                          {"href": f"{b}/openapi.json", "rel": "service-desc",
                           "type": "application/vnd.oai.openapi+json;version=3.0"},
                          {"href": f"{b}/docs", "rel": "service-doc", "type": "text/html"},
                          {"href": f"{b}/conformance", "rel": "http://www.opengis.net/def/rel/ogc/1.0/conformance"},
                          {"href": f"{b}/processes", "rel": "http://www.opengis.net/def/rel/ogc/1.0/processes"},
                          {"href": f"{b}/jobs", "rel": "http://www.opengis.net/def/rel/ogc/1.0/job-list"}]}

    @app.get("/conformance", summary="Conformance classes")
    async def conformance():
        return {"conformsTo": CONFORMANCE}

    @app.get("/processes", summary="The engine's tools")
    async def process_list(request: Request, who: str = Depends(owner)):  # noqa: ARG001
        return D.process_list(base(request))

    @app.get("/processes/{process_id}", summary="One tool: its inputs and outputs")
    async def process_description(process_id: str, request: Request, who: str = Depends(owner)):  # noqa: ARG001
        return D.description(_tool(process_id), base(request))

    @app.get("/models", summary="Segmentation and cluster models on the server")
    async def models(who: str = Depends(owner)):  # noqa: ARG001
        found = _models(config)
        default = _default_model(config)
        return {"models": [{"id": p.stem, "default": default is not None and p == default} for p in found]}

    # -- execution
    @app.post("/processes/{process_id}/execution", status_code=200, summary="Run a tool",
              openapi_extra={"requestBody": {"content": {
                  "application/json": {"schema": {"type": "object", "properties": {"inputs": {"type": "object"}}}},
                  "multipart/form-data": {"schema": {"type": "object", "properties": {
                      "inputs": {"type": "string", "description": "the JSON document {'inputs': {...}}"}},
                      "additionalProperties": {"type": "string", "format": "binary"}}}}}})
    async def execute(process_id: str, request: Request, who: str = Depends(owner)):
        tool = _tool(process_id)
        wants_async = "respond-async" in request.headers.get("prefer", "").lower()
        sync = tool.quick and not wants_async
        job = await _new_job(request, tool, who, sync)
        if not sync:
            info = status_info(job, base(request))
            return JSONResponse(info, status_code=201, headers={"Location": f"{base(request)}/jobs/{job.id}",
                                                                "Preference-Applied": "respond-async"})
        job = await run_in_threadpool(manager.wait, job.id)
        try:
            _raise_failure(job)
            return results_document(job, base(request))
        finally:                                   # the answer was the result: no job is left to poll or dismiss
            await run_in_threadpool(manager.forget, job.id)

    async def _new_job(request: Request, tool: Tool, who: str, sync: bool, file_field: "str | None" = None,
                       extra=None) -> Job:
        _quota(request)
        job_id = new_id()
        folder = manager.job_dir(job_id)
        try:
            doc, uploads, fields = await _read_body(request, tool, folder / "in", file_field)
            if extra is not None:                      # the shortcut's own form: its fields become inputs
                doc = {"inputs": extra(fields, uploads)}
                uploads = {"raster": uploads[file_field]}
            values = _values(tool, doc, uploads, folder / "out")
            problems = check(tool, values)
            if problems:
                first = problems[0]
                raise OGCError(400, "invalid-parameter-value", "Bad input", manager.scrub(first.message),
                               param=first.param, code=first.code,
                               problems=[{"param": p.param, "code": p.code, "detail": manager.scrub(p.message)}
                                         for p in problems])
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        values = with_dask(tool, values, config.dask)            # serve --dask: the server's Dask cluster
        argv = to_argv(tool, values)
        if "progress" in tool.names():
            argv += [tool.flag("progress"), "json"]
        def plain(v):                                  # paths as text (several rasters: a list of them)
            return [plain(x) for x in v] if isinstance(v, list) else str(v) if isinstance(v, Path) else v

        job = Job(job_id, who, tool.name, {k: plain(v) for k, v in values.items()}, argv, sync=sync)
        manager.submit(job)
        return job

    def _quota(request: Request) -> None:
        length = _content_length(request)
        if length is not None and length > config.max_upload:
            raise OGCError(413, "payload-too-large", "Upload too large", f"the request is {length >> 20} MiB; "
                           f"this server takes at most {config.max_upload >> 20} MiB (--max-upload-mb)")
        if config.quota is not None and manager.used_bytes() + (length or 0) > config.quota:
            raise OGCError(507, "insufficient-storage", "Quota reached", "the server's storage quota for jobs "
                           "is used up; dismiss finished jobs (DELETE /jobs/{id}) or ask the operator to raise "
                           "--quota-gb")

    async def _read_body(request: Request, tool: Tool, folder: Path, file_field: "str | None"):
        """(the JSON document, {input: [uploaded files]}, {field: text}) of a JSON or multipart body."""
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind == "multipart/form-data":
            names = {file_field} if file_field else {p.name for p in D.inputs_of(tool) if p.type in INPUT_FILES}
            try:
                reader = MultipartToDisk(request.headers["content-type"], folder, config.max_upload, names)
            except BadBody as exc:
                raise bad_input(None, P.BAD_FORMAT, f"{exc}") from None
            try:
                async for chunk in request.stream():
                    reader.write(chunk)
                    if config.quota is not None and manager.used_bytes() + reader.body.size > config.quota:
                        raise OGCError(507, "insufficient-storage", "Quota reached", "this upload would pass the "
                                       "server's storage quota for jobs; dismiss finished jobs first")
                body = reader.finish()
            except TooLarge:
                raise OGCError(413, "payload-too-large", "Upload too large", "the upload is larger than this "
                               f"server takes ({config.max_upload >> 20} MiB, --max-upload-mb)") from None
            except BadBody as exc:
                raise bad_input(None, P.BAD_FORMAT, f"the multipart body: {exc}") from None
            finally:
                reader.close()
            doc = _json_document(body.fields.get("inputs", "{}")) if file_field is None else {}
            return doc, body.files, body.fields
        if kind in ("application/json", ""):
            raw = b""
            async for chunk in request.stream():
                raw += chunk
                if len(raw) > 1 << 20:
                    raise OGCError(413, "payload-too-large", "Request too large", "a JSON request is at most "
                                   "1 MiB; upload files as multipart/form-data parts")
            return _json_document(raw.decode("utf-8", "replace") or "{}"), {}, {}
        raise OGCError(415, "unsupported-media-type", "Unsupported media type", f"the body is {kind}; send "
                       "application/json ({'inputs': {...}}) or multipart/form-data (a part 'inputs' with that "
                       "JSON and one part per uploaded file, named after its input)")

    def _values(tool: Tool, doc: dict, uploads: dict, out: Path) -> dict:
        inputs = doc.get("inputs", {})
        if not isinstance(inputs, dict):
            raise bad_input(None, P.BAD_FORMAT, "'inputs' must be an object: {'inputs': {'name': value}}")
        allowed = {p.name: p for p in D.inputs_of(tool)}
        values: dict = {}
        for name, value in inputs.items():
            param = allowed.get(name)
            if param is None:
                raise bad_input(name, P.UNKNOWN, f"{tool.name} takes no input '{name}'; its inputs are "
                                f"{', '.join(allowed)} (GET /processes/{tool.name})")
            if isinstance(value, dict) and "value" in value and "href" not in value:
                value = value["value"]                 # an OGC qualified value
            if param.type in INPUT_FILES:
                if name in uploads:
                    raise bad_input(name, P.BAD_FORMAT, f"'{name}' is both uploaded and given by reference; "
                                    "send one of them")
                if param.many and isinstance(value, list):      # several rasters: one study, in the order given
                    if not value:
                        raise bad_input(name, P.REQUIRED, f"'{name}': give one raster or more")
                    refs = [_reference(param, v) for v in value]
                    values[name] = refs[0] if len(refs) == 1 else refs
                else:
                    values[name] = _reference(param, value)
            elif param.type == OUT_FILE:
                values[name] = out / _out_name(param, value)
            else:
                values[name] = value
        for name, files in uploads.items():
            values[name] = _scenes(allowed[name], files) if allowed[name].many and len(files) > 1 \
                else _main_file(allowed[name], files)
        for param in tool.params:
            # only the main output gets a default name: another one (cluster's save_model) left out keeps its
            # engine default next to it (OUT_model.pt), which is what the declared outputs list as results
            if param.type == OUT_FILE and param.name == tool.output_param and param.name not in values:
                values[param.name] = out / D.default_out_name(tool, param)
            elif param.type == OUT_FOLDER:
                values[param.name] = out
        out.mkdir(parents=True, exist_ok=True)
        return values

    def _reference(param: Param, value) -> "str | Path":
        if isinstance(value, dict) and "href" in value:
            value = value["href"]
        if not isinstance(value, str):
            raise bad_input(param.name, P.BAD_FORMAT, f"'{param.name}' is a file: upload it as a multipart part "
                            "of that name, or give {'href': 'path/under/the/data/root'}")
        if value in param.words:
            return value
        if param.name == "model":
            model = _model_file(config, value)
            if model is not None:
                return model
        try:
            path = resolve_reference(config.data_root, value)
            if param.study and path.is_dir():       # a folder of rasters (a study): each one under the root too
                for scene in sorted(path.iterdir()):
                    resolve_reference(config.data_root, str(Path(value) / scene.name))
            return path
        except RefusedPath as exc:
            raise bad_input(param.name, P.NOT_ALLOWED, f"'{param.name}': {exc}") from None

    def _out_name(param: Param, value) -> str:
        name = str(value)
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,120}", name) or ".." in name:
            raise bad_input(param.name, P.BAD_FORMAT, f"'{param.name}': {name!r} must be a plain file name "
                            "(letters, digits, '.', '_', '-'; no folders): the server writes into the job's folder")
        return name

    def _no_vrt(param: Param, files: list[Path]) -> None:
        for f in files:
            with open(f, "rb") as head:
                if head.read(64).lstrip().startswith(VRT_MAGIC):
                    raise bad_input(param.name, P.NOT_ALLOWED, f"'{param.name}': {f.name} is a GDAL VRT, which "
                                    "may name other files or URLs; upload the image itself")

    def _scenes(param: Param, files: list[Path]) -> list[Path]:
        """Several rasters uploaded as one input that takes several (a study): each file a scene, in upload
        order (the first wins where scenes overlap)."""
        _no_vrt(param, files)
        return list(files)

    def _main_file(param: Param, files: list[Path]) -> Path:
        _no_vrt(param, files)
        if len(files) == 1:
            return files[0]
        for suffix in (".shp", ".gpkg", ".geojson", ".tif", ".tiff"):
            for f in files:
                if f.suffix.lower() == suffix:
                    return f
        raise bad_input(param.name, P.BAD_FORMAT, f"'{param.name}': {len(files)} files were uploaded and none "
                        "is the main one (.shp with its sidecars, .gpkg, .geojson, .tif)")

    # -- jobs
    def own_job(job_id: str, who: str) -> Job:
        job = store.get(job_id, owner=who)
        if job is None:
            raise OGCError(404, "no-such-job", "No such job", f"there is no job {job_id} of yours")
        return job

    @app.get("/jobs", summary="Your jobs")
    async def job_list(request: Request, who: str = Depends(owner), status: "str | None" = None,
                       processID: "str | None" = None, limit: int = 100):  # noqa: N803 - OGC's name
        jobs = store.list(owner=who, status=status.split(",") if status else None,
                          process=processID.split(",") if processID else None, limit=max(1, min(limit, 10000)))
        b = base(request)
        return {"jobs": [status_info(j, b) for j in jobs], "links": [{"href": f"{b}/jobs", "rel": "self"}]}

    @app.get("/jobs/{job_id}", summary="A job's status")
    async def job_status(job_id: str, request: Request, who: str = Depends(owner)):
        return status_info(own_job(job_id, who), base(request))

    @app.delete("/jobs/{job_id}", summary="Dismiss a job: stop it and remove its files")
    async def dismiss(job_id: str, request: Request, who: str = Depends(owner)):
        own_job(job_id, who)
        job = await run_in_threadpool(manager.dismiss, job_id)
        return status_info(job, base(request))

    @app.get("/jobs/{job_id}/results", summary="Links to a finished job's files")
    async def results(job_id: str, request: Request, who: str = Depends(owner)):
        job = own_job(job_id, who)
        _raise_failure(job)
        return results_document(job, base(request))

    @app.get("/jobs/{job_id}/results/{key}", summary="One result file")
    async def result_file(job_id: str, key: str, who: str = Depends(owner)):
        job = own_job(job_id, who)
        _raise_failure(job)
        path = manager.results(job).get(key)
        if path is None:
            raise OGCError(404, "no-such-output", "No such output", f"job {job_id} has no result {key!r}")
        return FileResponse(path, media_type=D.media_type(path), filename=path.name)

    def _raise_failure(job: Job) -> None:
        if job.status in (ACCEPTED, RUNNING):
            raise OGCError(404, "result-not-ready", "Result not ready", f"job {job.id} is {job.status}")
        if job.status == DISMISSED:
            raise OGCError(404, "no-such-job", "Job dismissed", f"job {job.id} was dismissed")
        if job.status == FAILED:
            error = job.error or {}
            bad = error.get("exit_code") == 2
            raise OGCError(400 if bad else 500, "invalid-parameter-value" if bad else "job-failed",
                           "Bad input" if bad else "Job failed", error.get("detail") or job.message,
                           param=error.get("param"), code=error.get("code"))

    def results_document(job: Job, b: str) -> dict:
        if job.status != SUCCESSFUL:
            return {}
        if job.result is not None:
            return {D.RESULT: {"value": job.result, "mediaType": "application/json"}}
        return {key: {"href": f"{b}/jobs/{job.id}/results/{key}", "type": D.media_type(path), "title": path.name}
                for key, path in manager.results(job).items()}

    # -- the building-mask shortcut
    @app.post("/buildings_mask", summary="Building mask of an uploaded GeoTIFF",
              response_class=FileResponse,
              openapi_extra={"requestBody": {"content": {"multipart/form-data": {"schema": {
                  "type": "object", "required": ["file"],
                  "properties": {"file": {"type": "string", "format": "binary"},
                                 "model": {"type": "string", "description": "a model id (GET /models); default: "
                                                                            "the server's default model"},
                                 "threshold": {"type": "number"}}}}}}})
    async def buildings_mask(request: Request, response_type: str = "tiff", who: str = Depends(owner)):
        if response_type not in MASK_TYPES:
            raise bad_input("response_type", P.BAD_CHOICE, f"response_type {response_type!r}: give "
                            f"{' or '.join(MASK_TYPES)}")
        tool = TOOLS[SEGMENT]

        def chosen(fields: dict, uploads: dict) -> dict:
            if "file" not in uploads:
                raise bad_input("raster", P.REQUIRED, "upload the GeoTIFF as the multipart part 'file'")
            model = fields.get("model") or None
            path = _model_file(config, model) if model else _default_model(config)
            if path is None:
                raise bad_input("model", P.NOT_FOUND, f"no model {model!r} on this server (GET /models)" if model
                                else "this server has no default model; give 'model' (GET /models), or the "
                                     "operator puts a train-seg model in the models folder (--default-model)")
            extra = {"model": path.name, "out": "buildings.gpkg"}
            if fields.get("threshold"):
                extra["threshold"] = fields["threshold"]
            return extra

        if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
            raise OGCError(415, "unsupported-media-type", "Unsupported media type", "send multipart/form-data "
                           "with the GeoTIFF in the part 'file'")
        job = await _new_job(request, tool, who, sync=False, file_field="file", extra=chosen)
        job = await run_in_threadpool(manager.wait, job.id)
        _raise_failure(job)
        key, media = MASK_TYPES[response_type]
        path = manager.results(job).get(key)
        if path is None:
            raise OGCError(500, "job-failed", "Job failed", "the segmentation wrote no mask")
        return FileResponse(path, media_type=media, filename=path.name)

    return app


# ---------------------------------------------------------------------------------------------------------------


def status_info(job: Job, b: str) -> dict:
    """The OGC status info of ``job``, with its progress percent and the engine's stage and message."""
    iso = _iso
    info = {"jobID": job.id, "processID": job.process, "type": "process", "status": job.status,
            "message": job.message, "progress": int(job.progress), "stage": job.stage, "done": job.done,
            "total": job.total, "created": iso(job.created), "started": iso(job.started),
            "finished": iso(job.finished), "updated": iso(job.updated),
            "links": [{"href": f"{b}/jobs/{job.id}", "rel": "self", "type": "application/json"}]}
    if job.status == SUCCESSFUL:
        info["links"].append({"href": f"{b}/jobs/{job.id}/results", "rel": "http://www.opengis.net/def/rel/ogc/"
                              "1.0/results", "type": "application/json"})
    if job.status == FAILED and job.error:
        info["error"] = job.error
    return {k: v for k, v in info.items() if v is not None}


def _iso(t: "float | None") -> "str | None":
    import datetime

    if t is None:
        return None
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).isoformat(timespec="seconds")


def _tool(process_id: str) -> Tool:
    tool = TOOLS.get(process_id)
    if tool is None:
        raise OGCError(404, "no-such-process", "No such process", f"there is no process {process_id!r}; "
                       f"the processes are {', '.join(TOOLS)}")
    return tool


def _json_document(text: str) -> dict:
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise bad_input(None, P.BAD_FORMAT, f"the request is not JSON ({exc.msg} at character {exc.pos})") from None
    if not isinstance(doc, dict):
        raise bad_input(None, P.BAD_FORMAT, "the request must be a JSON object: {'inputs': {...}}")
    return doc


def _content_length(request: Request) -> "int | None":
    try:
        return int(request.headers["content-length"])
    except (KeyError, ValueError):
        return None


def _model_file(config: ServiceConfig, name: str) -> "Path | None":
    """A model id (``buildings`` or ``buildings.pt``) in the server's models folder, else None."""
    if not name or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name) or ".." in name:
        return None
    for candidate in (config.models_dir / name, config.models_dir / f"{name}.pt"):
        if candidate.is_file():
            return candidate
    return None


def _default_model(config: ServiceConfig) -> "Path | None":
    if config.default_model:
        return _model_file(config, config.default_model)
    found = _models(config)
    return found[0] if len(found) == 1 else None


def _models(config: ServiceConfig) -> list[Path]:
    """The model files in the models folder (not a training's checkpoint next to its model)."""
    if not config.models_dir.is_dir():
        return []
    checkpoints = {Path(CHECKPOINT.format(stem=str(p.with_suffix("")))) for p in config.models_dir.glob("*.pt")}
    return sorted(p for p in config.models_dir.glob("*.pt") if p not in checkpoints)


def _prepared(config: ServiceConfig) -> ServiceConfig:
    for folder in (config.data_dir, config.jobs_dir, config.data_root, config.models_dir):
        folder.mkdir(parents=True, exist_ok=True)
    return config
