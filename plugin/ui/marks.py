"""The widget a problem is about: a red border and the problem's message as its tooltip, until it is fixed.

The panels pair each ``Problem`` with the widget of its ``param`` and call
``mark``; the first problem that has a widget is marked, the widget marked
before is restored (its own style sheet and tooltip).
"""
from __future__ import annotations

from qgis.PyQt import sip

MARK_STYLE = "border: 2px solid #b00020;"
PROBLEM = "urbanformProblem"        # the marked widget's dynamic property: 'param:code'
_STYLE, _TIP = "urbanformStyle", "urbanformTip"


def mark(owner, pairs) -> object | None:
    """Mark the widget of the first (problem, widget) pair with a widget; clear ``owner``'s earlier mark.

    Returns the marked widget (None when no problem has one).
    """
    target, problem = next(((w, p) for p, w in pairs if w is not None), (None, None))
    previous = getattr(owner, "_marked_widget", None)
    if previous is not None and previous is not target and not sip.isdeleted(previous):
        unmark(previous)
    if target is not None:
        if target.property(PROBLEM) is None:
            target.setProperty(_STYLE, target.styleSheet())
            target.setProperty(_TIP, target.toolTip())
        target.setProperty(PROBLEM, f"{problem.param}:{problem.code}")
        target.setStyleSheet(MARK_STYLE)
        target.setToolTip(problem.message)
    owner._marked_widget = target
    return target


def unmark(widget) -> None:
    if widget.property(PROBLEM) is None:
        return
    widget.setStyleSheet(widget.property(_STYLE) or "")
    widget.setToolTip(widget.property(_TIP) or "")
    for name in (PROBLEM, _STYLE, _TIP):
        widget.setProperty(name, None)
