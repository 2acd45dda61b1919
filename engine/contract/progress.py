"""The engine's progress events and exit codes: what the CLI writes and every client reads.

With ``--progress json`` the engine writes one JSON object per line on stdout:
``{"stage", "done", "total", "message"}`` plus, for some stages, structured
fields (below) so that no client parses numbers back out of the message text.
A run stopped by bad input ends with one error event (``error_event``) besides
its ``error: ...`` line on stderr. Stdlib only (the plugin imports it).
"""
from __future__ import annotations

import re

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
# the analyses (issue 15): report reads tiles for its galleries; change computes the features of two dates;
# similar and classify compute (or reuse cached) features of one raster, then score or train
REPORT_STAGES = {"open": (0, 5), "gallery": (5, 85), "plots": (85, 95), "write": (95, 100)}
CHANGE_STAGES = {"open": (0, 3), "scan": (3, 6), "features": (6, 90), "cluster": (90, 93), "plots": (93, 97),
                 "write": (97, 100)}
SIMILAR_STAGES = {"open": (0, 3), "scan": (3, 6), "features": (6, 92), "similar": (92, 95), "write": (95, 100)}
CLASSIFY_STAGES = {"open": (0, 3), "scan": (3, 6), "features": (6, 85), "validate": (85, 92), "classify": (92, 95),
                   "write": (95, 100)}
# classify --finetune: each cross-validation fold tunes the CNN, then the final tuning and the tuned features
FINETUNE_STAGES = {"open": (0, 3), "scan": (3, 6), "validate": (6, 60), "tune": (60, 72), "features": (72, 92),
                   "classify": (92, 95), "write": (95, 100)}


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


# -- a client's view of a run's progress: percent of the whole run and a status line, from its events ----------
STAGES = CLUSTER_STAGES


def overall_progress(event: dict, stages: dict | None = None) -> float | None:
    """Percent done after ``event``; None for a stage the map does not know (the bar then stays)."""
    span = (stages or STAGES).get(event.get("stage"))
    if span is None:
        return None
    start, end = span
    return start + (end - start) * stage_fraction(event)


class SweepProgress:
    """Progress of a sweep: one span per tile size (its features, then its K values), then plots and write.

    The engine reports ``features`` (message "64px: ...") and then ``tiles_64px``
    (one step per K) for each tile size, smallest first (small tiles are
    compared with the large tiles that contain them).
    """

    def __init__(self, tile_labels: list[str]):
        self.labels = sorted(tile_labels, key=_size_of) or ["?"]
        self.current = 0

    def __call__(self, event: dict) -> float | None:
        stage, message = event.get("stage") or "", event.get("message") or ""
        width = 90 / len(self.labels)
        if stage.startswith("tiles_") and stage[6:] in self.labels:
            self.current = self.labels.index(stage[6:])
            return width * self.current + width * (0.7 + 0.3 * stage_fraction(event))
        if stage in ("features", "epoch"):
            prefix = message.split(":", 1)[0]
            if prefix in self.labels:
                self.current = self.labels.index(prefix)
            return width * self.current + width * 0.7 * stage_fraction(event)
        if stage == "plots":
            return 90 + 7 * stage_fraction(event)
        if stage == "write":
            return 97 + 3 * stage_fraction(event)
        return None


def _size_of(label: str) -> float:
    match = re.match(r"[0-9.]+", label)
    try:
        return float(match.group(0)) if match else float("inf")
    except ValueError:
        return float("inf")


def progress_for(argv: list[str]):
    """``event -> percent or None`` for an engine command line (cluster, DeepCluster, predict, sweep, stats,
    export): the stages' shares are the tool's declared ``stages`` (``engine.contract.tools``)."""
    from .tools import TOOLS

    tool = TOOLS.get(argv[0]) if argv else None
    if tool is None:
        return lambda event: overall_progress(event, STAGES)
    if tool.name in ("stats", "export"):                        # one bar per stage; it never moves back
        return lambda event: 100 * stage_fraction(event)
    if tool.name == "sweep":                                    # the sizes given, else the declared default ones
        flag = tool.flag("tile_size")
        sizes = argv[argv.index(flag) + 1] if flag in argv[:-1] else tool.param("tile_size").default
        return SweepProgress(sizes.split(","))
    if tool.name == "classify" and tool.flag("finetune") in argv:
        return lambda event: overall_progress(event, FINETUNE_STAGES)
    method = tool.flag("method") if "method" in tool.names() else None
    deepcluster = TOOLS["cluster"].param("epochs").applies_when[1]     # the method of DEEPCLUSTER_STAGES
    if method in argv[:-1] and argv[argv.index(method) + 1] == deepcluster:
        return lambda event: overall_progress(event, DEEPCLUSTER_STAGES)
    return lambda event: overall_progress(event, tool.stages or STAGES)


def status_text(event: dict) -> str:
    """``features 120/400: message``: one event as a status line."""
    stage, done, total, msg = event.get("stage", ""), event.get("done", 0), event.get("total", 0), event.get("message")
    count = f" {done}/{total}" if total else ""
    return f"{stage}{count}" + (f": {msg}" if msg else "")
