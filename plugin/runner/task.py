"""A QgsTask that runs one engine command in the background, on this computer or on the engine server.

Where it runs is read from the Engine setting when the task is made (main thread: QGIS may ask for the master
password that unlocks the server's token). ``run()`` happens on a worker thread and only talks to the engine
process or the server (progress through ``setProgress`` and the ``statusChanged`` signal, which Qt
delivers on the main thread). ``finished()`` runs on the main thread: it
reports errors in the message bar and the log, and hands a successful result
to ``on_success`` (which adds the layers).
"""
from __future__ import annotations

from typing import Callable

from qgis.core import Qgis, QgsTask
from qgis.PyQt.QtCore import pyqtSignal

from ...engine.contract.progress import progress_for, status_text
from .. import log
from ..requests.wording import panel_words
from . import dask_setting, server_settings
from .dispatch import FROM_SETTINGS, run_engine
from .engine_process import EngineResult


class TrainingClock:
    """Status lines for ``train-seg``: epochs done/total, time per epoch and the expected end (wall clock).

    The engine reports stage ``train`` once before the first epoch (done = epochs already done, total = epochs
    asked, 0 with a time budget) and once after each epoch; the time per epoch is measured here from those.
    ``minutes``: the time budget (the end is then the budget's end). ``clock``/``now``: for tests.
    """

    def __init__(self, minutes: float | None = None, clock=None, now=None):
        import time

        self.minutes = minutes
        self.clock = clock or time.monotonic
        self.now = now or time.time
        self.start: tuple[float, int] | None = None       # (clock, epochs done) when the first epoch began

    def __call__(self, event: dict) -> str:
        if event.get("stage") != "train":
            return status_text(event)
        done, total = int(event.get("done") or 0), int(event.get("total") or 0)
        t = self.clock()
        if self.start is None:
            self.start = (t, done)
            if self.minutes:
                self.budget_end = self.now() + 60.0 * float(self.minutes)
            return f"Training: epoch {done + 1}{f'/{total}' if total else ''} started" + \
                (f" · {event.get('message')}" if event.get("message") else "")
        epochs = done - self.start[1]
        if epochs <= 0:
            return status_text(event)
        per_epoch = (t - self.start[0]) / epochs
        if total:
            end = self.now() + max(0, total - done) * per_epoch
            count = f"epoch {done}/{total}"
        else:
            end = getattr(self, "budget_end", None)
            count = f"epoch {done}"
        text = f"Training: {count} done · {duration_text(per_epoch)} per epoch"
        if end is not None:
            left = max(0.0, end - self.now())
            text += f" · expected end {clock_text(end)} (in {duration_text(left)})" if left >= 1 else \
                " · expected end now"
            if not total:
                text += ", the time budget"
        message = event.get("message") or ""
        scores = message.split(" ", 2)[2] if message.startswith("epoch ") and message.count(" ") >= 2 else ""
        return text + (f" · {scores}" if scores else "")


def duration_text(seconds: float) -> str:
    """'41 s', '3 min 20 s', '1 h 05 min'."""
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    if seconds < 3600:
        m, s = divmod(int(round(seconds)), 60)
        return f"{m} min {s:02d} s" if m < 10 else f"{m} min"
    h, m = divmod(int(round(seconds / 60)), 60)
    return f"{h} h {m:02d} min"


def clock_text(timestamp: float) -> str:
    """Local wall-clock time, with the day when it is not today."""
    import datetime

    when = datetime.datetime.fromtimestamp(timestamp)
    today = datetime.datetime.now().date()
    return when.strftime("%H:%M") if when.date() == today else when.strftime("%a %H:%M")


class EngineTask(QgsTask):
    statusChanged = pyqtSignal(str)

    def __init__(self, description: str, python: str, args: list[str], outputs=None,
                 on_success: Callable[["EngineTask"], None] | None = None,
                 on_failure: Callable[["EngineTask"], None] | None = None, message_bar=None,
                 server=FROM_SETTINGS):
        super().__init__(description, QgsTask.CanCancel)
        self.python = python
        # where it runs: a remote.Server, or None for this computer (default: the Engine setting, read now)
        self.server = server_settings.active_server() if server is FROM_SETTINGS else server
        # on this computer, the Engine setting "Dask scheduler" (where the run takes --dask and sets none)
        self.args = dask_setting.with_setting(list(args)) if self.server is None else list(args)
        self.progress_of = progress_for(self.args)
        self.status_of: Callable[[dict], str] = status_text     # event -> the status line (worker thread)
        self.panel = "dock"              # whose words the messages use (wording.panel_words): dock or buildings
        self.outputs = list(outputs or [])
        self.on_success = on_success
        self.on_failure = on_failure
        self.message_bar = message_bar
        # what a cancelled run leaves (a sweep keeps its finished tile sizes); main thread, after the run
        self.describe_cancel: Callable[[], str] = lambda: "cancelled; no output was written."
        # what a failed run says (a panel names a bad input by its widget's label); main thread, after the run
        self.describe_failure: Callable[[EngineResult], str] = lambda result: result.message
        self.result: EngineResult | None = None
        self.pid: int | None = None
        self.status_message = ""

    def _on_event(self, event: dict) -> None:
        percent = self.progress_of(event)
        if percent is not None and percent >= self.progress():     # a repeated stage never moves the bar back
            self.setProgress(percent)
        try:
            self.status_message = self.status_of(event)
        except Exception:  # noqa: BLE001 - a status line is never worth a failed run
            self.status_message = status_text(event)
        self.statusChanged.emit(self.status_message)

    def _on_start(self, pid: int) -> None:
        self.pid = pid

    def run(self) -> bool:  # worker thread: no GUI here
        self.result = run_engine(self.python, self.args, self._on_event, self.isCanceled, outputs=self.outputs,
                                 on_start=self._on_start, server=self.server)
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
            text = self.describe_cancel()
            log.info(f"{self.description()}: {text}")
            self._report(text, Qgis.Info)
        else:
            log.critical(f"{self.description()} failed (exit {result.returncode}). Engine output:\n{result.stderr}")
            try:
                text = self.describe_failure(result)
            except Exception:  # noqa: BLE001 - the engine's own words will do
                text = result.message
            self._report(text + " (details in the log panel, tab Urban Form Mapper)", Qgis.Critical)
        if self.on_failure is not None:
            try:
                self.on_failure(self)
            except Exception as exc:  # noqa: BLE001 - report, never crash QGIS
                log.critical(f"{self.description()}: error while reporting the failure: {exc}")

    def _report(self, text: str, level) -> None:
        if self.message_bar is not None:
            log.push(self.message_bar, f"{self.description()}: {panel_words(text, self.panel)}", level,
                     0 if level == Qgis.Critical else 8)
