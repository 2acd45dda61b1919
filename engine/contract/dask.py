"""Where a Dask address set once (the service's ``serve --dask``, the plugin's Engine setting) reaches a run.

The ``--dask`` parameter is declared per tool (``tools.DASK``, ``service=False``: the server decides, a client
does not). :func:`applies` says which runs take it: a tool that declares it (DeepCluster too: its features run on
the workers, its training in the client), and probe only with ``--plan``. Stdlib only.
"""
from __future__ import annotations

import re

from .tools import DASK_PATTERN, TOOLS


def valid(address: str) -> bool:
    """'local:N' (N at least 1) or 'tcp://host:port'."""
    return bool(re.fullmatch(DASK_PATTERN, (address or "").strip()))


def applies(tool, values: dict) -> bool:
    """A run of ``tool`` with these parameter ``values`` takes ``--dask``."""
    return "dask" in tool.names() and (tool.name != "probe" or bool(values.get("plan")))


def with_dask(tool, values: dict, address: "str | None") -> dict:
    """``values`` with ``dask=address`` where :func:`applies` and none is set already (unchanged otherwise)."""
    if not address or values.get("dask") or not applies(tool, values):
        return values
    return {**values, "dask": address}


def argv_with_dask(argv: list[str], address: "str | None") -> list[str]:
    """An engine command line (``['cluster', RASTER, '--out', ...]``) with ``--dask ADDRESS`` added where
    :func:`applies` and it has no ``--dask`` already (unchanged otherwise)."""
    tool = TOOLS.get(argv[0]) if argv else None
    if not address or tool is None or "dask" not in tool.names():
        return list(argv)
    flag = tool.flag("dask")
    if flag in argv:
        return list(argv)
    plan = "plan" in tool.names() and tool.flag("plan") in argv
    if not applies(tool, {"plan": plan}):
        return list(argv)
    return [*argv, flag, address]
