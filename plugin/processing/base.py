"""What every Urban Form Mapper algorithm shares: its group, a fresh instance per
run, and "run an engine command with Processing feedback" (on this computer or
on the engine server, as the Engine setting of the panel says).

Processing runs an algorithm on a worker thread (no GUI calls here) on an
instance made by ``createInstance`` for that run, so nothing is kept on the
instance from one run to the next; batch mode and the model builder rely on it.
The one piece of session state is the cache of engine checks (``_CHECKED``):
checking an engine Python imports torch (seconds), which a batch of fifty runs
should not pay fifty times.
"""
from __future__ import annotations

import shlex
import tempfile
import threading
from pathlib import Path

from qgis.core import (QgsProcessingAlgorithm, QgsProcessingException, QgsProcessingFeedback,
                       QgsProcessingParameterDefinition, QgsProcessingParameterExtent, QgsProcessingParameterNumber,
                       QgsProcessingUtils)

from ...engine.contract.params import RASTER, Tool
from ...engine.contract.tools import TOOLS
from ..requests.wording import without_name
from ..runner import dask_setting, engine_env, server_settings, webmap
from ..runner.dispatch import run_engine
from ..runner.task import progress_for, status_text
from . import params

GROUP = "Urban form"
GROUP_ID = "urbanform"

# request parameter (the engine flag's name) -> the algorithms' parameter, where not params.qgis_name's (a weights
# problem is about the file: the WEIGHTS choice cannot be wrong)
PARAMETER_NAMES = {"weights": params.WEIGHTS_FILE}

# web map layers (XYZ, WMS, WMTS) as raster input (issue 14): written to a GeoTIFF before the engine runs, at this
# ground resolution, over this extent (else the algorithm's EXTENT, its AREA's extent, or the layer's)
WEB_RESOLUTION, WEB_EXTENT = "WEB_RESOLUTION", "WEB_EXTENT"
WEB_INPUTS = ("raster", "raster_before", "raster_after")          # the imagery a tool reads (not a population grid)
WEB_HELP = ("• Ground resolution for web map layers (m) [advanced]: a web map layer (XYZ tiles, WMS, WMTS) is "
            "accepted as the raster: it is first written to a local GeoTIFF at this ground resolution (default "
            f"{webmap.DEFAULT_RESOLUTION_M:g} m; Web Mercator's scale is corrected), with its size in the log; above "
            f"{webmap.MAX_MEGAPIXELS} megapixels it is refused: choose a smaller extent or coarser pixels.\n"
            "• Extent for web map layers [advanced]: the area written from a web map layer (any CRS); default: the "
            "Extent parameter, else the area limit's extent, else the layer's own.")

_CHECKED: dict[str, dict] = {}       # engine Python path -> its successful `engine check` answer
_CHECK_LOCK = threading.Lock()


class UrbanFormAlgorithm(QgsProcessingAlgorithm):
    """Base of every algorithm of the provider: group, names and help from class attributes, a new instance per run.

    A subclass sets ``NAME`` (the id after ``urbanform:``), ``DISPLAY_NAME`` and ``HELP_TEXT``; one that runs an
    engine tool also sets ``TOOL`` (its name in ``engine.contract.tools.TOOLS``) and ``PARAMS`` (the tool's
    parameters it exposes, built from their declarations by :meth:`add_params`, with ``OPTIONS`` per parameter
    for :func:`.params.definition`).
    """

    NAME = ""
    DISPLAY_NAME = ""
    HELP_TEXT = ""
    TOOL = ""
    PARAMS: tuple = ()
    OPTIONS: dict = {}

    def name(self) -> str:
        return self.NAME

    def displayName(self) -> str:  # noqa: N802 - QGIS API
        return self.DISPLAY_NAME

    def shortHelpString(self) -> str:  # noqa: N802 - QGIS API
        web = self.parameterDefinition(WEB_RESOLUTION) is not None
        return self.HELP_TEXT + ("\n" + WEB_HELP if web else "")

    def group(self) -> str:
        return GROUP

    def groupId(self) -> str:  # noqa: N802 - QGIS API
        return GROUP_ID

    def createInstance(self):  # noqa: N802 - QGIS API
        return type(self)()

    # request parameter -> this algorithm's parameter, where it is not the upper-case name (``tile_size`` -> TILE_SIZE)
    PARAMETER_NAMES: dict[str, str] = {}

    def tool(self) -> Tool | None:
        """The engine tool's declaration (None for an algorithm that runs no engine tool)."""
        return TOOLS.get(self.TOOL)

    def parameter_name(self, name: str) -> str:
        """The Processing parameter of request/contract parameter ``name`` (``raster`` -> INPUT, ``k`` -> K)."""
        return params.qgis_name(name, {**PARAMETER_NAMES, **self.PARAMETER_NAMES})

    def add_params(self, *names: str) -> None:
        """Add the Processing parameters of the tool's declared ``names`` (each one of ``PARAMS``); a raster that
        takes several (one study) is followed by MORE_RASTERS, 'Further rasters (one study)'."""
        for name in names:
            assert name in self.PARAMS, f"{self.NAME}: {name} is not listed in PARAMS"
            declared = self.tool().param(name)
            self.addParameter(params.definition(declared, self.parameter_name(name), **self.OPTIONS.get(name, {})))
            if declared.many:                           # a raster that takes several: 'Further rasters (one study)'
                self.addParameter(params.more_rasters_parameter(declared))
            if name == "dask" and dask_setting.address():       # the Engine setting "Dask scheduler"
                self.parameterDefinition(self.parameter_name(name)).setDefaultValue(dask_setting.address())
            if name in WEB_INPUTS and self.tool().param(name).type == RASTER:
                self.add_web_params()

    def add_web_params(self) -> None:
        """The advanced WEB_RESOLUTION and WEB_EXTENT, once: how a web map layer given as raster is written."""
        if self.parameterDefinition(WEB_RESOLUTION) is not None:
            return
        number = QgsProcessingParameterNumber
        resolution = number(WEB_RESOLUTION, "Ground resolution for web map layers (m)", number.Double,
                            webmap.DEFAULT_RESOLUTION_M, False, webmap.MIN_RESOLUTION_M)
        resolution.setHelp("A web map layer (XYZ, WMS, WMTS) is first written to a local GeoTIFF at this ground "
                           "resolution, in metres on the ground")
        extent = QgsProcessingParameterExtent(WEB_EXTENT, "Extent for web map layers", optional=True)
        extent.setHelp("The area written from a web map layer (default: Extent, the area limit's extent, or the "
                       "layer's own)")
        for parameter in (resolution, extent):
            parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(parameter)

    def local_raster(self, raster, parameters, context, feedback) -> str:
        """The file behind raster layer ``raster``; a web map layer is first written to a GeoTIFF in Processing's
        temporary folder (progress and cancel through ``feedback``); any other non-file layer is refused."""
        if not webmap.is_web_layer(raster):
            return local_raster_path(raster)
        feedback = feedback or QgsProcessingFeedback()
        resolution = self.parameterAsDouble(parameters, WEB_RESOLUTION, context) \
            if self.parameterDefinition(WEB_RESOLUTION) is not None else webmap.DEFAULT_RESOLUTION_M
        rect, crs = self.web_extent(parameters, context, raster)
        try:
            plan = webmap.plan(raster, rect, crs, resolution or webmap.DEFAULT_RESOLUTION_M,
                               context.transformContext())
        except ValueError as exc:
            raise QgsProcessingException(f"{raster.name()}: {exc}") from None
        problem = plan.problem()
        if problem:
            raise QgsProcessingException(f"{raster.name()}: {problem} (Extent for web map layers, Ground "
                                         "resolution for web map layers)")
        folder = tempfile.mkdtemp(prefix="urbanform_web_", dir=QgsProcessingUtils.tempFolder())
        path = Path(folder) / "web_map.tif"
        feedback.pushInfo(f"Writing the web map layer {raster.name()!r} to {path}: {plan.text()}")
        try:
            webmap.write_geotiff(plan, path, on_progress=feedback.setProgress, is_cancelled=feedback.isCanceled,
                                 context=context.transformContext())
        except webmap.WriteCancelled:
            raise QgsProcessingException("Cancelled while writing the web map layer; nothing was run.") from None
        except (OSError, RuntimeError, ValueError) as exc:
            raise QgsProcessingException(f"The web map layer {raster.name()!r} could not be written: {exc}") \
                from None
        feedback.setProgress(0)
        return str(path)

    def study_raster(self, parameters, context, first: str, feedback=None):
        """The raster value of a request: the file of the raster layer (``first``), or with MORE_RASTERS the
        files of all (one study, the raster layer first; a web map layer among them is written first too)."""
        more = [self.local_raster(layer, parameters, context, feedback)
                for layer in self.parameterAsLayerList(parameters, params.MORE_RASTERS, context) or []]
        return params.study_value(first, more)

    def web_extent(self, parameters, context, raster):
        """(rectangle, its CRS) to write of a web map layer: WEB_EXTENT, else EXTENT, else AREA's, else the layer's."""
        for name in (WEB_EXTENT, "EXTENT"):
            if self.parameterDefinition(name) is not None and parameters.get(name) not in (None, ""):
                rect = self.parameterAsExtent(parameters, name, context, raster.crs())
                if not rect.isNull() and not rect.isEmpty():
                    return rect, raster.crs()
        if self.parameterDefinition("AREA") is not None and parameters.get("AREA") not in (None, ""):
            source = self.parameterAsSource(parameters, "AREA", context)
            if source is not None:
                return source.sourceExtent(), source.sourceCrs()
        return raster.extent(), raster.crs()

    def param_value(self, parameters, name: str, context):
        """The request value of declared parameter ``name`` (None: not given, the engine's choice)."""
        return params.value(self, parameters, self.tool().param(name), self.parameter_name(name), context)

    def problems_error(self, problems, tool: str | None = None) -> QgsProcessingException:
        """The problems (the request's, or the engine's bad input for engine tool ``tool``, default ``TOOL``) as
        one exception, each line naming the algorithm parameter it is about by its description, in place of the
        declared label, flag or name a contract or engine message starts with."""
        return QgsProcessingException("\n".join(self.problem_line(p, tool or self.TOOL) for p in problems))

    def problem_line(self, problem, tool: str) -> str:
        """'Number of clusters (K): 300 is out of range ...' for a problem with parameter ``k``; the message as it
        is when this algorithm has no parameter for it."""
        definition = self.parameterDefinition(self.parameter_name(problem.param))
        if definition is None:
            return problem.message
        return f"{definition.description()}: {without_name(tool, problem.param, problem.message)}"


class EngineAlgorithm(UrbanFormAlgorithm):
    """An algorithm that runs one engine command in the engine's own Python."""

    def run_engine_command(self, args: list[str], outputs: list[Path], feedback) -> bool:
        """Run ``python -m engine ARGS`` with progress and cancel wired to ``feedback``.

        Returns True on success and False when the user cancelled (the engine has
        then removed its temporary files and written nothing). Raises
        QgsProcessingException with the engine's message on failure.
        """
        return self.engine_result(args, outputs, feedback) is not None

    def run_request(self, request, feedback) -> "dict | None":
        """Check ``request`` (a QgsProcessingException naming the parameters at fault, before any work), then run
        it; its output files by key, or None when the user cancelled."""
        problems = request.problems()
        if problems:
            raise self.problems_error(problems)
        outputs = request.outputs()
        return outputs if self.run_engine_command(request.argv(), list(outputs.values()), feedback) else None

    def engine_result(self, args: list[str], outputs: list[Path], feedback, progress=None):
        """As :meth:`run_engine_command`, returning the EngineResult (None when cancelled); ``progress`` maps the
        engine's stages to percentages (default: the map for the tool in ``args``)."""
        feedback = feedback or QgsProcessingFeedback()
        server = server_settings.active_server()            # None: this computer (the Engine setting)
        if server is None:
            python = engine_python(feedback)
            feedback.pushCommandInfo(" ".join(shlex.quote(a) for a in engine_env.engine_command(python, *args)))
        else:
            python = None
            feedback.pushCommandInfo(f"On the engine server {server.url}: engine "
                                     + " ".join(shlex.quote(a) for a in args))
        result = run_engine(python, args, on_event=progress_reporter(feedback, progress or progress_for(args)),
                            is_cancelled=feedback.isCanceled, outputs=outputs, server=server)
        if result.cancelled:
            feedback.pushInfo(result.message)
            return None
        if not result.ok:
            if result.stderr.strip():
                feedback.reportError(f"Engine output (exit {result.returncode}):\n{result.stderr.strip()}")
            if result.problem is not None:         # bad input the engine found: named as this algorithm names it
                raise self.problems_error([result.problem], result.tool)
            raise QgsProcessingException(result.message)
        return result


def local_raster_path(raster) -> str:
    """The file behind a raster layer, or an exception telling the user to save it as a GeoTIFF."""
    if raster is None:
        raise QgsProcessingException("Choose a raster layer (INPUT).")
    path = raster.source()
    if raster.providerType() != "gdal" or not Path(path).is_file():
        raise QgsProcessingException(
            f"The raster layer {raster.name()!r} ({path}) is not a local file. Save it to a GeoTIFF first "
            "(right-click the layer > Export > Save As…) and run the algorithm on that file.")
    return path


def engine_python(feedback=None) -> str:
    """The engine Python (engine_env.detect), checked once per path and session; else the fix as an exception."""
    python = engine_env.detect()
    if python is None:
        raise QgsProcessingException(engine_env.check(None)["error"])
    with _CHECK_LOCK:
        if python not in _CHECKED:
            if feedback is not None:
                feedback.pushInfo(f"Checking the engine Python {python}…")
            info = engine_env.check(python)
            if not info.get("ok"):
                raise QgsProcessingException(info["error"])      # not cached: the user may fix it and rerun
            _CHECKED[python] = info
    return python


def progress_reporter(feedback, progress_of=None):
    """An ``on_event`` callback: every event moves the progress bar; a new stage also sets the progress text.

    The text is set once per stage, not per event: the algorithm dialog and
    qgis_process print each progress text as a log line. DeepCluster repeats
    stages (features each epoch): the bar never moves back.
    """
    current = {"stage": None}
    progress_of = progress_of or progress_for([])

    def on_event(event: dict) -> None:
        percent = progress_of(event)
        if percent is not None and percent >= feedback.progress():
            feedback.setProgress(percent)
        if event.get("stage") != current["stage"]:
            current["stage"] = event.get("stage")
            feedback.setProgressText(status_text(event))

    return on_event


# -- layers Processing loads when the run has finished ------------------------------------------
_LIVE: list = []           # post-processors handed to QGIS, until QGIS has deleted them


def set_post_processor(details, factory) -> None:
    """Give ``details`` a new post-processor made by ``factory`` (a class or a function).

    The layer details take ownership of their post-processor and delete it
    after use, so every load needs its own; its Python side is kept here until
    then (otherwise QGIS would call the bare C++ base class, which does nothing).
    """
    from qgis.PyQt import sip

    processor = factory()
    _LIVE[:] = [p for p in _LIVE if not sip.isdeleted(p)] + [processor]
    details.setPostProcessor(processor)


def load_output_as(context, path: str, uri: str, post_processor=None) -> None:
    """Make Processing load ``uri`` (e.g. ``path|layername=tiles``) instead of ``path``, if it loads ``path`` at all.

    Only outputs with a destination project (the toolbox, runAndLoadResults)
    are registered for loading; otherwise this does nothing. ``post_processor``
    is a factory (e.g. the class): each load gets a new one (see set_post_processor).
    """
    layers = context.layersToLoadOnCompletion()
    if path not in layers:
        return
    details = layers.pop(path)
    if post_processor is not None:
        set_post_processor(details, post_processor)
    layers[uri] = details
    context.setLayersToLoadOnCompletion(layers)


def forget_output(context, path: str) -> None:
    """Do not try to load ``path`` (a cancelled run wrote nothing; loading it would report an error)."""
    layers = context.layersToLoadOnCompletion()
    if layers.pop(path, None) is not None:
        context.setLayersToLoadOnCompletion(layers)
