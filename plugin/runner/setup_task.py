""""Set up engine" as a QgsTask: progress per step, Cancel, the installer's output in the log panel.

The work is plugin/runner/engine_setup.py's ``install`` (plain Python); this module only
wires it to QGIS: the task manager's progress bar, its cancel button, and the
"Urban Form Mapper" tab of the log panel. ``done`` is emitted on the main thread
with ``{'ok': True, 'record': ...}`` or ``{'ok': False, 'code': ..., 'error': ...}``.
"""
from __future__ import annotations

from qgis.core import QgsTask
from qgis.PyQt.QtCore import pyqtSignal

from .. import log
from . import engine_setup


class SetupEngineTask(QgsTask):
    done = pyqtSignal(object)
    step = pyqtSignal(str)          # "3/8 Create environment", for a status line (main thread)

    def __init__(self, options: engine_setup.Options, description: str = "Urban Form Mapper: set up the engine"):
        super().__init__(description, QgsTask.CanCancel)
        self.options = options
        self.result: dict = {"ok": False, "code": "cancelled", "error": "Set-up cancelled."}

    def run(self) -> bool:  # worker thread: no GUI calls; QgsMessageLog and signals are thread-safe
        def on_step(i: int, n: int, name: str) -> None:
            self.setProgress(100.0 * i / n)
            self.step.emit(f"{i + 1}/{n} {name}")

        try:
            record = engine_setup.install(self.options, log=log.info, step=on_step, is_cancelled=self.isCanceled)
        except engine_setup.SetupError as exc:
            self.result = {"ok": False, "code": exc.code, "error": str(exc)}
            (log.info if exc.code == "cancelled" else log.critical)(f"Engine set-up: {exc}")
            return exc.code != "cancelled"
        except Exception as exc:  # noqa: BLE001 - becomes a message in the panel, never a crash
            self.result = {"ok": False, "code": "install", "error": f"{type(exc).__name__}: {exc}"}
            log.critical(f"Engine set-up failed: {self.result['error']}")
            return True
        self.result = {"ok": True, "record": record}
        self.setProgress(100.0)
        return True

    def finished(self, ok: bool) -> None:  # main thread
        self.done.emit(self.result)
