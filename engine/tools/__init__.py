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
from dataclasses import fields

from ..contract import params as contract
from ..contract import problems as P
from ..contract.tools import TOOLS
from ..errors import BadInput


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
            and not isinstance(value, str)}
    # (contract.check, not a name of its own here: the submodule engine.tools.check would replace it)
    problems = [p for p in contract.check(declared, {k: v for k, v in values.items() if k not in held})
                if p.param not in held and p.code != P.EXISTS]
    if problems:
        first = problems[0]
        raise BadInput(first.message, param=first.param, code=first.code, problems=problems)
