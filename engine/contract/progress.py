"""The engine's progress events and exit codes: what the CLI writes and every client reads.

With ``--progress json`` the engine writes one JSON object per line on stdout:
``{"stage", "done", "total", "message"}`` plus, for some stages, structured
fields (below) so that no client parses numbers back out of the message text.
A run stopped by bad input ends with one error event (``error_event``) besides
its ``error: ...`` line on stderr. Stdlib only (the plugin imports it).
"""
from __future__ import annotations

# exit codes of `python -m engine TOOL`
EXIT_OK = 0
EXIT_FAILED = 1          # anything else; the last stderr line says what
EXIT_BAD_INPUT = 2       # checked before any work: the message names the input and the fix; nothing written
EXIT_CANCELLED = 130     # SIGTERM or Ctrl+C: temporary files removed, nothing half-written

# the last event of a run stopped by bad input (exit EXIT_BAD_INPUT), with --progress json: ``{"error": message,
# "param": the parameter at fault (the contract's name: "raster", "k") or null, "code": its engine.contract.problems
# code or null}``. The message is the error's own text, which may start with the parameter's title or flag; each
# face names the parameter in its own words (flag, widget label, Processing parameter) and decides on param/code.
ERROR, PARAM, CODE = "error", "param", "code"

# extra fields of a progress event: within DeepCluster's stage "epoch", the training step of that epoch
STEP, STEPS = "step", "steps"

# share of a progress bar per stage, (start, end) percent, for the tools whose stages run once each.
# Features dominate a k-means run; DeepCluster's epochs (training, then features) dominate its run.
CLUSTER_STAGES = {"open": (0, 3), "scan": (3, 6), "features": (6, 90), "cluster": (90, 95), "write": (95, 100)}
DEEPCLUSTER_STAGES = {"open": (0, 2), "scan": (2, 4), "features": (4, 12), "epoch": (12, 92), "cluster": (92, 95),
                      "write": (95, 100)}


def error_event(message: str, param: str | None = None, code: str | None = None) -> dict:
    """The error event of a run stopped by bad input."""
    return {ERROR: message, PARAM: param or None, CODE: code or None}


def is_error(event: dict) -> bool:
    """``event`` is an error event (not progress)."""
    return ERROR in event and "stage" not in event


def stage_fraction(event: dict) -> float:
    """done/total of the event's stage; a training step within an epoch adds its share."""
    total = event.get("total") or 0
    if not total:
        return 0.0
    done = float(event.get("done", 0))
    if event.get(STEPS):
        done += float(event.get(STEP, 0)) / float(event[STEPS])
    return min(1.0, done / total)
