"""One call for every run, wherever the engine runs: this computer (a subprocess) or an engine server (a job).

The dock's EngineTask and the Processing algorithms call ``run_engine``; the
Engine setting (``server_settings``: "This computer" or "Server") picks
``engine_process.run_engine`` or ``remote.run_remote``. Both take the same
engine command line and callbacks and return the same EngineResult.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from ...engine.contract.runner import EngineResult
from . import engine_process, remote, server_settings

FROM_SETTINGS = object()      # ``server``: read the Engine setting now


def run_engine(python: str | None, args: list[str], on_event: Callable[[dict], None] | None = None,
               is_cancelled: Callable[[], bool] = lambda: False, grace: float = 30.0,
               outputs: list[Path] | None = None, on_start: Callable[[int], None] | None = None,
               server=FROM_SETTINGS) -> EngineResult:
    """Run the engine command ``args`` with ``python`` on this computer, or as a job on ``server`` (a
    ``remote.Server``; None: this computer; by default the one the settings name)."""
    if server is FROM_SETTINGS:
        server = server_settings.active_server()
    if server is None:
        return engine_process.run_engine(python, args, on_event, is_cancelled, grace, outputs, on_start)
    return remote.run_remote(server, args, on_event, is_cancelled, grace, outputs, on_start)
