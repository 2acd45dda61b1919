"""Background look-ups for the dock: find and check the engine, count tiles, time the model.

Everything here that starts a process runs on a QgsTask worker thread
(``BackgroundCall``); results come back on the main thread through the task's
``done`` signal. The functions are plain (no Qt) so that they are easy to test:

- ``detect_engine`` / ``check_engine``: which Python runs the engine, and does it work;
  ``check_server``: the same for an engine server (its version, its engine's devices);
- ``probe`` with ``tile_args``: ``python -m engine probe`` (no torch, well under a second):
  the number of tiles and the tile size in pixels, or the engine's error for bad input;
- ``probe`` with ``speed_args``: the same with ``--speed`` (imports torch, a few seconds):
  the model's tiles per second, cached per ``speed_key`` for the whole QGIS session;
- ``estimate_text``: "96 tiles of 64 px · about 10 s on cpu".
"""
from __future__ import annotations

import json
import subprocess
import time
from typing import Callable

from qgis.core import QgsTask
from qgis.PyQt.QtCore import pyqtSignal

from ...engine.contract.outputs import tile_label
from ...engine.contract.params import to_argv
from ...engine.contract.tools import TOOLS
from ..paths import PLUGIN_DIR, read_metadata
from ..requests import ClusterRequest
from . import engine_env, remote
from .engine_process import EXIT_BAD_INPUT

STARTUP_S = 5.0          # engine start-up, reading, k-means and writing, roughly
PROBE_TIMEOUT_S = 60
SPEED_TIMEOUT_S = 180
PROBE = TOOLS["probe"]

# (python, backbone, weights, device, tile px) -> the --speed probe's answer; lives as long as QGIS
SPEED_CACHE: dict[tuple, dict] = {}


class BackgroundCall(QgsTask):
    """Run ``function(is_cancelled)`` on a worker thread; emit ``done(value)`` on the main thread.

    Nothing is emitted for a cancelled call. ``function`` must not touch the GUI.
    """

    done = pyqtSignal(object)

    def __init__(self, description: str, function: Callable[[Callable[[], bool]], object]):
        super().__init__(description, QgsTask.CanCancel)
        self.function = function
        self.value = None

    def run(self) -> bool:  # worker thread
        try:
            self.value = self.function(self.isCanceled)
        except Exception as exc:  # noqa: BLE001 - becomes a message, never a crash
            self.value = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        return True

    def finished(self, ok: bool) -> None:  # main thread
        if ok and not self.isCanceled():
            self.done.emit(self.value)


# -- the engine ------------------------------------------------------------------------------------
def detect_engine(_is_cancelled=None) -> dict:
    """{'python': the detected engine Python or None} (may start a Python to test it: worker thread only)."""
    return {"python": engine_env.detect()}


def check_engine(python: str | None, _is_cancelled=None) -> dict:
    """engine_env.check with the Python it was asked about under ``asked`` (worker thread only)."""
    info = engine_env.check(python)
    info["asked"] = python
    return info


def check_server(server: remote.Server, _is_cancelled=None) -> dict:
    """The engine server's version and its engine's check (``remote.server_check``), with the server's URL under
    ``asked`` and this plugin's version under ``plugin_version`` (worker thread only: network)."""
    info = remote.server_check(server)
    info["asked"] = server.url
    info["plugin_version"] = read_metadata().get("version", "")
    return info


def engine_text(info: dict) -> str:
    """One line for the Engine box: interpreter (or server and its version), torch version and devices, or the
    error with the fix."""
    if not info.get("ok"):
        where = "Engine server" if info.get("server") is not None else "Engine"
        return f"{where} not usable: {info.get('error', 'unknown error')}"
    version = f"Python {info['python_version']} " if info.get("python_version") else ""
    where = f"{version}{info.get('python', info.get('asked'))}"
    if info.get("server") is not None:
        where = f"Server {info['server']}, Urban Form Mapper {info.get('version') or '?'}"
        if info.get("plugin_version") and info.get("version") and info["version"] != info["plugin_version"]:
            where += f" (this plugin is {info['plugin_version']}: results may differ)"
        where += f" · {version.strip()}" if version else ""
    return f"{where} · torch {info.get('torch', '?')} · devices: {', '.join(info.get('devices') or ['cpu'])}"


# -- probes ----------------------------------------------------------------------------------------
def tile_args(req: ClusterRequest) -> list[str]:
    """``probe`` arguments for the tile grid of ``req`` (fast: no torch); a map extent limits the count."""
    return to_argv(PROBE, {"raster": req.raster, "tile_size": req.tile_text, "overlap": req.overlap_text,
                           "extent": req.extent})


def speed_key(python: str, req: ClusterRequest, tile_px: int) -> tuple:
    return (python, req.backbone, req.weights, req.device, int(tile_px))


def speed_args(req: ClusterRequest, tile_px: int) -> list[str]:
    """``probe --speed`` arguments: the model's tiles/s for tiles of ``tile_px`` (imports torch)."""
    return to_argv(PROBE, {"raster": req.raster, "tile_size": tile_label(tile_px, "px"), "speed": True,
                           "backbone": req.backbone, "weights": req.weights, "device": req.device})


def probe(python: str, args: list[str], is_cancelled: Callable[[], bool] = lambda: False,
          timeout: float = PROBE_TIMEOUT_S) -> dict:
    """Run ``python -m engine ARGS`` and return its JSON with ``ok: True``.

    On failure: ``{'ok': False, 'bad_input': exit code was 2, 'error': the engine's error line}``;
    a cancelled call ends the process and returns ``{'ok': False, 'cancelled': True}``.
    Worker thread only.
    """
    try:
        proc = subprocess.Popen(engine_env.engine_command(python, *args), cwd=str(PLUGIN_DIR),
                                env=engine_env.run_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, text=True)
    except OSError as exc:
        return {"ok": False, "bad_input": False, "error": f"the engine Python {python} cannot be started ({exc})"}
    deadline = time.monotonic() + timeout
    while True:
        try:
            out, err = proc.communicate(timeout=0.1)
            break
        except subprocess.TimeoutExpired:
            if is_cancelled() or time.monotonic() > deadline:
                proc.kill()
                proc.communicate()
                return {"ok": False, "bad_input": False, "cancelled": is_cancelled(),
                        "error": f"the probe took more than {timeout:g} s"}
    if proc.returncode == 0:
        try:
            return {"ok": True, **json.loads(out.strip().splitlines()[-1])}
        except (IndexError, ValueError):
            pass
    return {"ok": False, "bad_input": proc.returncode == EXIT_BAD_INPUT, "error": error_line(err, proc.returncode)}


def error_line(stderr: str, returncode: int) -> str:
    """The engine's ``error: ...`` line without its prefix, else its last line."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for line in reversed(lines):
        if line.startswith(("error:", "failed:")):
            return line.split(":", 1)[1].strip()
    return lines[-1] if lines else f"the engine exited with code {returncode}"


# -- the estimate ----------------------------------------------------------------------------------
def estimate_seconds(tiles: int, tiles_per_s: float) -> float:
    return tiles / max(tiles_per_s, 1e-6) + STARTUP_S


def duration_text(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def estimate_text(tiles: dict, speed: dict | None, limited: bool = False) -> str:
    """'96 tiles of 64 px · about 10 s on cpu' from a tile probe and (when known) a speed probe.

    ``limited``: the run is limited to polygons (written to a file only at Run), which
    the probe did not see, so the count is an upper bound.
    """
    count = f"{'up to ' if limited else ''}{tiles['tiles']} tiles of {tiles['tile_px']} px"
    if speed is None:
        return f"{count} · timing the model…"
    if not speed.get("ok"):
        return f"{count} · no time estimate ({speed.get('error', 'the speed probe failed')})"
    seconds = estimate_seconds(tiles["tiles"], speed["tiles_per_s"])
    return f"{count} · about {duration_text(seconds)} on {speed.get('device', 'cpu')}"
