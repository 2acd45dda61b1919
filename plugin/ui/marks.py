"""The widget a problem is about: a red border and the problem's message as its tooltip, until it is fixed.

The panels pair each ``Problem`` with the widget of its ``param`` and call
``mark``; the first problem that has a widget is marked, the widget marked
before is restored (its own style sheet and tooltip). A run that the engine
stopped for bad input names its parameter (``EngineResult.problem``);
``failed_input`` says it with the widget's label, for the panel to mark.
"""
from __future__ import annotations

from dataclasses import replace

from qgis.PyQt import sip
from qgis.PyQt.QtWidgets import QLabel

from ...engine.contract.tools import TOOLS
from ..requests.wording import panel_words, without_name

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


def label_of(owner, widget) -> str:
    """The text of ``owner``'s label for ``widget`` (the label whose buddy it is), '' when it has none."""
    for label in owner.findChildren(QLabel):
        if label.buddy() is widget:
            return label.text().replace("&", "").rstrip(": ")
    return ""


def failed_input(owner, result, widgets: dict, panel: str = "dock"):
    """(problem, widget) for a run the engine stopped for bad input that it pinned on a parameter with a widget
    in ``widgets`` (parameter -> widget), the problem's message naming it by the widget's label: 'Clusters (K): 8
    is larger than the number of valid tiles (3). ...'; None otherwise (the engine's own line is shown then)."""
    problem = result.problem if result is not None else None
    widget = widgets.get(problem.param) if problem is not None else None
    if widget is None:
        return None
    declared = TOOLS.get(result.tool)
    name = label_of(owner, widget)
    if not name and declared is not None and problem.param in declared.names():
        flag = declared.flag(problem.param)
        said = panel_words(flag, panel)                              # the panel's word for it, else its title
        name = said if said != flag else declared.param(problem.param).title
    body = panel_words(without_name(result.tool, problem.param, problem.message), panel)
    return replace(problem, message=f"{name}: {body}" if name else body), widget
