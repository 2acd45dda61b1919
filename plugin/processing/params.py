"""Processing parameters built from the tools' declarations (``engine.contract.tools``).

Each algorithm names the contract parameters it exposes (``PARAMS``); :func:`definition` turns one declared
:class:`~engine.contract.params.Param` into its ``QgsProcessingParameter*``, with the declaration's type,
default, bounds, choices, advanced flag, label and help, so the toolbox, the model builder, batch mode and
qgis_process offer what the engine accepts. :func:`bullet` writes the same declaration as a line of the
algorithm's help, and :func:`output_name` names a declared output file (``OUT_clusters.tif``) for it.

What the contract cannot declare is QGIS's own and stays in the algorithms: the extent (any CRS, from the
canvas), a tile size as a number and a unit, the weights as a choice plus a file, and how a layer is taken
(a feature source, a vector layer or a destination).

Nothing here imports torch or the engine beyond ``engine.contract`` (stdlib only).
"""
from __future__ import annotations

import re

from qgis.core import (QgsProcessing, QgsProcessingParameterBoolean, QgsProcessingParameterDefinition,
                       QgsProcessingParameterEnum, QgsProcessingParameterFeatureSource, QgsProcessingParameterFile,
                       QgsProcessingParameterFileDestination, QgsProcessingParameterFolderDestination,
                       QgsProcessingParameterMultipleLayers, QgsProcessingParameterNumber,
                       QgsProcessingParameterRasterLayer, QgsProcessingParameterString,
                       QgsProcessingParameterVectorDestination, QgsProcessingParameterVectorLayer)

from ...engine.contract.defaults import DEFAULT_WEIGHTS
from ...engine.contract.params import (BOOL, CHOICE, FILE, FLOAT, INT, LENGTH_UNITS, OUT_FILE, OUT_FOLDER, RASTER,
                                       VECTOR, Param, Tool, parse_length)
from ...engine.contract.tools import WEIGHT_WORDS

# contract parameter -> Processing parameter, where not the name in capitals (``tile_size`` -> TILE_SIZE)
QGIS_NAMES = {"raster": "INPUT", "out": "OUTPUT"}

# QGIS's own parameters next to the declared ones
WEIGHTS, WEIGHTS_FILE, TILE_UNIT = "WEIGHTS", "WEIGHTS_FILE", "TILE_UNIT"
MORE_RASTERS = "MORE_RASTERS"           # a raster that takes several (Param.many): the scenes after INPUT
WEIGHT_LABELS = {"imagenet": "ImageNet (pretrained)", "none": "none (random weights)"}
UNIT_LABELS = {"px": "pixels (px)", "m": "metres on the ground (m)"}


def qgis_name(name: str, names: dict | None = None) -> str:
    """The Processing parameter of contract parameter ``name`` (``raster`` -> INPUT, ``k`` -> K)."""
    return {**QGIS_NAMES, **(names or {})}.get(name, name.upper())


def description(param: Param) -> str:
    """The declared label, with the unit: 'Window overlap (px)'."""
    return param.title + (f" ({param.unit})" if param.unit else "")


def number_default(param: Param):
    """The declared default of a number, or None when the engine chooses ('auto', or none declared)."""
    default = param.default
    return default if isinstance(default, (int, float)) and not isinstance(default, bool) else None


def file_filter(param: Param) -> str:
    """'Model file (*.pt *.pth)' from the declared suffixes ('' without)."""
    if not param.suffixes:
        return ""
    return f"{param.title} ({' '.join('*' + s for s in param.suffixes)})"


def definition(param: Param, name: str | None = None, *, labels: dict | None = None, layer_types=None,
               vector_layer: bool = False, output: str = "file", title: str | None = None
               ) -> QgsProcessingParameterDefinition:
    """The Processing parameter of a declared ``param``, named ``name`` (default: :func:`qgis_name`).

    ``labels``: what an enum shows for each choice (the choice itself otherwise); ``layer_types``: the
    geometry types of a vector input; ``vector_layer``: a vector input as a layer rather than a feature
    source; ``output``: an OUT_FILE as a ``file`` or a ``vector`` destination; ``title``: a destination's
    name as Processing shows its result ('Clustered tiles'), in place of the declared label.
    """
    name = name or qgis_name(param.name)
    text = title or description(param)
    optional = not param.required
    t = param.type
    if t in (INT, FLOAT):
        default = number_default(param)
        kind = QgsProcessingParameterNumber.Integer if t == INT else QgsProcessingParameterNumber.Double
        result = QgsProcessingParameterNumber(name, text, kind, default, default is None)
        if param.minimum is not None:
            result.setMinimum(param.minimum)
        if param.maximum is not None:
            result.setMaximum(param.maximum)
    elif t == CHOICE:
        options = [(labels or {}).get(c, c) for c in param.choices]
        default = param.choices.index(param.default) if param.default in param.choices else None
        result = QgsProcessingParameterEnum(name, text, options, False, default, default is None)
    elif t == BOOL:
        result = QgsProcessingParameterBoolean(name, text, bool(param.default))
    elif t == RASTER:
        result = QgsProcessingParameterRasterLayer(name, text, optional=optional)
    elif t == VECTOR:
        kind = QgsProcessingParameterVectorLayer if vector_layer else QgsProcessingParameterFeatureSource
        result = kind(name, text, list(layer_types or []), optional=optional)
    elif t == FILE:
        result = QgsProcessingParameterFile(name, text, QgsProcessingParameterFile.File, "", None, optional,
                                            file_filter(param))
    elif t == OUT_FILE and output == "vector":
        result = QgsProcessingParameterVectorDestination(name, text, *(layer_types or []), optional=optional)
    elif t == OUT_FILE:
        result = QgsProcessingParameterFileDestination(name, text, file_filter(param), optional=optional)
    elif t == OUT_FOLDER:
        result = QgsProcessingParameterFolderDestination(name, text, optional=optional)
    else:                                        # text, K lists, tile size lists, bands: as the CLI writes them
        default = param.default if isinstance(param.default, str) else None
        result = QgsProcessingParameterString(name, text, default, False, optional)
    if param.advanced:
        result.setFlags(result.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
    result.setHelp(param.help)
    return result


def value(alg, parameters: dict, param: Param, name: str, context):
    """The request value of a declared number, choice, flag, file or text from the Processing parameters; None
    for an optional one not given (the engine's choice)."""
    t = param.type
    raw = parameters.get(name)
    if t in (INT, FLOAT) and (raw is None or raw == "") and number_default(param) is None:
        return None
    if t == INT:
        return alg.parameterAsInt(parameters, name, context)
    if t == FLOAT:
        return alg.parameterAsDouble(parameters, name, context)
    if t == CHOICE:
        return param.choices[alg.parameterAsEnum(parameters, name, context)]
    if t == BOOL:
        return alg.parameterAsBool(parameters, name, context)
    if t == FILE:
        return alg.parameterAsFile(parameters, name, context) or None
    return alg.parameterAsString(parameters, name, context)


# -- QGIS's own parameters for declared values ----------------------------------------------------------------
def weights_parameters(param: Param, labels: dict | None = None) -> list[QgsProcessingParameterDefinition]:
    """WEIGHTS (the declared words: ImageNet or none) and WEIGHTS_FILE (a state dict that overrides them)."""
    shown = {**WEIGHT_LABELS, **(labels or {})}
    choice = QgsProcessingParameterEnum(WEIGHTS, param.title, [shown.get(w, w) for w in WEIGHT_WORDS],
                                        defaultValue=WEIGHT_WORDS.index(DEFAULT_WEIGHTS))
    choice.setHelp(param.help)
    file = QgsProcessingParameterFile(WEIGHTS_FILE, f"{param.title} file (state dict; overrides {param.title})",
                                      optional=True)
    return [choice, file]


def weights_value(alg, parameters: dict, context) -> str:
    """The weights file when one is given, else the chosen word."""
    return alg.parameterAsFile(parameters, WEIGHTS_FILE, context) or \
        WEIGHT_WORDS[alg.parameterAsEnum(parameters, WEIGHTS, context)]


def unit_parameter(default_unit: str) -> QgsProcessingParameterEnum:
    """TILE_UNIT: the contract's length units (pixels, metres on the ground)."""
    return QgsProcessingParameterEnum(TILE_UNIT, "Tile size unit", [UNIT_LABELS.get(u, u) for u in LENGTH_UNITS],
                                      defaultValue=LENGTH_UNITS.index(default_unit))


def unit_value(alg, parameters: dict, context) -> str:
    return LENGTH_UNITS[alg.parameterAsEnum(parameters, TILE_UNIT, context)]


def length_default(param: Param) -> tuple[float, str]:
    """(64.0, 'px') from a declared length default ('64px')."""
    return parse_length(param.default)


def more_rasters_parameter(param: Param) -> QgsProcessingParameterMultipleLayers:
    """MORE_RASTERS: further raster layers read with INPUT as one study (a declared raster that takes several);
    INPUT stays a single raster layer, so models and scripts that give one raster are unchanged."""
    assert param.many, f"{param.name} takes one raster"
    result = QgsProcessingParameterMultipleLayers(MORE_RASTERS, "Further rasters (one study)",
                                                  QgsProcessing.TypeRaster, optional=True)
    result.setHelp("more scenes read with the raster layer as one mosaic: the raster layer first, then these in "
                   "order; where scenes overlap the first listed wins; scenes in different CRSs are warped to the "
                   "UTM zone of the study")
    return result


MORE_RASTERS_BULLET = ("• Further rasters (one study) (optional): more raster layers read with the raster layer as one "
                       "mosaic, which the tiles are cut from: where scenes overlap the first listed (the raster "
                       "layer, then these in order) wins; scenes in different CRSs are warped to the UTM zone of the "
                       "study, and the outputs are in that CRS.")


def study_value(first: str, more: list[str]):
    """A raster value as the contract takes it: one path, or a list (a study) when there are more."""
    scenes = [first, *[m for m in more if m != first]]
    return scenes[0] if len(scenes) == 1 else scenes


# -- help -----------------------------------------------------------------------------------------------------
def bullet(param: Param, note: str = "", labels: dict | None = None, title: str | None = None,
           tool: Tool | None = None) -> str:
    """One help line from the declaration: '• Number of clusters (K): number of clusters K, 2 to MAX_K and
    at most the number of valid tiles (default 8).' ``note``: what QGIS adds (how a layer is taken); ``tool``:
    the declaration's flags ('--minutes') are said as their parameters' labels ('Time budget')."""
    text = param.help.replace("%%", "%")
    if tool is not None:
        titles = {p.flag: p.title for p in tool.params if not p.positional}
        text = re.sub(r"--[a-z][a-z-]*", lambda m: titles.get(m.group(0), m.group(0)), text)
    if param.type == CHOICE:
        shown = [(labels or {}).get(c, c) for c in param.choices]
        text += f": {', '.join(shown)}"
        if param.default in param.choices:
            text += f" (default {(labels or {}).get(param.default, param.default)})"
    elif param.type in (INT, FLOAT):
        parts = [param.range_text()] if param.range_text() else []
        default = number_default(param)
        parts.append(f"default {default:g}" if default is not None else "empty: the engine chooses")
        text += f" ({'; '.join(parts)})"
    elif param.type == BOOL and param.default:
        text += " (on by default)"
    if param.advanced:
        text += " [advanced]"
    return f"• {title or description(param)}: {text}." + (f" {note}" if note else "")


def bullets(tool: Tool, names, options: dict | None = None, notes: dict | None = None) -> list[str]:
    """:func:`bullet` for each of ``names`` of ``tool``, with the ``labels`` and ``title`` of its ``options`` (an
    algorithm's OPTIONS) and its ``notes``; after a raster that takes several, the line of MORE_RASTERS."""
    options, notes = options or {}, notes or {}
    lines = []
    for n in names:
        lines.append(bullet(tool.param(n), notes.get(n, ""), options.get(n, {}).get("labels"),
                            options.get(n, {}).get("title"), tool))
        if tool.param(n).many:                      # the algorithm adds MORE_RASTERS after it (add_params)
            lines.append(MORE_RASTERS_BULLET)
    return lines


def output_name(tool: Tool, key: str, out: str = "OUT.gpkg", tag: str = "64px") -> str:
    """The declared file name of output ``key`` for an output named ``out``: 'OUT_clusters.tif'."""
    pattern = next(o.pattern for o in tool.outputs if o.key == key)
    stem = out.rsplit(".", 1)[0]
    return pattern.format(out=out, stem=stem, tag=tag)
