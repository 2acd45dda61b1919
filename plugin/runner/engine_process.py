"""Run one engine command in a subprocess on this computer and follow its JSON progress lines.

Shared by the dock's background task and the Processing algorithms: the engine
Python found or set up by the plugin, started in the plugin folder with a clean
environment, followed by the one runner every face uses
(``engine.contract.runner.run_command``, which the service's jobs use too).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from ...engine.contract import progress
from ...engine.contract.runner import EngineResult, remove_partials, run_command
from ..paths import PLUGIN_DIR
from .engine_env import engine_command, run_env

EXIT_BAD_INPUT = progress.EXIT_BAD_INPUT
EXIT_CANCELLED = progress.EXIT_CANCELLED
__all__ = ["EXIT_BAD_INPUT", "EXIT_CANCELLED", "EngineResult", "remove_partials", "run_engine"]


def run_engine(python: str, args: list[str], on_event: Callable[[dict], None] | None = None,
               is_cancelled: Callable[[], bool] = lambda: False, grace: float = 30.0,
               outputs: list[Path] | None = None, on_start: Callable[[int], None] | None = None) -> EngineResult:
    """Run ``python -m engine ARGS`` to the end (or until cancelled); returns its EngineResult."""
    return run_command(engine_command(python, *args), cwd=str(PLUGIN_DIR), env=run_env(), on_event=on_event,
                       is_cancelled=is_cancelled, grace=grace, outputs=outputs, on_start=on_start)
