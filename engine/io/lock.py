"""One writer per output: an exclusive lock on a run's output set, across processes.

Two runs writing the same ``--out`` at once would both pass the "already
exists" check of :class:`~engine.io.atomic.OutputSet` and then replace each
other's files, both reporting success. A run therefore locks its outputs
before any work and keeps the lock until its files are committed (or removed):

    from engine.io import OutputLock, OutputSet

    with OutputLock(outputs.paths()), OutputSet(outputs.paths(), overwrite=params.overwrite) as outset:
        ...                                  # the work, writing to outset.temp(path)
        outset.commit()

Take the lock first, then build the ``OutputSet``: its existence check then
sees what a run that held the lock before has committed. A second run on any
of the same outputs stops at once with :class:`~engine.errors.BadInput` (exit
2, before work): "another run (pid N on HOST, started T) is writing OUT; wait
for it or choose another output". ``OutputLock(paths, wait=60)`` waits up to
that many seconds for the other run instead.

The lock of an output ``DIR/NAME`` is the file ``DIR/.NAME.lock`` (one per
output of the set, taken in a fixed order so two runs never deadlock), created
atomically with ``O_CREAT | O_EXCL`` and holding JSON: pid, host, start time
(ISO 8601 and epoch seconds), the process's own start time where the system
tells it (to recognise a reused pid) and the outputs. It is removed when the
block is left: on success, on any exception, ``Cancelled`` and
``KeyboardInterrupt`` included. A run killed outright (SIGKILL, a crash, a
power cut) cannot remove it, so a lock is *stale*, and taken over, when

- it was written on this host and its process no longer runs (or the pid now
  belongs to a process started later), or
- it cannot be read as a lock (empty, truncated, garbage) and is older than
  :data:`GARBAGE_STALE_S` seconds (younger, it may be a lock being written).

A lock from another host (an output folder on a network share) is never taken
over: the message names the host and the lock file to delete if that run has
ended. Paths are resolved (symlinks) before locking, so two names of one file
share one lock; on a case-insensitive file system the two lock names are one
file too.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path

from ..contract.outputs import lock_name
from ..errors import BadInput

#: a lock file that cannot be read is taken over once it is this old (seconds)
GARBAGE_STALE_S = 180.0
#: how often a waiting run looks again (seconds)
POLL_S = 0.2


def lock_path(output: "str | Path") -> Path:
    """The lock file of one output: ``.{name}.lock`` next to it (after resolving symlinks)."""
    return lock_name(os.path.realpath(os.fspath(output)))


def _process_start(pid: int) -> "str | None":
    """When process ``pid`` started, as an opaque token, where the system tells it cheaply (Linux)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read().decode("ascii", "replace")
    except OSError:
        return None
    try:
        return stat.rsplit(")", 1)[1].split()[19]      # field 22, starttime in clock ticks since boot
    except IndexError:
        return None


def _pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this host (never signals it)."""
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    if sys.platform == "win32":                      # os.kill(pid, 0) would send it Ctrl+C there
        import ctypes

        kernel32 = ctypes.windll.kernel32
        handle = kernel32.OpenProcess(0x1000, False, pid)          # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return ctypes.GetLastError() == 5                       # access denied: it exists
        try:
            code = ctypes.c_ulong()
            if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
                return True
            return code.value == 259                                # STILL_ACTIVE
        finally:
            kernel32.CloseHandle(handle)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:                          # another user's process: alive
        return True
    except OSError:
        return False
    return True


def _read_holder(path: Path) -> "dict | None":
    """The lock's JSON, or None when it cannot be read as one of our locks."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("pid"), int) or not isinstance(data.get("host"), str):
        return None
    return data


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


def _is_stale(path: Path, holder: "dict | None") -> bool:
    if holder is None:
        return _age(path) > GARBAGE_STALE_S
    if holder["host"] != socket.gethostname():
        return False
    pid = holder["pid"]
    if not _pid_alive(pid):
        return True
    started = holder.get("proc_start")
    now = _process_start(pid)
    return bool(started and now and started != now)            # the pid was reused by a later process


def _describe(holder: "dict | None") -> str:
    if holder is None:
        return "another run"
    return f"another run (pid {holder['pid']} on {holder['host']}, started {holder.get('started', '?')})"


class OutputLock:
    """Context manager: an exclusive lock on the files ``paths`` (see the module docstring).

    ``wait``: seconds to wait for another run's lock to go (0: stop at once
    with BadInput). ``acquire()``/``release()`` do the same as entering and
    leaving the block; ``release`` removes only lock files this object made.
    """

    def __init__(self, paths: "Iterable[str | Path] | str | Path", wait: float = 0.0):
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        self.outputs = [Path(p) for p in paths]
        if not self.outputs:
            raise ValueError("OutputLock needs at least one output path")
        locks: dict[str, tuple[Path, Path]] = {}
        for out in self.outputs:
            lp = lock_path(out)
            locks.setdefault(os.path.normcase(str(lp)), (lp, out))
        self._locks = [locks[k] for k in sorted(locks)]          # a fixed order: no two runs deadlock
        self.wait = float(wait)
        self._held: list[tuple[Path, str]] = []                  # (lock file, the exact text we wrote)

    @property
    def lock_files(self) -> list[Path]:
        return [lp for lp, _ in self._locks]

    def _record(self) -> str:
        now = time.time()
        return json.dumps({
            "pid": os.getpid(), "host": socket.gethostname(),
            "started": datetime.fromtimestamp(now, timezone.utc).astimezone().isoformat(timespec="seconds"),
            "started_s": now, "proc_start": _process_start(os.getpid()),
            "outputs": [os.fspath(p) for p in self.outputs],
        })

    def _try_create(self, lp: Path, text: str) -> bool:
        try:
            fd = os.open(lp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        except IsADirectoryError:
            raise BadInput(f"cannot lock output: {str(lp)!r} is a folder; remove it.") from None
        except OSError as exc:
            if not lp.parent.is_dir():
                raise BadInput(f"output folder {str(lp.parent)!r} does not exist; create it or choose another "
                               "--out.") from None
            if lp.is_dir():
                raise BadInput(f"cannot lock output: {str(lp)!r} is a folder; remove it.") from None
            raise BadInput(f"cannot create the lock file {str(lp)!r} ({exc.strerror}); "
                           "choose an output in a writable folder.") from None
        try:
            os.write(fd, text.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        return True

    def _take_over(self, lp: Path, seen: "bytes | None") -> None:
        """Remove a stale lock, unless another run replaced it since we read it.

        A second lock (``.NAME.lock.break``) keeps two runs from both breaking
        the same stale lock and one of them removing the lock the other has
        just made.
        """
        brk = lp.with_name(lp.name + ".break")
        if _age(brk) > 30.0:                     # left by a run killed in this very instant
            brk.unlink(missing_ok=True)
        try:
            fd = os.open(brk, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return                               # someone else is breaking it: look again
        os.close(fd)
        try:
            try:
                now = lp.read_bytes()
            except FileNotFoundError:
                return
            except OSError:
                now = None
            if now == seen:
                lp.unlink(missing_ok=True)
        finally:
            brk.unlink(missing_ok=True)

    def _acquire_one(self, lp: Path, out: Path, text: str, deadline: float) -> None:
        takeovers = 0
        while True:
            if self._try_create(lp, text):
                self._held.append((lp, text))
                return
            try:
                seen = lp.read_bytes()
            except FileNotFoundError:
                continue                         # released between our create and our read
            except OSError:
                seen = None
            holder = _read_holder(lp)
            if _is_stale(lp, holder):
                takeovers += 1
                if takeovers > 50:
                    raise BadInput(f"the lock file {str(lp)!r} is left by a run that has ended but cannot be "
                                   "removed; delete it, or choose another output.")
                self._take_over(lp, seen)
                time.sleep(0.01 * min(takeovers, 10))
                continue
            if time.monotonic() < deadline:
                time.sleep(POLL_S)
                continue
            msg = f"{_describe(holder)} is writing {str(out)!r}; wait for it or choose another output"
            if holder is not None and holder["host"] != socket.gethostname():
                msg += f" (if that run has ended, delete {str(lp)!r})"
            elif holder is None:
                msg += f" (if no run is writing it, delete {str(lp)!r})"
            raise BadInput(msg + ".")

    def acquire(self) -> "OutputLock":
        if self._held:
            raise RuntimeError("this OutputLock is already held")
        text = self._record()
        self._pid = os.getpid()
        deadline = time.monotonic() + max(self.wait, 0.0)
        try:
            for lp, out in self._locks:
                self._acquire_one(lp, out, text, deadline)
        except BaseException:
            self.release()
            raise
        return self

    def release(self) -> None:
        """Remove the lock files this object created (and only those)."""
        held, self._held = self._held, []
        if getattr(self, "_pid", None) != os.getpid():
            return                               # a forked child never removes its parent's lock
        for lp, text in reversed(held):
            try:
                if lp.read_bytes() == text.encode("utf-8"):
                    lp.unlink()
            except OSError:
                pass

    @property
    def held(self) -> bool:
        return bool(self._held)

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, exc_type, exc, tb) -> None:
        self.release()

    def __del__(self) -> None:                   # a lock object dropped without release (never on purpose)
        with contextlib.suppress(Exception):     # interpreter shutdown
            if self._held:
                self.release()


def lock_outputs(paths: "Iterable[str | Path] | str | Path", wait: float = 0.0) -> OutputLock:
    """``with lock_outputs(paths):`` is ``with OutputLock(paths, wait):``."""
    return OutputLock(paths, wait=wait)
