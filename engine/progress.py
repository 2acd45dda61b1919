"""Progress reporting: a bar on a terminal, JSON lines for the plugin, or nothing; and when a cancel may strike.

A run reports stages (``open``, ``scan``, ``features``, ``cluster``, ``write``)
with ``done``/``total`` counts. With ``mode='json'`` each update is one JSON
object per line on stdout, ``{"stage", "done", "total", "message"}``, and
nothing else is printed there; the plugin reads them to drive its progress bar.

Two stages are special in every mode:

- ``open`` is where a run opens and checks its inputs. Its events are held back
  until the run reaches another stage, so an input that fails there prints
  only its one error line (no progress line before it).
- ``warning`` is a problem with the data that does not stop the run. It is
  always written to stderr as one ``warning: ...`` line, also with
  ``--progress none`` (and, with ``json``, also as an event on stdout).

Cancelling (the CLI's SIGTERM and Ctrl+C handlers call :func:`request_cancel`):
a cancel raises at once, except while a run renames its outputs into place
(:func:`committing`) or takes or frees its output lock (:func:`holding_cancel`):
then it waits for the end of that block, so no output set is half committed.
After a run's last commit (``committing(final=True)``) a cancel is dropped: its
outputs are in place and it ends with exit 0.
"""
from __future__ import annotations

import json
import sys
import time
from contextlib import contextmanager

from .contract.tools import PROGRESS_MODES

OPEN = "open"
WARNING = "warning"


class Progress:
    """Callable progress sink: ``progress(stage, done, total, message='')``."""

    def __init__(self, mode: str = "auto", stream=None, min_interval: float = 0.2):
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "log"
        if mode not in PROGRESS_MODES:
            raise ValueError(f"unknown progress mode {mode!r}")
        self.mode = mode
        self.stream = stream
        self.min_interval = min_interval
        self._bar = None
        self._stage = None
        self._last = 0.0
        self._held: "tuple | None" = None          # the last ``open`` event, until another stage comes
        self._warned: set[str] = set()

    def __call__(self, stage: str, done: int = 0, total: int = 0, message: str = "", **fields) -> None:
        """Report ``done``/``total`` of ``stage``; ``fields`` (engine.contract.progress) go into the JSON event."""
        if stage == WARNING:
            self.warning(message, **fields)
            return
        if self.mode == "none":
            return
        if stage == OPEN:
            self._held = (done, total, message, fields)
            return
        self._release_open()
        self._show(stage, done, total, message, **fields)

    def _release_open(self) -> None:
        if self._held is not None:
            done, total, message, fields = self._held
            self._held = None
            self._show(OPEN, done, total, message, **fields)

    def warning(self, message: str, **fields) -> None:
        """A problem with the data that does not stop the run: one ``warning: ...`` line on stderr, in every
        mode (with ``json`` also an event on stdout, for the plugin)."""
        text = message if message.startswith("warning: ") else f"warning: {message}"
        if text in self._warned:                    # a tool that runs another (cluster, then stats) says it once
            return
        self._warned.add(text)
        if self.mode != "none":
            self._release_open()
        if self.mode == "json":
            self._show(WARNING, 1, 1, text, **fields)
        self._write_err(text)

    def _write_err(self, line: str) -> None:
        # the lines of log and bar go to ``stream``; with json it carries the events, so a warning goes to stderr
        out = sys.stderr if self.mode == "json" or self.stream is None else self.stream
        if self._bar is not None:
            from tqdm import tqdm

            tqdm.write(line, file=out)
        else:
            out.write(line + "\n")
            out.flush()

    def _show(self, stage: str, done: int, total: int, message: str, **fields) -> None:
        now = time.monotonic()
        new_stage = stage != self._stage
        finished = total and done >= total
        if not (new_stage or finished or now - self._last >= self.min_interval):
            return
        self._last = now
        if self.mode == "json":
            out = self.stream or sys.stdout
            out.write(json.dumps({"stage": stage, "done": int(done), "total": int(total),
                                  "message": message, **fields}) + "\n")
            out.flush()
        elif self.mode == "log":
            if new_stage or finished:
                out = self.stream or sys.stderr
                count = f" {done}/{total}" if total else ""
                out.write(f"[{stage}]{count} {message}".rstrip() + "\n")
                out.flush()
        else:
            self._bar_update(stage, done, total, message, new_stage)
        self._stage = stage

    def _bar_update(self, stage, done, total, message, new_stage) -> None:
        from tqdm import tqdm

        if new_stage:
            self.close()
            self._bar = tqdm(total=total or None, desc=stage, unit="", file=self.stream or sys.stderr,
                             dynamic_ncols=True, leave=True)
        if self._bar is not None:
            if total and self._bar.total != total:
                self._bar.total = total
            self._bar.n = done
            if message:
                self._bar.set_postfix_str(message, refresh=False)
            self._bar.refresh()

    def close(self) -> None:
        """End the output (a held ``open`` event is dropped: the run ended in that stage)."""
        self._held = None
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def stage(self, name: str):
        """A (done, total) callback bound to one stage, for loops that know only counts."""
        return lambda done, total, message="": self(name, done, total, message)


# --------------------------------------------------------------------------- cancelling


class _CancelState:
    """Process-wide (signals are): see the module docstring."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.held = 0               # depth of the blocks that hold a cancel back
        self.pending: "BaseException | None" = None
        self.committed = False      # the run's last commit is done: a cancel changes nothing any more
        self.over = False           # the run has ended (returned or raised): nothing left to cancel
        self.cancelled = False      # a cancel was raised already: later ones are dropped


_cancel = _CancelState()


def reset_cancel() -> None:
    """A new run starts (the CLI calls it before installing its signal handlers)."""
    _cancel.reset()


def request_cancel(exc: BaseException) -> None:
    """For signal handlers: raise ``exc`` (``Cancelled``, ``KeyboardInterrupt``) now, or hold it until the commit
    in progress ends, or drop it when the run's outputs are committed or the run has ended."""
    if _cancel.committed or _cancel.over or _cancel.cancelled:
        return
    if _cancel.held:
        if _cancel.pending is None:
            _cancel.pending = exc
        return
    _cancel.cancelled = True
    raise exc


def end_of_run() -> None:
    """The run has returned or raised: a cancel from now on is dropped (the exit code is decided)."""
    _cancel.over = True


def outputs_committed() -> bool:
    """Whether the run's last commit is done (a cancel now ends it with exit 0, its outputs in place)."""
    return _cancel.committed


@contextmanager
def holding_cancel():
    """Hold a cancel back during the block; raise it when the block ends (unless the run has committed)."""
    _cancel.held += 1
    try:
        yield
    finally:
        _cancel.held -= 1
    if not _cancel.held and _cancel.pending is not None:
        exc, _cancel.pending = _cancel.pending, None
        if not (_cancel.committed or _cancel.over or _cancel.cancelled):
            _cancel.cancelled = True
            raise exc


@contextmanager
def committing(final: bool = True):
    """The block renames a run's outputs into place: a cancel waits for its end. ``final``: this is the run's
    last commit; after it a cancel is dropped (the run exits 0 with its outputs). Not final (a sweep's tile
    size, a cluster run before its statistics): a cancel that came meanwhile is raised after the block."""
    with holding_cancel():
        yield
        if final:
            _cancel.committed = True
