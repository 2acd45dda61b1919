"""What the requests share: the contract's checks, command lines and output names as the plugin uses them.

Every request holds plain values (the fields the dock and the algorithms set) and maps them to its engine
tool's parameters (``values()``); the checks (``engine.contract.params.check``), the command line
(``to_argv``) and the files a run writes (``output_files``) are then the contract's, derived from the tool's
declaration in ``engine.contract.tools``. The plugin adds only what the contract cannot know: a layer that is
not a local file (code ``not_local``) and the checks of its own form fields (a tile size unit, an empty K).

Plain values: no Qt, no QGIS (tests/plugin/test_layout.py checks).
"""
from __future__ import annotations

import os
from pathlib import Path

from ...engine.contract.params import RASTER, VECTOR, Param, Tool, check, to_argv
from ...engine.contract.problems import NOT_FOUND, NOT_LOCAL, Problem

PROGRESS_JSON = {"progress": "json"}        # the engine's JSON progress lines, which the runner reads

# how a layer parameter is named in "... is not a local file" (the parameter's title otherwise)
LAYER_WORDS = {"raster": "raster", "buildings": "building layer", "roads": "road layer", "area": "area layer",
               "label_area": "labelled-area layer", "truth": "footprint layer"}


def contract_problems(tool: Tool, values: dict, files: bool = True) -> list[Problem]:
    """``check(tool, values)``, with a raster or vector input that does not exist said as a layer that is not a
    local file (``not_local``: the dock and the algorithms pass layers as files, writing other layers first)."""
    out = []
    for problem in check(tool, values, files=files):
        param = _param(tool, problem.param)
        if problem.code == NOT_FOUND and param is not None and param.type in (RASTER, VECTOR):
            value = values.get(problem.param)
            if isinstance(value, (list, tuple)):           # several rasters (a study): the one that is missing
                value = next((v for v in value if not Path(str(v)).exists()), value[0] if value else "")
            problem = not_local(param, value)
        out.append(problem)
    return out


def not_local(param: Param, path) -> Problem:
    """``The raster X is not a local file; save it to a GeoTIFF first …`` (code ``not_local``)."""
    what = LAYER_WORDS.get(param.name, param.title.lower())
    kind = "a GeoTIFF" if param.type == RASTER else "a GeoPackage"
    return Problem(param.name, NOT_LOCAL, f"The {what} {path} is not a local file; save it to {kind} first "
                                          "(right-click the layer > Export > Save As…).")


def command(tool: Tool, values: dict, extra=()) -> list[str]:
    """Arguments after ``python -m engine``: the contract's command line for ``values`` (with JSON progress where
    the tool reports progress), then ``extra``."""
    if "progress" in tool.names():
        values = {**values, **PROGRESS_JSON}
    return to_argv(tool, values) + list(extra)


def _param(tool: Tool, name: str) -> Param | None:
    try:
        return tool.param(name)
    except KeyError:
        return None


def default_output(raster: str, kind: str = "clusters", suffix: str = ".gpkg") -> str:
    """A free output path ``RASTER_{kind}{n}{suffix}`` next to the raster (or in the home folder if that is not
    writable)."""
    base = Path(raster).with_suffix("") if raster else Path.home() / "urbanform"
    folder = base.parent if os.access(base.parent, os.W_OK) else Path.home()
    for i in range(1, 1000):
        candidate = folder / f"{base.name}_{kind}{'' if i == 1 else i}{suffix}"
        if not candidate.exists():
            return str(candidate)
    return str(folder / f"{base.name}_{kind}{suffix}")
