"""``urbanform:report``: one self-contained HTML report of a run (galleries of example tiles per cluster).

The engine cuts example tiles from the run's raster (named in its manifest) and embeds them with the sizes,
profiles and plots into one HTML file that opens offline; Processing's results viewer links it.
"""
from __future__ import annotations

from qgis.core import QgsProcessingOutputHtml

from ...engine.contract.tools import TOOLS
from ..requests.report import ReportRequest
from . import params
from .base import EngineAlgorithm

OUTPUT, HTML = "OUTPUT", "HTML"

REPORT = TOOLS["report"]
PARAMS = ("run", "out", "examples", "seed")
OPTIONS = {"out": {"title": "Report"}}
NOTES = {"run": "Written by a cluster, predict, sweep or change run, with its manifest next to it.",
         "out": "An existing file is replaced."}

HELP = "\n".join([
    "Writes one HTML file that explains a run: per cluster its size, a map thumbnail, a gallery of the tiles "
    "closest to its centre and of random ones (cut from the run's raster), its statistics profile and "
    "eta-squared when the run has statistics; for a sweep its metrics and plots; for a change run its "
    "transitions and the most changed tiles. Every image is embedded: the file opens offline and can be sent "
    "on as it is.",
    "Parameters:",
    *params.bullets(REPORT, PARAMS, OPTIONS, NOTES),
    "Outputs:",
    "• Report: the HTML file.",
    "• Report viewer: the same file, as Processing's results viewer opens it.",
])


class ReportAlgorithm(EngineAlgorithm):
    """Processing front end of ``python -m engine report``."""

    NAME = "report"
    DISPLAY_NAME = "Report of a run (HTML)"
    HELP_TEXT = HELP
    TOOL = REPORT.name
    PARAMS = PARAMS
    OPTIONS = OPTIONS

    def initAlgorithm(self, config=None) -> None:  # noqa: N802 - QGIS API
        self.add_params(*PARAMS)
        self.addOutput(QgsProcessingOutputHtml(HTML, "Report viewer"))

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802 - QGIS API
        out = self.parameterAsFileOutput(parameters, OUTPUT, context)
        request = ReportRequest(run=self.param_value(parameters, "run", context) or "", out=out,
                                examples=self.param_value(parameters, "examples", context),
                                seed=self.param_value(parameters, "seed", context), overwrite=True)
        problems = request.problems()
        if problems:
            raise self.problems_error(problems)
        if not self.run_engine_command(request.argv(), list(request.outputs().values()), feedback):
            return {}
        return {OUTPUT: out, HTML: out}
