"""Progress reporting: a bar on a terminal, JSON lines for the plugin, or nothing.

A run reports stages (``open``, ``scan``, ``features``, ``cluster``, ``write``)
with ``done``/``total`` counts. With ``mode='json'`` each update is one JSON
object per line on stdout, ``{"stage", "done", "total", "message"}``, and
nothing else is printed there; the plugin reads them to drive its progress bar.
"""
from __future__ import annotations

import json
import sys
import time

from .contract.tools import PROGRESS_MODES


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

    def __call__(self, stage: str, done: int = 0, total: int = 0, message: str = "", **fields) -> None:
        """Report ``done``/``total`` of ``stage``; ``fields`` (engine.contract.progress) go into the JSON event."""
        if self.mode == "none":
            return
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
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def stage(self, name: str):
        """A (done, total) callback bound to one stage, for loops that know only counts."""
        return lambda done, total, message="": self(name, done, total, message)
