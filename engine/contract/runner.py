"""Run one engine command in a subprocess and follow its JSON progress lines (stdlib only).

The one runner of every face that runs the engine as a process: the plugin's
dock and Processing algorithms (``plugin.runner.engine_process``) and the
service's jobs (``engine.service.jobs``). It never touches a GUI: progress goes
to a callback, cancellation is polled from a callable, and the caller decides
what to show. Cancelling sends SIGTERM (the engine then removes its temporary
files and exits 130); a process that does not stop within ``grace`` seconds is
killed, and any temporary files it left are removed here. A run stopped by bad
input ends with the engine's error event (``progress.error_event``): the result
carries its parameter and code (``problem``); the event is not passed on as
progress.
"""
from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import progress
from .outputs import lock_name, partial_glob
from .problems import REJECTED, Problem

EXIT_BAD_INPUT = progress.EXIT_BAD_INPUT
EXIT_CANCELLED = progress.EXIT_CANCELLED


@dataclass
class EngineResult:
    returncode: int
    stderr: str
    cancelled: bool
    last_event: dict = field(default_factory=dict)      # the last progress (or result) event, never the error
    tool: str = ""                                     # the engine tool that ran (the command line's first word)
    error: str = ""                                    # the error event's message (bad input), else ""
    param: str | None = None                           # ... the parameter it names (the contract's name), or None
    code: str | None = None                            # ... and its engine.contract.problems code, or None
    pid: int | None = None                             # the engine process, once started

    @property
    def problem(self) -> Problem | None:
        """The bad input the engine pinned on one parameter, as a Problem (the message in the engine's words:
        a face names the parameter its own way); None otherwise."""
        if self.cancelled or self.returncode != EXIT_BAD_INPUT or not self.param:
            return None
        return Problem(self.param, self.code or REJECTED, self.error or self.message)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.cancelled

    @property
    def message(self) -> str:
        """The engine's own last words (its error line), for a message bar."""
        if self.cancelled:
            return "Cancelled; no output was written."
        lines = [ln for ln in self.stderr.strip().splitlines() if ln.strip()]
        for line in reversed(lines):
            if line.startswith(("error:", "failed:")):
                return line.split(":", 1)[1].strip()
        if self.error:
            return self.error
        if self.returncode < 0:
            return f"The engine process was killed (signal {-self.returncode})."
        return lines[-1] if lines else f"The engine exited with code {self.returncode}."


def _pump(stream, sink) -> None:
    for line in iter(stream.readline, ""):
        sink(line)
    stream.close()


def run_command(command: list[str], *, cwd: str | None = None, env: dict | None = None,
                on_event: Callable[[dict], None] | None = None, is_cancelled: Callable[[], bool] = lambda: False,
                grace: float = 30.0, outputs: list[Path] | None = None,
                on_start: Callable[[int], None] | None = None, **popen) -> EngineResult:
    """Run ``command`` (``[python, -m, engine, TOOL, ...]``) to the end (or until cancelled); its EngineResult.

    ``outputs``: the files the run writes; after a failed or cancelled run the temporary files and locks the
    process left next to them are removed. ``popen``: more ``subprocess.Popen`` arguments (a new session).
    """
    tool = command[3] if len(command) > 3 and command[1:3] == ["-m", "engine"] else ""
    try:
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, text=True, bufsize=1, **popen)
    except OSError as exc:
        return EngineResult(-1, f"error: the engine Python {command[0]} cannot be started ({exc}).", False, tool=tool)
    if on_start is not None:
        on_start(proc.pid)
    lines: queue.Queue = queue.Queue()
    errors: list[str] = []
    readers = [threading.Thread(target=_pump, args=(proc.stdout, lines.put), daemon=True),
               threading.Thread(target=_pump, args=(proc.stderr, errors.append), daemon=True)]
    for t in readers:
        t.start()
    cancelled = False
    last: dict = {}
    error: dict = {}
    deadline = None
    try:
        while True:
            try:
                line = lines.get(timeout=0.1)
            except queue.Empty:
                line = None
            if line:
                try:
                    event = json.loads(line)
                except ValueError:
                    errors.append(line)
                else:
                    if isinstance(event, dict) and progress.is_error(event):
                        error = event                       # the bad input, named: not progress
                    else:
                        last = event
                        if on_event is not None:
                            on_event(event)
            if not cancelled and is_cancelled():
                cancelled = True
                proc.terminate()
                deadline = time.monotonic() + grace
            if deadline is not None and time.monotonic() > deadline and proc.poll() is None:
                proc.kill()
                deadline = None
            if proc.poll() is not None and lines.empty() and not readers[0].is_alive():
                break
    finally:
        if proc.poll() is None:          # the caller's callback raised: never leave an orphan engine
            proc.terminate()
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    for t in readers:
        t.join(timeout=5)
    result = EngineResult(proc.returncode, "".join(errors), cancelled or proc.returncode == EXIT_CANCELLED, last,
                          tool=tool, error=str(error.get(progress.ERROR) or ""),
                          param=error.get(progress.PARAM) or None, code=error.get(progress.CODE) or None,
                          pid=proc.pid)
    if not result.ok and outputs:
        remove_partials(outputs, proc.pid)
    return result


def remove_partials(outputs: list[Path], pid: int) -> None:
    """Remove the temporary files and the output locks a killed engine process ``pid`` left next to ``outputs``.

    A lock is removed only when it names ``pid`` (another run may hold the lock on the same output).
    """
    for out in outputs:
        out = Path(out)
        for tmp in out.parent.glob(partial_glob(out, pid)):
            _remove(tmp)
        lock = lock_name(os.path.realpath(out))
        try:
            holder = json.loads(lock.read_text(encoding="utf-8")).get("pid")
        except (OSError, ValueError, AttributeError):
            continue
        if holder == pid:
            _remove(lock)


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
