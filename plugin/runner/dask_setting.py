"""The Engine setting "Dask scheduler" (issue 14): where local runs of the tools that take ``--dask`` run.

Empty: no Dask (one engine process). ``local:N``: N worker processes on this computer. ``tcp://host:port``: a
running Dask scheduler whose workers see the inputs and the feature cache. Checked with the contract's pattern
(``engine.contract.dask``); kept in QgsSettings under /urbanform/engine/dask. The dock's runs on this computer
get it (``EngineTask``), where the contract says a run takes ``--dask`` (probe only with ``--plan``); the
Processing algorithms' advanced "Dask cluster" parameter defaults to it. Runs on an engine server do not: the
server decides (``serve --dask``).
"""
from __future__ import annotations

from ...engine.contract.dask import argv_with_dask, valid
from .. import settings

KEY = "engine/dask"
PLACEHOLDER = "none: one process (or local:4, tcp://scheduler:8786)"
TIP = ("Runs of cluster (k-means), sweep, predict, segment and statistics on this computer use this Dask cluster: "
       "'local:N' starts N worker processes here, 'tcp://host:port' uses a running scheduler whose workers see the "
       "raster and the feature cache. Empty: one process. An engine server uses its own (serve --dask).")


def problem(text: str) -> str | None:
    """Why ``text`` is no Dask address, with the fix; None for a valid one or an empty one."""
    text = (text or "").strip()
    if not text or valid(text):
        return None
    return (f"Dask scheduler: {text!r} is not 'local:N' (N worker processes, at least 1) nor a scheduler address "
            "'tcp://host:port'; correct it or leave it empty (one process).")


def address() -> str | None:
    """The saved address (None: no Dask, or a saved value that is not valid)."""
    text = (settings.get(KEY, "", str) or "").strip()
    return text if text and valid(text) else None


def save(text: str) -> bool:
    """Save ``text`` (stripped; empty clears it); False (nothing saved) when it is not a valid address."""
    text = (text or "").strip()
    if problem(text):
        return False
    settings.set(KEY, text)
    return True


def with_setting(argv: list[str]) -> list[str]:
    """``argv`` with ``--dask`` from the setting where the run takes it and does not set its own."""
    return argv_with_dask(argv, address())
