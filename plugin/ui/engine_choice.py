"""Where the engine runs, in the panel's Engine box: "This computer" or "Server" (its URL and token).

With "This computer" the box shows the engine Python and the set-up's
settings (package index, wheel folder, base Python); with "Server" the
server's URL and its token instead. The choice, the URL and the token are
saved as soon as they are changed (plugin/runner/server_settings.py: the token
in QGIS's authentication database), so Processing runs go where the panel
says. The token is never shown again once saved: the box says that one is
saved, and "Forget" removes it.
"""
from __future__ import annotations

from qgis.PyQt.QtCore import QObject, pyqtSignal
from qgis.PyQt.QtWidgets import QComboBox, QHBoxLayout, QLineEdit, QPushButton, QWidget

from ..runner import server_settings

URL_TIP = "The engine server's address, e.g. http://gpu-box:8000 (python -m engine serve on that machine)"
TOKEN_TIP = ("The server's token (a line of its token file); kept in QGIS's authentication database, which asks "
             "for its master password. None is needed for a server on this computer.")


class EngineChoice(QObject):
    """The rows "Runs on", "Server URL" and "Token" at the top of the dock's Engine box.

    ``changed`` when the choice, the URL or the token changed (the dock checks the engine again);
    ``failed(message)`` when the token could not be saved.
    """

    changed = pyqtSignal()
    failed = pyqtSignal(str)

    def __init__(self, form, local_widgets: list, parent: QWidget):
        super().__init__(parent)
        self.form = form
        self.local_widgets = list(local_widgets)          # the rows only "This computer" needs
        self.modeCombo = QComboBox(parent)
        self.modeCombo.setObjectName("engineModeCombo")
        self.modeCombo.setToolTip("Run the engine on this computer, or send the runs to an engine server")
        for value, label in server_settings.MODES:
            self.modeCombo.addItem(label, value)
        self.urlEdit = QLineEdit(parent)
        self.urlEdit.setObjectName("serverUrlEdit")
        self.urlEdit.setPlaceholderText("http://gpu-box:8000")
        self.urlEdit.setToolTip(URL_TIP)
        self.tokenEdit = QLineEdit(parent)
        self.tokenEdit.setObjectName("serverTokenEdit")
        self.tokenEdit.setEchoMode(QLineEdit.Password)
        self.tokenEdit.setToolTip(TOKEN_TIP)
        self.forgetButton = QPushButton("Forget", parent)
        self.forgetButton.setObjectName("forgetTokenButton")
        self.forgetButton.setToolTip("Remove the saved token from QGIS's authentication database")
        self.tokenRow = QWidget(parent)
        row = QHBoxLayout(self.tokenRow)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.tokenEdit, 1)
        row.addWidget(self.forgetButton)
        form.insertRow(0, "Runs on", self.modeCombo)
        form.insertRow(1, "Server URL", self.urlEdit)
        form.insertRow(2, "Token", self.tokenRow)
        self.restore()
        self.modeCombo.currentIndexChanged.connect(self._mode_changed)
        self.urlEdit.editingFinished.connect(self._url_changed)
        self.tokenEdit.editingFinished.connect(self._token_changed)
        self.forgetButton.clicked.connect(self.forget_token)

    # -- state -----------------------------------------------------------------------------------------------------
    def restore(self) -> None:
        """The saved choice and URL; whether a token is saved (the token itself is not read)."""
        index = self.modeCombo.findData(server_settings.mode())
        self.modeCombo.blockSignals(True)
        self.modeCombo.setCurrentIndex(max(index, 0))
        self.modeCombo.blockSignals(False)
        self.urlEdit.setText(server_settings.url())
        self._show_token_state()
        self._show_rows()

    def is_remote(self) -> bool:
        return self.modeCombo.currentData() == server_settings.SERVER

    def url(self) -> str:
        return self.urlEdit.text().strip()

    def _show_rows(self) -> None:
        remote = self.is_remote()
        for widget, visible in [*[(w, not remote) for w in self.local_widgets],
                                (self.urlEdit, remote), (self.tokenRow, remote)]:
            widget.setVisible(visible)
            label = self.form.labelForField(widget)
            if label is not None:
                label.setVisible(visible)

    def _show_token_state(self) -> None:
        saved = server_settings.has_token()
        self.tokenEdit.setPlaceholderText("saved (type to replace)" if saved else "none")
        self.forgetButton.setEnabled(saved)

    # -- changes ---------------------------------------------------------------------------------------------------
    def _mode_changed(self, *_args) -> None:
        server_settings.set_mode(self.modeCombo.currentData())
        self._show_rows()
        self.changed.emit()

    def _url_changed(self) -> None:
        if self.url() != server_settings.url():
            server_settings.set_url(self.url())
            self.changed.emit()

    def _token_changed(self) -> None:
        token = self.tokenEdit.text().strip()
        if not token:
            return
        self.tokenEdit.clear()
        error = server_settings.save_token(token)
        self._show_token_state()
        if error:
            self.failed.emit(error)
        self.changed.emit()

    def forget_token(self) -> None:
        server_settings.forget_token()
        self._show_token_state()
        self.changed.emit()
