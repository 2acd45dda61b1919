"""Build the engine's Python environment from the lock shipped with the plugin.

Plain Python (no QGIS, no Qt): the dock's "Set up engine" task, the Processing
algorithm ``urbanform:setupengine``, tests and scripts all call ``install``.

Layout, under an engine home (in QGIS: ``<profile>/urbanform/engine``)::

    py3.11/current.json          which environment is in use, and the lock it was built from
    py3.11/env-20261130-011502/  a virtual environment (one per build)
    py3.11/.setup.lock           held while an install runs

An install builds a *new* environment next to the current one and points
``current.json`` at it (an atomic rename) only after ``python -m engine check``
passed inside it. A failed, cancelled or killed install therefore never
touches the engine in use; its half-built folder is removed (or, after a
crash, by the next install).

Packages come from ``requirements.lock`` (exact versions and hashes), with
``uv`` when it can be installed (a PyPI wheel) and pip otherwise. A package
index URL and local wheel folders can be given for proxied or offline sites.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

PLUGIN_DIR = Path(__file__).resolve().parents[2]       # plugin/runner/engine_setup.py -> the plugin folder
LOCK_FILE = PLUGIN_DIR / "requirements.lock"
RECORD = "urbanform-env.json"          # inside each environment: what it was built from
CURRENT = "current.json"               # per Python minor version: the environment in use
GIB = 1024 ** 3
# measured venv sizes from the lock (torch 2.14.1): Linux x86_64 with the CUDA libraries ~5.6 GiB;
# elsewhere torch is a CPU build. The margin covers downloads and unpacking.
SPACE_NEEDED = {"linux-cuda": 7.0 * GIB, "cuda": 5.0 * GIB, "cpu": 2.0 * GIB}
# PyTorch's own index for CUDA builds where PyPI's torch is CPU-only (Windows)
TORCH_CUDA_INDEX = "https://download.pytorch.org/whl/cu130"

STEPS = ("Check Python", "Check disk space", "Create environment", "Get uv", "Install PyTorch",
         "Install packages", "Check engine", "Switch to the new engine")


class SetupError(Exception):
    """An install that did not finish. ``code`` is stable (python, venv, disk, index, hashes, busy,
    cancelled, install, check); the message says what happened and the fix in plain words."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass
class Options:
    home: Path                              # the engine home (one sub-folder per Python minor version)
    python: str | None = None               # base interpreter; None: the Python QGIS runs on
    lock: Path = LOCK_FILE
    index_url: str = ""                     # '' = PyPI; a mirror or proxy URL otherwise
    wheel_dirs: list[Path] = field(default_factory=list)   # local folders of wheels (offline sites)
    offline: bool = False                   # only the wheel folders, never an index
    torch_build: str = "auto"               # auto (nvidia-smi decides), cpu or cuda
    use_uv: bool = True                     # False: pip only
    check_space: bool = True                # False only in tests that fill a disk on purpose
    plugin_dir: Path = PLUGIN_DIR           # put on PYTHONPATH for `python -m engine check`


# -- facts -----------------------------------------------------------------------------------------
def lock_hash(lock: Path = LOCK_FILE) -> str:
    """SHA-256 of the lock file: an environment built from another lock is out of date."""
    return hashlib.sha256(Path(lock).read_bytes()).hexdigest()


def venv_python(env: Path) -> Path:
    return env / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def env_root(home: Path, version: str) -> Path:
    """The folder of the environments for one Python minor version (``3.11.2`` -> ``py3.11``)."""
    return Path(home) / f"py{_minor(version)}"


def current(home: Path, version: str | None = None) -> dict | None:
    """The record of the environment in use for this Python version (QGIS's own by default), or None.

    Keys: env, python, lock_sha256, python_version, torch_build, installer, built, plugin_version.
    """
    version = version or platform.python_version()
    path = env_root(home, version) / CURRENT
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    env = path.parent / record.get("env", "")
    if not record.get("env") or not venv_python(env).is_file():
        return None
    record["python"] = str(venv_python(env))
    return record


def status(home: Path, lock: Path = LOCK_FILE, version: str | None = None) -> dict:
    """{'installed', 'python', 'current' (built from this lock), 'record'} for the dock and Check."""
    record = current(home, version)
    if record is None:
        return {"installed": False, "python": None, "current": False, "record": None}
    try:
        fresh = record.get("lock_sha256") == lock_hash(lock)
    except OSError:
        fresh = True                       # no lock shipped (a source checkout): nothing to compare
    return {"installed": True, "python": record["python"], "current": fresh, "record": record}


def base_python() -> str:
    """The interpreter to build from: the Python this code runs on (inside QGIS, QGIS's own Python).

    In QGIS ``sys.executable`` is often the QGIS program itself; the interpreter of the same
    version is then looked up next to ``sys.exec_prefix``.
    """
    exe = Path(getattr(sys, "_base_executable", "") or sys.executable)   # a venv's own base interpreter
    if exe.name.lower().startswith("python") and exe.is_file():
        return str(exe)
    v = sys.version_info
    names = ([f"python{v.major}.{v.minor}", f"python{v.major}", "python"] if sys.platform != "win32"
             else ["python.exe", f"python{v.major}.exe"])
    for folder in (Path(sys.exec_prefix) / "bin", Path(sys.exec_prefix), Path(sys.base_exec_prefix) / "bin",
                   Path("/usr/bin")):
        for name in names:
            if (folder / name).is_file():
                return str(folder / name)
    found = shutil.which(f"python{v.major}.{v.minor}") or shutil.which("python3")
    if found:
        return found
    raise SetupError("python", "No Python interpreter was found next to QGIS. Choose one under Engine > Python "
                               "(python3 on Linux and macOS, python.exe on Windows).")


def probe_python(python: str) -> dict:
    """{'version', 'venv': bool, 'ensurepip': bool} of an interpreter, or SetupError('python')."""
    path = Path(python)
    if not path.is_file():
        raise SetupError("python", f"The chosen Python {python} does not exist. Choose a Python interpreter "
                                   "(python3 on Linux and macOS, python.exe on Windows).")
    code = ("import json, platform, importlib.util as u; print(json.dumps({'version': platform.python_version(), "
            "'venv': u.find_spec('venv') is not None, 'ensurepip': u.find_spec('ensurepip') is not None}))")
    try:
        proc = subprocess.run([python, "-I", "-c", code], capture_output=True, text=True, timeout=60)
        info = json.loads(proc.stdout.strip().splitlines()[-1])
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
        raise SetupError("python", f"The chosen Python {python} is not a Python interpreter (it did not answer "
                                   "as one). Choose python3 on Linux and macOS, python.exe on Windows.") from None
    if tuple(int(p) for p in info["version"].split(".")[:2]) < (3, 9):
        raise SetupError("python", f"{python} is Python {info['version']}; the engine needs Python 3.9 or newer.")
    return info


def venv_fix(version: str) -> str:
    """The exact package that provides ``venv``/``ensurepip`` for this Python, in the system's words."""
    mm = _minor(version)
    if sys.platform.startswith("linux"):
        return (f"install the package python{mm}-venv (Debian/Ubuntu: sudo apt install python{mm}-venv; "
                f"Fedora: sudo dnf install python{mm.replace('.', '')}), then Set up engine again")
    return "reinstall Python with its standard library (venv and ensurepip), then Set up engine again"


def nvidia_driver() -> str | None:
    """The NVIDIA driver version nvidia-smi reports, or None (no GPU, no driver, no nvidia-smi)."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        proc = subprocess.run([exe, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                              text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    line = proc.stdout.strip().splitlines()[0].strip() if proc.returncode == 0 and proc.stdout.strip() else ""
    return line or None


def torch_plan(choice: str = "auto", system: str | None = None, driver: str | None = "?") -> dict:
    """Which torch build fits this machine: {'build': 'cuda'|'cpu', 'index_url': str|None, 'why': str}.

    On Linux PyPI's torch is the CUDA build and also runs on the CPU, so the lock serves both. On
    Windows PyPI's torch is CPU-only: with a driver, torch comes from PyTorch's CUDA index first.
    On macOS torch uses the CPU (and Apple's GPU through MPS).
    """
    system = system or platform.system()
    if driver == "?":
        driver = nvidia_driver() if choice == "auto" else None
    build = choice if choice in ("cpu", "cuda") else ("cuda" if driver else "cpu")
    why = (f"NVIDIA driver {driver} found" if driver else "no NVIDIA driver found") if choice == "auto" \
        else f"{choice} chosen"
    if system == "Linux":
        return {"build": build, "index_url": None, "space": "linux-cuda",
                "why": f"{why}; PyPI's torch for Linux includes CUDA and runs on the CPU too"}
    if system == "Windows" and build == "cuda":
        return {"build": "cuda", "index_url": TORCH_CUDA_INDEX, "space": "cuda",
                "why": f"{why}; torch comes from PyTorch's CUDA index"}
    return {"build": "cpu", "index_url": None, "space": "cpu", "why": f"{why}; torch runs on the CPU"
            + (" (and Apple GPUs through MPS)" if system == "Darwin" else "")}


# -- errors in plain words -------------------------------------------------------------------------
_DISK = re.compile(r"No space left on device|\[Errno 28\]|os error 28|Disk quota exceeded", re.I)
# the index itself could not be reached (no answer, no name, a proxy in the way): nothing else will come from it
_UNREACHABLE_TEXT = (r"NewConnectionError|Failed to establish a new connection|Connection refused|"
                     r"Temporary failure in name resolution|Name or service not known|Network is unreachable|"
                     r"ProxyError|ConnectTimeout")
_UNREACHABLE = re.compile(_UNREACHABLE_TEXT, re.I)
# any failure to fetch the packages: the index unreachable, or reached without what the lock names
_NET = re.compile(_UNREACHABLE_TEXT + r"|Could not fetch URL|Proxy Authentication Required|\b407\b|tcp connect error|"
                  r"dns error|error sending request|Failed to fetch|timed out|"
                  r"Could not find a version that satisfies|No matching distribution found|"
                  r"not found in the (?:package registry|provided package locations)|Because .* was not found", re.I)
_CERT = re.compile(r"invalid peer certificate|CERTIFICATE_VERIFY_FAILED|certificate verify failed|UnknownIssuer",
                   re.I)
_HASH = re.compile(r"do not match the hashes|Hash mismatch|hash mismatch", re.I)


def explain(output: str, opts: Options, free: int | None = None, needed: float | None = None) -> SetupError:
    """Turn an installer's output into a SetupError whose message names the cause and the fix."""
    if _DISK.search(output):
        where = Path(opts.home)
        free = free if free is not None else _free(where)
        return SetupError("disk", f"The disk holding {where} is full ({free / GIB:.1f} GB free; the engine needs "
                                  f"about {(needed or SPACE_NEEDED['cpu']) / GIB:.1f} GB). Free some space, or set "
                                  "another Engine folder, then Set up engine again.")
    if _HASH.search(output):
        return SetupError("hashes", "A downloaded package did not match the hash recorded in the plugin's "
                                    "requirements.lock (a proxy or mirror served another file). Use the index "
                                    "or wheel folder the lock was made from, then Set up engine again.")
    if _CERT.search(output):
        return SetupError("index", "The package index's certificate was not trusted (a proxy that inspects "
                                   "secure connections usually causes this). Fix: install your organisation's "
                                   "certificate authority into the system's certificate store, or set the index "
                                   "URL of your internal mirror under Engine > Package index, or use a wheel "
                                   "folder (see the README's Install section), then Set up engine again.")
    if _NET.search(output):
        index = opts.index_url or "https://pypi.org/simple"
        where = f"the wheel folder {', '.join(map(str, opts.wheel_dirs))}" if opts.offline else \
            f"the package index {index}"
        return SetupError("index", f"The packages could not be fetched from {where}: it is unreachable, a proxy "
                                   "refused the connection, or a package is missing there. Fix: check the network "
                                   "or proxy (an index URL of your mirror can be set under Engine > Package index); "
                                   "or, without internet, on a computer with the same system and Python run "
                                   "`pip download --require-hashes -r requirements.lock -d wheels` (the lock is in "
                                   "the plugin folder), copy the `wheels` folder here, choose it under "
                                   "Engine > Wheel folder and Set up engine again.")
    tail = [ln for ln in output.strip().splitlines() if ln.strip()][-3:]
    return SetupError("install", "The package installer failed: " + " / ".join(tail) +
                      " (the whole output is in the log).")


def _free(path: Path) -> int:
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


# -- the install -----------------------------------------------------------------------------------
class _Runner:
    """Runs installer commands one after another, streaming their output, killable on cancel."""

    def __init__(self, log: Callable[[str], None], is_cancelled: Callable[[], bool]):
        self.log = log
        self.is_cancelled = is_cancelled

    def __call__(self, cmd: list[str], env: dict | None = None, cwd: Path | None = None) -> tuple[int, str]:
        self.log("$ " + " ".join(str(c) for c in cmd))
        lines: list[str] = []
        kwargs = {"start_new_session": True} if os.name == "posix" else \
            {"creationflags": getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)}
        try:
            proc = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, text=True, errors="replace", env=env,
                                    cwd=str(cwd) if cwd else None, bufsize=1, **kwargs)
        except OSError as exc:
            return 127, str(exc)

        def pump():
            for line in iter(proc.stdout.readline, ""):
                line = line.rstrip("\n")
                lines.append(line)
                self.log(line)
            proc.stdout.close()

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        while proc.poll() is None:
            if self.is_cancelled():
                _kill_tree(proc)
                reader.join(timeout=5)
                raise SetupError("cancelled", "Set-up cancelled; the engine in use (if any) is unchanged.")
            time.sleep(0.1)
        reader.join(timeout=10)
        return proc.returncode, "\n".join(lines)


def _kill_tree(proc: subprocess.Popen) -> None:
    try:
        if os.name == "posix":
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.terminate()
        proc.wait(timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL) if os.name == "posix" else proc.kill()
        except OSError:
            pass
        proc.wait()


def _index_args(opts: Options) -> list[str]:
    """Where packages come from: the wheel folders, then the index (PyPI unless set), or only the folders."""
    args: list[str] = []
    for folder in opts.wheel_dirs:
        args += ["--find-links", str(folder)]
    if opts.offline:
        args.append("--no-index")
    elif opts.index_url:
        args += ["--index-url", opts.index_url]
    return args


def _installer_env(opts: Options) -> dict:
    env = dict(os.environ)
    for leaked in ("PYTHONHOME", "PYTHONPATH", "VIRTUAL_ENV", "PYTHONSTARTUP"):
        env.pop(leaked, None)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    # trust the system's certificates, as the browser does: sites whose proxy inspects TLS install their
    # own authority there (uv's built-in roots would refuse it)
    env.setdefault("UV_SYSTEM_CERTS", "1")
    env.setdefault("UV_NATIVE_TLS", "1")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _acquire(root: Path) -> Path:
    """A lock file so that two installs never build into the same folder at once."""
    root.mkdir(parents=True, exist_ok=True)
    lock = root / ".setup.lock"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                pid = int(lock.read_text().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid and _alive(pid):
                raise SetupError("busy", f"Another engine set-up (process {pid}) is running for {root}; wait for "
                                         "it to finish.") from None
            lock.unlink(missing_ok=True)         # left by a crashed install
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(str(os.getpid()))
        return lock
    raise SetupError("busy", f"Could not lock {root} for the set-up; remove {lock} if no set-up is running.")


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this computer, without disturbing it.

    POSIX: signal 0 (existence and permission check only; a process of another user is alive).
    Windows: os.kill(pid, 0) sends Ctrl+C there (signal 0 is CTRL_C_EVENT, to the process group), which
    could stop the running set-up or QGIS itself; so the process is opened for query and its exit code
    read (STILL_ACTIVE) through ctypes, which every QGIS Python has (psutil is not always there).
    """
    if pid <= 0:                         # 0 and negatives name process groups on POSIX, never one set-up
        return False
    if pid == os.getpid():
        return True
    if sys.platform == "win32":
        return _alive_windows(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:                      # EPERM: it exists, owned by another user
        return True
    return True


def _alive_windows(pid: int) -> bool:
    import ctypes
    from ctypes import wintypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    kernel32.OpenProcess.restype = wintypes.HANDLE
    kernel32.OpenProcess.argtypes = (wintypes.DWORD, wintypes.BOOL, wintypes.DWORD)
    kernel32.GetExitCodeProcess.argtypes = (wintypes.HANDLE, ctypes.POINTER(wintypes.DWORD))
    kernel32.CloseHandle.argtypes = (wintypes.HANDLE,)
    handle = kernel32.OpenProcess(0x1000, False, pid)          # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return ctypes.get_last_error() == 5                     # ERROR_ACCESS_DENIED: it exists
    try:
        code = wintypes.DWORD()
        if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
            return True
        return code.value == 259                                # STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)


def _remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _sweep_leftovers(root: Path, keep: set[str]) -> None:
    """Remove environments no record points to (a crashed build, an old engine no longer in use)."""
    for child in root.glob("env-*"):
        if child.name not in keep and child.is_dir():
            _remove(child)


def install(opts: Options, log: Callable[[str], None] = print,
            step: Callable[[int, int, str], None] = lambda i, n, name: None,
            is_cancelled: Callable[[], bool] = lambda: False) -> dict:
    """Build a new engine environment and switch to it; returns its record (see ``current``).

    ``step(i, n, name)`` is called before each step, ``log`` with every line of installer output.
    Raises SetupError; the engine in use before the call is then unchanged.
    """
    run = _Runner(log, is_cancelled)
    n = len(STEPS)
    t0 = time.monotonic()

    def at(name: str) -> None:
        if is_cancelled():
            raise SetupError("cancelled", "Set-up cancelled; the engine in use (if any) is unchanged.")
        step(STEPS.index(name), n, name)
        log(f"== {name}")

    at("Check Python")
    python = opts.python or base_python()
    info = probe_python(python)
    lock = Path(opts.lock)
    if not lock.is_file():
        raise SetupError("install", f"The plugin's lock file {lock} is missing; reinstall the plugin from its zip.")
    version = info["version"]
    log(f"Python {version} at {python}")
    if not (info["venv"] and info["ensurepip"]):
        raise SetupError("venv", f"{python} cannot create virtual environments (the venv/ensurepip module is "
                                 f"missing): {venv_fix(version)}.")
    root = env_root(opts.home, version)
    held = _acquire(root)
    env_dir = None
    try:
        before = current(opts.home, version)
        _sweep_leftovers(root, {before["env"]} if before else set())

        at("Check disk space")
        plan = torch_plan(opts.torch_build)
        log(f"torch build: {plan['build']} ({plan['why']})")
        needed = SPACE_NEEDED[plan["space"]]
        free = _free(root)
        log(f"free space: {free / GIB:.1f} GB, needed: about {needed / GIB:.1f} GB")
        if opts.check_space and free < needed:
            raise SetupError("disk", f"The disk holding {root} has {free / GIB:.1f} GB free; the engine needs "
                                     f"about {needed / GIB:.1f} GB. Free some space, or set another Engine "
                                     "folder, then Set up engine again.")

        at("Create environment")
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        env_dir = root / f"env-{stamp}"
        while env_dir.exists():
            stamp += "x"
            env_dir = root / f"env-{stamp}"
        env = _installer_env(opts)
        rc, out = run([python, "-m", "venv", env_dir], env=env)
        if rc != 0:
            if _DISK.search(out):
                raise explain(out, opts, needed=needed)
            if re.search(r"ensurepip|No module named venv", out):
                raise SetupError("venv", f"{python} could not create a virtual environment: {venv_fix(version)}.")
            raise SetupError("venv", f"{python} could not create a virtual environment: "
                                     f"{out.strip().splitlines()[-1] if out.strip() else rc}.")
        py = venv_python(env_dir)

        at("Get uv")
        uv = None
        if opts.use_uv:
            rc, out = run([py, "-m", "pip", "install", "--quiet", "uv", *_index_args(opts)], env=env)
            if rc == 0:
                candidate = env_dir / ("Scripts/uv.exe" if sys.platform == "win32" else "bin/uv")
                uv = candidate if candidate.is_file() else None
            elif _DISK.search(out):
                raise explain(out, opts, needed=needed)
            elif not opts.wheel_dirs and (_UNREACHABLE.search(out) or _CERT.search(out)):
                # the packages would come from the same index: say so now, not after pip's retries again
                raise explain(out, opts, needed=needed)
            else:
                log("uv could not be installed; pip installs the packages instead (slower).")

        def pip_install(args: list[str], hashes: bool) -> None:
            if uv is not None:
                cmd = [uv, "pip", "install", "--python", py, *(["--require-hashes"] if hashes else []), *args,
                       *_index_args(opts)]
            else:
                cmd = [py, "-m", "pip", "install", "--progress-bar", "off",
                       *(["--require-hashes"] if hashes else []), *args, *_index_args(opts)]
            code, output = run(cmd, env=env)
            if code != 0:
                raise explain(output, opts, needed=needed)

        at("Install PyTorch")
        if plan["index_url"]:
            torch_pins = [ln.split(";")[0].split("\\")[0].strip() for ln in lock.read_text().splitlines()
                          if re.match(r"^(torch|torchvision)==", ln)]
            extra = opts.index_url or "https://pypi.org/simple"
            pip_install([*torch_pins, "--index-url", plan["index_url"], "--extra-index-url", extra], hashes=False)
        else:
            log("torch comes with the other packages from the lock")

        at("Install packages")
        pip_install(["-r", lock], hashes=True)

        at("Check engine")
        check_env = dict(env, PYTHONPATH=str(opts.plugin_dir))
        rc, out = run([py, "-m", "engine", "check"], env=check_env, cwd=opts.plugin_dir)
        try:
            report = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            report = {"ok": False}
        if rc != 0 or not report.get("ok"):
            raise SetupError("check", "The new environment was built but the engine does not start in it: "
                                      f"{report.get('error') or (out.strip().splitlines() or ['no output'])[-1]}. "
                                      "The engine in use is unchanged; the log has the details.")

        at("Switch to the new engine")
        record = {"env": env_dir.name, "lock_sha256": lock_hash(lock), "python_version": version,
                  "base_python": python, "torch": report.get("torch"), "devices": report.get("devices"),
                  "torch_build": plan["build"], "installer": "uv" if uv else "pip",
                  "built": _dt.datetime.now().isoformat(timespec="seconds"),
                  "seconds": round(time.monotonic() - t0, 1), "plugin_version": _plugin_version(opts.plugin_dir)}
        (env_dir / RECORD).write_text(json.dumps(record, indent=2), encoding="utf-8")
        tmp = root / f".{CURRENT}.part-{os.getpid()}"
        tmp.write_text(json.dumps(record, indent=2), encoding="utf-8")
        os.replace(tmp, root / CURRENT)
        env_dir = None                      # in use now: never removed below
        if before:
            _remove(root / before["env"])
        record["python"] = str(venv_python(root / record["env"]))
        log(f"engine ready: {record['python']} (torch {record['torch']}, {record['seconds']} s)")
        return record
    finally:
        if env_dir is not None:
            _remove(env_dir)
        held.unlink(missing_ok=True)


def _plugin_version(plugin_dir: Path) -> str:
    match = re.search(r"^version=(.+)$", (Path(plugin_dir) / "metadata.txt").read_text(encoding="utf-8")
                      if (Path(plugin_dir) / "metadata.txt").is_file() else "", re.M)
    return match.group(1).strip() if match else "?"


def main(argv: list[str] | None = None) -> int:
    """``python plugin/runner/engine_setup.py --home DIR [--python P] [--index-url U] [--wheels D ...]``."""
    import argparse

    p = argparse.ArgumentParser(description="Build the Urban Form Mapper engine environment from the lock.")
    p.add_argument("--home", required=True, type=Path, help="engine home folder")
    p.add_argument("--python", default=None, help="base Python interpreter (default: this one)")
    p.add_argument("--lock", type=Path, default=LOCK_FILE)
    p.add_argument("--index-url", default="")
    p.add_argument("--wheels", type=Path, action="append", default=[], help="a local folder of wheels")
    p.add_argument("--offline", action="store_true", help="only the wheel folders, no index")
    p.add_argument("--torch", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--pip", action="store_true", help="use pip instead of uv")
    a = p.parse_args(argv)
    opts = Options(home=a.home, python=a.python, lock=a.lock, index_url=a.index_url, wheel_dirs=a.wheels,
                   offline=a.offline, torch_build=a.torch, use_uv=not a.pip)
    try:
        record = install(opts, step=lambda i, n, name: print(f"[{i + 1}/{n}] {name}", flush=True))
    except SetupError as exc:
        print(f"error ({exc.code}): {exc}", file=sys.stderr)
        return 130 if exc.code == "cancelled" else 2
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
