"""A QgsTask that runs one engine command in the background.

``run()`` happens on a worker thread and only talks to the engine process
(progress through ``setProgress`` and the ``statusChanged`` signal, which Qt
delivers on the main thread). ``finished()`` runs on the main thread: it
reports errors in the message bar and the log, and hands a successful result
to ``on_success`` (which adds the layers).
"""
from __future__ import annotations

from typing import Callable

from qgis.core import Qgis, QgsTask
from qgis.PyQt.QtCore import pyqtSignal

from . import log
from .engine_process import EngineResult, run_engine

# share of the progress bar per engine stage: (start, end) in percent
STAGES = {"open": (0, 3), "scan": (3, 6), "features": (6, 90), "cluster": (90, 95), "write": (95, 100)}


def overall_progress(event: dict) -> float:
    start, end = STAGES.get(event.get("stage"), (0, 0))
    total = event.get("total") or 0
    frac = min(1.0, event.get("done", 0) / total) if total else 0.0
    return start + (end - start) * frac


def status_text(event: dict) -> str:
    stage, done, total, msg = event.get("stage", ""), event.get("done", 0), event.get("total", 0), event.get("message")
    count = f" {done}/{total}" if total else ""
    return f"{stage}{count}" + (f": {msg}" if msg else "")


class EngineTask(QgsTask):
    statusChanged = pyqtSignal(str)

    def __init__(self, description: str, python: str, args: list[str], outputs=None,
                 on_success: Callable[["EngineTask"], None] | None = None,
                 on_failure: Callable[["EngineTask"], None] | None = None, message_bar=None):
        super().__init__(description, QgsTask.CanCancel)
        self.python = python
        self.args = list(args)
        self.outputs = list(outputs or [])
        self.on_success = on_success
        self.on_failure = on_failure
        self.message_bar = message_bar
        self.result: EngineResult | None = None
        self.pid: int | None = None
        self.status_message = ""

    def _on_event(self, event: dict) -> None:
        self.setProgress(overall_progress(event))
        self.status_message = status_text(event)
        self.statusChanged.emit(self.status_message)

    def _on_start(self, pid: int) -> None:
        self.pid = pid

    def run(self) -> bool:  # worker thread: no GUI here
        self.result = run_engine(self.python, self.args, self._on_event, self.isCanceled, outputs=self.outputs,
                                 on_start=self._on_start)
        return self.result.ok

    def finished(self, ok: bool) -> None:  # main thread
        result = self.result
        if ok and result is not None:
            log.info(f"{self.description()}: done.")
            if self.on_success is not None:
                try:
                    self.on_success(self)
                except Exception as exc:  # noqa: BLE001 - report, never crash QGIS
                    self._report(f"the run finished but its layers could not be added: {exc}", Qgis.Critical)
            return
        if result is None or result.cancelled or self.isCanceled():
            log.info(f"{self.description()}: cancelled; no output was written.")
            self._report("cancelled; no output was written.", Qgis.Info)
        else:
            log.critical(f"{self.description()} failed (exit {result.returncode}). Engine output:\n{result.stderr}")
            self._report(result.message + " (details in the log panel, tab Urban Form Mapper)", Qgis.Critical)
        if self.on_failure is not None:
            try:
                self.on_failure(self)
            except Exception as exc:  # noqa: BLE001 - report, never crash QGIS
                log.critical(f"{self.description()}: error while reporting the failure: {exc}")

    def _report(self, text: str, level) -> None:
        if self.message_bar is not None:
            self.message_bar.pushMessage("Urban Form Mapper", f"{self.description()}: {text}", level=level,
                                         duration=0 if level == Qgis.Critical else 8)
