"""The line at the top of the panel that gets the user an engine: "Set up engine" / "Update engine".

Shown when no engine was found, when the set-up failed (with the reason and the
fix), and when the engine this profile set up was built from another plugin
version's lock. The work runs as a SetupEngineTask (plugin/runner/setup_task.py):
progress per step here and in QGIS's task bar, Cancel, the installer's output
in the log panel (tab "Urban Form Mapper"). No I/O on the UI thread beyond
reading two small files (the engine record and the plugin's lock).
"""
from __future__ import annotations

from qgis.core import Qgis, QgsApplication
from qgis.PyQt.QtCore import pyqtSignal
from qgis.PyQt.QtWidgets import QFrame, QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout

from .. import log
from ..runner import engine_env
from ..runner.setup_task import SetupEngineTask

ERROR_STYLE = "color: #b00020;"
SETUP_TOOLTIP = ("Build the engine (Python with PyTorch, about 6 GB on Linux, 2 GB elsewhere) in the QGIS profile "
                 "from the lock file shipped with the plugin. A package index or a wheel folder for offline sites "
                 "can be set under Engine. The engine in use, if any, stays until the new one works.")


class EngineSetupBar(QFrame):
    """``engineReady(python)`` when a set-up finished; ``runningChanged(bool)`` when one starts or ends."""

    engineReady = pyqtSignal(str)
    runningChanged = pyqtSignal(bool)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("engineSetupBar")
        self.setFrameShape(QFrame.StyledPanel)
        self.task: SetupEngineTask | None = None
        self.messageLabel = QLabel(self)
        self.messageLabel.setObjectName("engineSetupMessage")
        self.messageLabel.setWordWrap(True)
        self.setupButton = QPushButton("Set up engine", self)
        self.setupButton.setObjectName("engineSetupButton")
        self.setupButton.setToolTip(SETUP_TOOLTIP)
        self.cancelButton = QPushButton("Cancel", self)
        self.cancelButton.setObjectName("engineSetupCancel")
        self.progressBar = QProgressBar(self)
        self.progressBar.setRange(0, 100)
        buttons = QHBoxLayout()
        buttons.addWidget(self.setupButton)
        buttons.addWidget(self.progressBar, 1)
        buttons.addWidget(self.cancelButton)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addWidget(self.messageLabel)
        layout.addLayout(buttons)
        self.setupButton.clicked.connect(self.start)
        self.cancelButton.clicked.connect(self.cancel)
        self._idle()
        self.setVisible(False)

    # -- what the bar says -------------------------------------------------------------------------
    def show_missing(self, broken: str | None = None) -> None:
        """No engine was found (or ``broken``, the chosen one, does not work): say so and offer the set-up."""
        if self.is_running():
            return
        if broken:
            self._say(f"The engine Python {broken} does not work (Engine below says why). Set up engine installs "
                      "a working engine into your QGIS profile (a few minutes; no terminal needed).", error=True)
        else:
            self._say("No engine yet: the panel needs its engine (Python with PyTorch) to run. Set up engine "
                      "installs it into your QGIS profile (a few minutes; no terminal needed).")
        self.setupButton.setText("Set up engine")
        self.setVisible(True)

    def show_outdated(self, python: str) -> None:
        """The profile's engine was built from another lock: offer the update (the old engine still runs)."""
        if self.is_running():
            return
        self._say(f"This plugin version ships other engine packages than the engine in use ({python}) was built "
                  "from. Update engine builds the new one next to it and switches when it works.")
        self.setupButton.setText("Update engine")
        self.setVisible(True)

    def show_failed(self, message: str) -> None:
        self._say(message, error=True)
        self.setupButton.setText("Set up engine")
        self.setVisible(True)

    def hide_unless_running(self) -> None:
        if not self.is_running():
            self.setVisible(False)

    def _say(self, text: str, error: bool = False) -> None:
        self.messageLabel.setText(text)
        self.messageLabel.setStyleSheet(ERROR_STYLE if error else "")

    # -- the set-up --------------------------------------------------------------------------------
    def is_running(self) -> bool:
        return self.task is not None

    def start(self) -> SetupEngineTask | None:
        """Start "Set up engine" (or "Update engine") as a background task; returns it."""
        if self.is_running():
            return None
        opts = engine_env.setup_options()
        self.task = SetupEngineTask(opts)
        self.task.progressChanged.connect(lambda value: self.progressBar.setValue(int(value)))
        self.task.step.connect(lambda text: self._say(f"Setting up the engine in {opts.home}: step {text}… "
                                                      "(details in the log panel, tab Urban Form Mapper)"))
        self.task.done.connect(self._done)
        self.setupButton.setEnabled(False)
        self.cancelButton.setVisible(True)
        self.cancelButton.setEnabled(True)
        self.progressBar.setVisible(True)
        self.progressBar.setValue(0)
        self._say("Setting up the engine…")
        self.setVisible(True)
        QgsApplication.taskManager().addTask(self.task)
        self.runningChanged.emit(True)
        return self.task

    def cancel(self) -> None:
        if self.task is not None:
            self.cancelButton.setEnabled(False)
            self._say("Cancelling the set-up; the engine in use (if any) stays…")
            self.task.cancel()

    def _done(self, result: dict) -> None:
        self.task = None
        self._idle()
        self.runningChanged.emit(False)
        if result.get("ok"):
            record = result["record"]
            self.setVisible(False)
            _push(f"Engine ready: torch {record.get('torch')} ({record.get('torch_build')} build) in "
                     f"{record['python']}, set up in {record.get('seconds')} s.", Qgis.Success)
            self.engineReady.emit(record["python"])
        elif result.get("code") == "cancelled":
            self._say("Set-up cancelled; nothing changed. Set up engine starts it again.")
        else:
            self.show_failed(result.get("error", "The set-up failed; the log panel has the details."))
            _push(result.get("error", "The engine set-up failed."), Qgis.Critical)

    def _idle(self) -> None:
        self.setupButton.setEnabled(True)
        self.cancelButton.setVisible(False)
        self.progressBar.setVisible(False)



def _push(text: str, level) -> None:
    """The whole message in QGIS's message bar (when there is one) and the log panel (log.push)."""
    from qgis.utils import iface

    log.push(iface.messageBar() if iface is not None else None, text, level, 0 if level == Qgis.Critical else 8)
