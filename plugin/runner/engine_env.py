"""Which Python runs the engine, and whether it works.

The engine needs torch, rasterio and friends, which QGIS's own Python rarely
has, so it runs in its own interpreter. In order of preference:

1. ``URBANFORM_ENGINE_PYTHON`` from the environment (servers, CI);
2. the path saved in the settings (/urbanform/engine_python);
3. the ``.venv`` next to the plugin (running from a source checkout, ``make setup``);
4. the engine the plugin set up itself in the QGIS profile (``urbanform/engine``, see
   plugin/runner/engine_setup.py: "Set up engine" in the panel, or ``urbanform:setupengine``);
5. a ``python3`` on the PATH that can import torch.

``detect`` runs once per panel (and again only when asked): with no engine found
the panel offers "Set up engine" instead of searching again.

``check(python)`` runs ``python -m engine check`` (a few seconds: it imports
torch) and returns its JSON, or a dict with ``ok: False`` and the fix.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from .. import settings
from ..paths import PLUGIN_DIR
from . import engine_setup

CHECKOUT_VENV = PLUGIN_DIR / ".venv"          # `make setup` in a source checkout (a zip has none)
SETUP_HINT = ("Click Set up engine in the Urban Form Mapper panel (or run Processing > Urban Form Mapper > "
              "Set up engine): it installs the engine's Python packages into the QGIS profile, no terminal "
              "needed. An engine you built yourself can be chosen under Engine > Python.")


def _venv_python(folder: Path) -> Path:
    return folder / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def engine_home() -> Path:
    """Where "Set up engine" builds: the setting /urbanform/engine_home, else ``<profile>/urbanform/engine``."""
    saved = settings.get("engine_home", "", str)
    if saved:
        return Path(saved)
    from qgis.core import QgsApplication

    return Path(QgsApplication.qgisSettingsDirPath()) / "urbanform" / "engine"


def setup_options(**overrides) -> engine_setup.Options:
    """The installer's options from the settings (Engine > Package index, Wheel folder, Python)."""
    wheels = [Path(w) for w in settings.get("wheel_dir", "", str).split(os.pathsep) if w.strip()]
    opts = engine_setup.Options(home=engine_home(), python=settings.get("base_python", "", str) or None,
                                index_url=settings.get("index_url", "", str).strip(), wheel_dirs=wheels,
                                torch_build=settings.get("torch_build", "auto", str) or "auto", plugin_dir=PLUGIN_DIR)
    for key, value in overrides.items():
        setattr(opts, key, value)
    return opts


def managed_status() -> dict:
    """engine_setup.status for this profile's engine: installed, python, current (built from this lock)."""
    try:
        return engine_setup.status(engine_home())
    except Exception:  # noqa: BLE001 - no QgsApplication, unreadable folder: treat as not installed
        return {"installed": False, "python": None, "current": False, "record": None}


def engine_line() -> str:
    """The engine this profile set up, in one line (no process started): for the About box."""
    status = managed_status()
    if not status["installed"]:
        return f"none set up in {engine_home()} yet."
    record = status["record"]
    state = "current" if status["current"] else "built for another plugin version: Update engine"
    return (f"{status['python']} (Python {record.get('python_version')}, torch {record.get('torch')}, "
            f"{record.get('torch_build')} build, {state}).")


def candidates() -> list[tuple[str, str]]:
    """(source, python path) in order of preference; paths not checked."""
    out = []
    if os.environ.get("URBANFORM_ENGINE_PYTHON"):
        out.append(("environment", os.environ["URBANFORM_ENGINE_PYTHON"]))
    saved = settings.get("engine_python", "", str)
    if saved:
        out.append(("settings", saved))
    out.append(("source checkout", str(_venv_python(CHECKOUT_VENV))))
    managed = managed_status()
    if managed["installed"]:
        out.append(("engine set up by the plugin", managed["python"]))
    system = shutil.which("python3")
    if system:
        out.append(("system python3", system))
    return out


def chosen() -> str | None:
    """The engine Python chosen explicitly (environment, then settings): known at once, without a search."""
    return os.environ.get("URBANFORM_ENGINE_PYTHON") or settings.get("engine_python", "", str) or None


def detect() -> str | None:
    """The first candidate that exists (the environment and settings win even if broken: they were chosen)."""
    for source, path in candidates():
        if source in ("environment", "settings"):
            return path
        if Path(path).is_file() and (source != "system python3" or _imports_torch(path)):
            return path
    return None


_TORCH_CACHE: dict[str, bool] = {}


def _imports_torch(python: str) -> bool:
    """Whether ``python`` can import the engine's libraries (slow: imports torch; cached per session)."""
    if python not in _TORCH_CACHE:
        try:
            _TORCH_CACHE[python] = subprocess.run([python, "-c", "import torch, rasterio"], capture_output=True,
                                                  timeout=60).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            _TORCH_CACHE[python] = False
    return _TORCH_CACHE[python]


def engine_command(python: str, tool: str, *args: str) -> list[str]:
    return [python, "-m", "engine", tool, *args]


def run_env() -> dict:
    """Environment for engine processes: the plugin folder importable, no QGIS Python paths leaking in."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(PLUGIN_DIR)
    env.pop("PYTHONHOME", None)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def check(python: str | None, timeout: float = 120) -> dict:
    """Ask ``python`` to run ``-m engine check``: {'ok', 'python', 'torch', 'devices'} or {'ok': False, 'error'}."""
    hint = SETUP_HINT
    if not python:
        return {"ok": False, "error": f"No engine Python is set and none was found. {hint}"}
    if not Path(python).is_file():
        return {"ok": False, "python": python, "error": f"The engine Python {python} does not exist. {hint}"}
    try:
        proc = subprocess.run(engine_command(python, "check"), capture_output=True, text=True, timeout=timeout,
                              cwd=str(PLUGIN_DIR), env=run_env())
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"ok": False, "python": python, "error": f"{python} could not run the engine ({exc}). {hint}"}
    try:
        info = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"ok": False, "python": python, "error": f"{python} cannot run the engine: {last}. {hint}"}
    if not info.get("ok"):
        info["error"] = f"{info.get('error', 'the engine is not usable').rstrip('. ')}. {hint}"
    return info
