"""OGC API - Processes descriptions of the engine's tools, and a job's inputs turned into tool values.

Everything here is derived from the declarations in ``engine.contract.tools``:
a parameter's JSON schema (type, bounds, choices, default), whether it is an
input file (sent as an upload or a reference under the server's data root) or
the output name, and the outputs a run writes. Parameters that only make sense
on the machine that runs the engine (``--progress``, a cache folder, Python-only
fields) are not inputs of a process.
"""
from __future__ import annotations

from pathlib import Path

from .. import __version__
from ..contract import params as C
from ..contract.params import Param, Tool
from ..contract.tools import TOOLS

MEDIA_TYPES = {".gpkg": "application/geopackage+sqlite3", ".tif": "image/tiff; application=geotiff",
               ".tiff": "image/tiff; application=geotiff", ".json": "application/json", ".png": "image/png",
               ".csv": "text/csv", ".html": "text/html", ".shp": "application/x-shapefile",
               ".pt": "application/octet-stream", ".pth": "application/octet-stream"}
FILE_MEDIA = {C.RASTER: "image/tiff; application=geotiff", C.VECTOR: "application/geopackage+sqlite3",
              C.FILE: "application/octet-stream"}
RESULT = "result"          # the output of a tool that prints JSON (check, probe, evaluate-seg)


def media_type(path: "str | Path") -> str:
    return MEDIA_TYPES.get(Path(path).suffix.lower(), "application/octet-stream")


def inputs_of(tool: Tool) -> list[Param]:
    """The parameters a client sends: not the CLI-only (``--progress``), Python-only or working-folder ones, nor
    those the server decides (``--dask``: where its jobs run, never an address a client gives)."""
    return [p for p in tool.params if p.cli and p.api and p.service and p.type not in (C.FOLDER, C.OUT_FOLDER)]


def job_control(tool: Tool) -> list[str]:
    return ["sync-execute", "async-execute"] if tool.quick else ["async-execute"]


def schema_of(param: Param) -> dict:
    """The JSON schema of one parameter's value."""
    t = param.type
    if t == C.BOOL:
        schema: dict = {"type": "boolean"}
    elif t in (C.INT, C.FLOAT):
        schema = {"type": "integer" if t == C.INT else "number"}
        if param.minimum is not None:
            schema["exclusiveMinimum" if param.open_min else "minimum"] = param.minimum
        if param.maximum is not None:
            schema["exclusiveMaximum" if param.open_max else "maximum"] = param.maximum
        if param.multiple_of:
            schema["multipleOf"] = param.multiple_of
        if param.words:
            schema = {"oneOf": [schema, {"type": "string", "enum": list(param.words)}]}
    elif t == C.CHOICE:
        schema = {"type": "string", "enum": list(param.choices)}
    elif t in C.INPUT_FILES:
        media = FILE_MEDIA[t]
        schema = {"oneOf": [{"type": "string", "contentEncoding": "binary", "contentMediaType": media},
                            {"type": "object", "required": ["href"],
                             "properties": {"href": {"type": "string", "format": "uri-reference"}}}]}
    elif t == C.OUT_FILE:
        schema = {"type": "string", "pattern": r"^[^/\\]+$"}
    elif t == C.EXTENT:
        schema = {"oneOf": [{"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4},
                            {"type": "string"}]}
    elif t == C.K_LIST:
        schema = {"oneOf": [{"type": "string", "pattern": r"^\d+(\.\.\d+)?(,\d+(\.\.\d+)?)*$"},
                            {"type": "array", "items": {"type": "integer"}}]}
    elif t == C.SIZES:
        schema = {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
    else:                                                     # text, size ("64px", "20m"), bands ("1,2,3")
        schema = {"type": "string"}
        if param.pattern:
            schema["pattern"] = f"^(?:{param.pattern})$"
    if param.default is not None:
        schema["default"] = param.default
    return schema


def describe_input(tool: Tool, param: Param) -> dict:
    text = param.help
    if param.type == C.OUT_FILE:
        text += f" (a file name only, default '{default_out_name(tool, param)}'; the server writes into the job's " \
                "own folder)"
    elif param.many:
        text += (" (one or more: uploads, each a multipart part of this name, or an array of {'href': a path "
                 "under the server's data root}, a folder of rasters there too; the first wins where they overlap)")
    elif param.type in C.INPUT_FILES:
        text += " (an upload: a multipart part of this name; or {'href': a path under the server's data root})"
    described = {"title": param.title, "description": text, "schema": schema_of(param),
                 "minOccurs": 1 if param.required else 0, "maxOccurs": "unbounded" if param.many else 1}
    if param.unit:
        described["x-unit"] = param.unit
    if param.applies_when:
        described["x-applies-when"] = {param.applies_when[0]: param.applies_when[1]}
    if param.advanced:
        described["x-advanced"] = True
    return described


def default_out_name(tool: Tool, param: Param) -> str:
    """``cluster.gpkg``, ``train-seg.pt``: the output name a job gets when the client gives none."""
    return tool.name + (param.suffixes[0] if param.suffixes else "")


def describe_outputs(tool: Tool) -> dict:
    if tool.output_param is None and any(p.type == C.OUT_FOLDER for p in tool.params):
        return {"files": {"title": "files", "description": "one file per layer (see the results' keys)",
                          "schema": {"type": "string", "contentEncoding": "binary"}}}
    if tool.output_param is None:
        return {RESULT: {"title": "result", "description": "the tool's JSON answer",
                         "schema": {"type": "object", "contentMediaType": "application/json"}}}
    outputs = {}
    for o in tool.outputs:
        key = f"{o.key}_<tile size>" if o.per_size else o.key
        described = {"title": o.key, "description": o.help + (f" (when {o.when} is given)" if o.when else ""),
                     "schema": {"type": "string", "contentEncoding": "binary",
                                "contentMediaType": media_type(o.pattern.replace("{out}", "x.gpkg"))}}
        outputs[key] = described
    return outputs


def summary(tool: Tool, base: str = "") -> dict:
    return {"id": tool.name, "title": tool.summary, "description": tool.description, "version": __version__,
            "jobControlOptions": job_control(tool), "outputTransmission": ["reference"],
            "links": [{"href": f"{base}/processes/{tool.name}", "rel": "self", "type": "application/json",
                       "title": "process description"}]}


def description(tool: Tool, base: str = "") -> dict:
    """The OGC process description of ``tool``."""
    return {**summary(tool, base),
            "inputs": {p.name: describe_input(tool, p) for p in inputs_of(tool)},
            "outputs": describe_outputs(tool),
            "links": [{"href": f"{base}/processes/{tool.name}", "rel": "self", "type": "application/json"},
                      {"href": f"{base}/processes/{tool.name}/execution",
                       "rel": "http://www.opengis.net/def/rel/ogc/1.0/execute", "title": "execute"}]}


def process_list(base: str = "") -> dict:
    return {"processes": [summary(t, base) for t in TOOLS.values()],
            "links": [{"href": f"{base}/processes", "rel": "self", "type": "application/json"}]}
