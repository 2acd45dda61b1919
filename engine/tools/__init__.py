"""The tools the CLI runs, one module each: its params value and ``run(params, progress) -> manifest``.

``cluster``, ``predict``, ``sweep``, ``stats``, ``export``, ``train_seg``,
``segment``, ``evaluate_seg``, ``probe``, ``check``. Each params value has the
fields (names and defaults) that ``engine.contract.tools`` declares for the
tool, and each ``run`` starts with :func:`check_params`: the declaration's
checks, before any work. Only ``engine.cli`` imports this package; tools may
import each other and everything below them, never the CLI.
"""
from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path

from ..contract import params as contract
from ..contract import problems as P
from ..contract.tools import TOOLS
from ..errors import BadInput

# the vector inputs a tool checks before any work: parameter -> (geometry kind, what it should be)
VECTOR_INPUTS = {
    "buildings": ("polygon", "building footprints"),
    "form": ("polygon", "a building model from train-seg (MODEL.pt) or building footprints"),
    "roads": ("line", "road lines"),
    "area": ("polygon", "the polygon(s) to limit the run to"),
    "label_area": ("polygon", "the polygon(s) where the footprints are complete"),
    "query": (None, "points or polygons on the places to look for"),
    "labels": (None, "labelled points or polygons"),
}


def param_values(params) -> dict:
    """A params value's fields as a plain dict, paths as text (not ``dataclasses.asdict``: it would deep-copy a
    GeoDataFrame of footprints or a model held in memory)."""
    return {f.name: os.fspath(v) if isinstance(v, os.PathLike) else v
            for f in fields(params) for v in (getattr(params, f.name),)}


def check_params(tool: str, params) -> None:
    """BadInput (with ``param``, ``code`` and every problem) unless ``params`` pass the declaration's checks.

    The checks of ``engine.contract.params.check``: required values, types, choices, ranges, suffixes, the
    rules between parameters, inputs that exist, output folders that can be written, an output that would
    replace an input. Two are left to the tool: an input held in memory rather than named by a path (the
    Python API's footprints GeoDataFrame, a loaded model) is the tool's to check, and outputs that exist are
    refused (or taken over by ``resume``) by the tool's ``engine.io.OutputSet``, which knows which of its
    files a resumed run may replace.
    """
    declared = TOOLS[tool]
    values = param_values(params)
    held = {name for name, value in values.items() if name in declared.names()
            and declared.param(name).type in contract.INPUT_FILES and value is not None
            and not isinstance(value, str)
            and not (declared.param(name).many and isinstance(value, (list, tuple)))}   # (several paths: a study)
    # (contract.check, not a name of its own here: the submodule engine.tools.check would replace it)
    problems = [p for p in contract.check(declared, {k: v for k, v in values.items() if k not in held})
                if p.param not in held and p.code != P.EXISTS]
    if problems:
        first = problems[0]
        raise BadInput(first.message, param=first.param, code=first.code, problems=problems)
    if "use_cache" in declared.names() and values.get("use_cache", True):
        from ..io.cache import budget_bytes

        budget_bytes()              # the feature cache's budget (URBANFORM_CACHE_MAX_GB): a bad value stops here


def study_params(tool: str, params):
    """``params`` with each raster that names a study (several paths, a folder of rasters) replaced by the path
    of its VRT mosaic (``engine.raster.study``), which every later step opens as one raster; one path stays as it
    is (a list of one becomes that path). BadInput naming the parameter for scenes that cannot make one study.

    Call it right after the declaration's checks, before any work: the VRT is written (once per set of scenes)
    under the cache folder (``cache_dir``, else ``$URBANFORM_CACHE``), where Dask workers see it too.
    """
    from dataclasses import replace

    from ..raster.study import as_values, is_study, open_study

    declared = TOOLS[tool]
    changes = {}
    for p in declared.params:
        if p.type != contract.RASTER or not p.study or not hasattr(params, p.name):
            continue
        value = getattr(params, p.name)
        if is_study(value):
            from .cluster import default_cache_dir

            cache = getattr(params, "cache_dir", None) or default_cache_dir()
            changes[p.name] = open_study(value, p.name, cache).path
        elif isinstance(value, (list, tuple)):          # a list of one path: that path
            changes[p.name] = as_values(value)[0] if value else None
    return replace(params, **changes) if changes else params


def check_vector_inputs(tool: str, params, names=tuple(VECTOR_INPUTS)) -> None:
    """BadInput (naming the parameter) unless each vector input of ``params`` given as a path can serve: a
    vector file with geometry of the right kind and a CRS (``engine.io.vectors.check_vector``, headers only).

    Call it right after :func:`check_params`, so a CSV, a raster or a damaged file given as footprints, roads
    or an area stops the run before any work and writes nothing. An input held in memory (a GeoDataFrame
    from Python) is the tool's to check.
    """
    from ..io.vectors import check_vector

    declared = TOOLS[tool]
    for name in names:
        value = getattr(params, name, None)
        if name not in declared.names() or not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
            continue
        if name == "form":                 # --form also takes a building model (checked by formsource.check_form)
            from .formsource import is_building_model

            if is_building_model(value):
                continue
        kind, what = VECTOR_INPUTS[name]
        try:
            check_vector(value, declared.flag(name), what, kind=kind)
        except BadInput as exc:
            code = P.BAD_FORMAT if os.path.exists(value) else P.NOT_FOUND      # decided on the file, not the words
            raise BadInput(str(exc), param=name, code=code) from None


RUN_WANTED = "the GeoPackage of a cluster or sweep run (their --out)"


def run_layers(path) -> list[str]:
    """The layer names of the run GeoPackage ``path`` (the ``RUN`` of stats and export), or BadInput naming RUN
    (param ``run``, code ``not_found`` or ``bad_format``) in our words when GDAL cannot open it: a folder, a
    raster, random bytes, a truncated file (``engine.io.vectors.list_layers``; never OGR's own text)."""
    from ..io.vectors import list_layers

    try:
        layers = list_layers(path, "RUN", RUN_WANTED)
    except BadInput as exc:
        code = P.BAD_FORMAT if os.path.exists(path) else P.NOT_FOUND
        raise BadInput(str(exc), param="run", code=code) from None
    return [str(row[0]) for row in layers]


_held = threading.local()          # lock file -> True: the output locks the tool running in this thread holds


def _lock_key(path) -> str:
    from ..io.lock import lock_path

    return os.path.normcase(str(lock_path(path)))


@contextmanager
def locked_outputs(paths):
    """One writer per output: hold ``engine.io.OutputLock`` on ``paths`` for the block.

    Take it before the "already exists" check (``OutputSet``) and keep it until the outputs are committed. A
    second run on any of the same outputs stops at once with BadInput (exit 2: "another run (pid N on HOST,
    started T) is writing OUT; wait for it or choose another output"). Re-entrant within a thread: a tool
    that runs another on its own outputs (cluster, then stats on its GeoPackage) keeps the locks it took and
    locks only the new outputs. A cancel waits while the lock files are made or removed (no lock left behind).
    """
    from ..io.lock import OutputLock
    from ..progress import holding_cancel

    held = getattr(_held, "keys", None)
    if held is None:
        held = _held.keys = set()
    new, keys = [], []
    for p in paths:
        key = _lock_key(p)
        if key not in held and key not in keys:
            new.append(Path(p))
            keys.append(key)
    lock = OutputLock(new) if new else None
    if lock is not None:
        with holding_cancel():
            lock.acquire()
    held.update(keys)
    try:
        yield
    finally:
        held.difference_update(keys)
        if lock is not None:
            with holding_cancel():
                lock.release()
