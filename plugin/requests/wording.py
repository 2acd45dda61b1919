"""The panel's words for the engine's messages (plain text, no Qt: the runner's task uses it too).

The engine speaks command-line flags ("--weights imagenet", "--backbone", "--encoder"); the dock and the
Buildings panel say Weights, Backbone, Encoder. ``panel_words`` translates a message for a panel ("dock" or
"buildings") before it is shown; the engine's own messages (engine/cli.py) are not changed.
"""
from __future__ import annotations

import re

from ...engine.contract.tools import DEVICES, METHODS, TOOLS, WEIGHT_WORDS

# engine flag -> the label of the widget that sets it
FLAG_LABELS = {
    "--weights": "Weights", "--backbone": "Backbone", "--encoder": "Encoder", "--device": "Device",
    "--chip": "Chip size", "--chips-per-epoch": "Chips per epoch", "--epochs": "Epochs",
    "--minutes": "Train for (minutes)", "--k": "Clusters (K)", "--tile-size": "Tile size", "--overlap": "Overlap",
    "--seed": "Seed", "--threshold": "Threshold", "--out": "Output", "--buildings": "Buildings",
    "--roads": "Roads", "--population": "Population", "--method": "Method", "--area": "Limit to",
    "--extent": "Limit to", "--model": "Model file", "--truth": "Evaluate against", "--probability":
    "Also write the probability raster", "--regularize": "Square the outlines", "--cache-dir": "cache folder",
}
PANEL_LABELS = {"buildings": {"--buildings": "Footprints", "--epochs": "Train for (epochs)",
                              "--overlap": "Overlap"}}
# engine values -> what the panel's combo boxes show (the values are the contract's choices)
METHOD_LABELS = {"kmeans": "k-means", "deepcluster": "DeepCluster"}
VALUE_LABELS = {"--weights": {"imagenet": "ImageNet (pretrained)", "none": "None"}, "--method": METHOD_LABELS}
NUMBER = r"-?\d+(?:\.\d+)?"
VALUES = {"--weights": "|".join(WEIGHT_WORDS), "--backbone": r"[a-z_]*\d[a-z0-9_]*",
          "--encoder": r"[a-z_]*\d[a-z0-9_]*", "--device": rf"(?:{'|'.join(DEVICES)})(?::\d+)?",
          "--method": "|".join(METHODS)}
FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)(?:[ =]('[^']*'|\"[^\"]*\"|[^\s,;:()]+))?")
WORDS = {"val_iou": "validation IoU"}


def panel_words(text: str, panel: str = "dock") -> str:
    """``text`` with each engine flag (and its value) named as the panel names it: '--weights none' ->
    'Weights “None”'. Flags the panels do not show stay as they are."""
    if not text or "-" not in text and not any(w in text for w in WORDS):
        return text
    labels = {**FLAG_LABELS, **PANEL_LABELS.get(panel, {})}

    def one(match: re.Match) -> str:
        flag, value = match.group(1), match.group(2)
        label = labels.get(flag)
        if label is None:
            return match.group(0)
        rest = ""
        if value is not None and not value.startswith(("'", '"')):
            pattern = VALUES.get(flag, NUMBER)
            head = re.match(rf"(?:{pattern})(?![\w.-]*\w)", value)
            if head is None:
                return label + match.group(0)[len(flag):]
            rest, value = value[head.end():], head.group(0)
            value = VALUE_LABELS.get(flag, {}).get(value, value)
            return f"{label} “{value}”{rest}"
        if value is not None:
            return f"{label} {value}"
        return label

    out = FLAG.sub(one, text)
    for word, said in WORDS.items():
        out = re.sub(rf"\b{word}\b", said, out)
    return out


def without_name(tool: str, param: str, message: str) -> str:
    """The engine's ``message`` about parameter ``param`` of ``tool`` without the name it starts with: the
    declared title ('Number of clusters (K): 300 is out of range'), the flag ('--k 8 is larger than ...',
    '--resume: there is no ...') or the positional's name ("raster 'x.tif' is damaged ..."). A face puts its own
    name for the parameter in front (the widget's label, the Processing parameter's description)."""
    declared = TOOLS.get(tool)
    if declared is None or param not in declared.names():
        return message
    title, flag = declared.param(param).title, declared.flag(param)
    for name in (f"{title}: ", flag, f"{param} "):
        if message.startswith(name) and (name.endswith(" ") or re.match(r"[\s:]|$", message[len(name):])):
            rest = message[len(name):].lstrip(": ")
            return rest or message
    return message
