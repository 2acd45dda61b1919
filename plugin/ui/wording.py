"""Labels that show a message whole, in the panel's words (plugin/requests/wording.py translates)."""
from __future__ import annotations

from qgis.PyQt.QtCore import QEvent, QObject
from qgis.PyQt.QtWidgets import QLabel, QSizePolicy

from ..requests.wording import panel_words


class _WholeText(QObject):
    """Keeps a word-wrapped label as tall as its text needs at its current width."""

    def eventFilter(self, obj, event):  # noqa: N802 - Qt API
        if event.type() in (QEvent.Resize, QEvent.Show) and isinstance(obj, QLabel):
            fit_height(obj)
        return False


def show_whole(label: QLabel) -> None:
    """Word-wrap ``label`` without a line limit: it grows with its text and its width."""
    label.setWordWrap(True)
    policy = label.sizePolicy()
    policy.setVerticalPolicy(QSizePolicy.Minimum)
    policy.setHeightForWidth(True)
    label.setSizePolicy(policy)
    keeper = _WholeText(label)
    label.installEventFilter(keeper)
    label._whole_text = keeper                     # noqa: SLF001 - keep the filter alive with the label


def fit_height(label: QLabel) -> None:
    width = label.width() if label.isVisible() and label.width() > 50 else label.sizeHint().width()
    needed = label.heightForWidth(max(width, 50)) if label.text() else 0
    if needed > 0 and label.minimumHeight() != needed:
        label.setMinimumHeight(needed)
    elif not label.text():
        label.setMinimumHeight(0)


def set_text(label: QLabel, text: str, panel: str = "dock") -> str:
    """Show ``text`` in the panel's words, whole; returns what was shown."""
    shown = panel_words(text, panel)
    label.setText(shown)
    fit_height(label)
    return shown
