"""The ``report`` tool (a self-contained HTML report of a run) as a request.

Checks, command line and file names are the contract's (``engine.contract.tools.REPORT``).
Plain values: no Qt, no QGIS (tests/plugin/test_layout.py checks).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ...engine.contract.params import Tool, output_files
from ...engine.contract.problems import Problem
from ...engine.contract.tools import TOOLS
from .common import command, contract_problems

REPORT: Tool = TOOLS["report"]


def default_report(run: str) -> str:
    """RUN_report.html next to the run (the dock's Report button writes it there)."""
    return str(Path(run).with_name(f"{Path(run).stem}_report.html"))


@dataclass
class ReportRequest:
    """``python -m engine report``: one HTML file explaining the run ``run`` (galleries, sizes, profiles, plots)."""

    run: str
    out: str
    examples: int = REPORT.param("examples").default
    seed: int = REPORT.param("seed").default
    overwrite: bool = False
    extra: list[str] = field(default_factory=list)

    TOOL = REPORT

    @property
    def name(self) -> str:
        return Path(self.out).stem

    def values(self) -> dict:
        return {"run": self.run, "out": self.out, "examples": self.examples, "seed": self.seed,
                "overwrite": self.overwrite}

    def problems(self) -> list[Problem]:
        return contract_problems(REPORT, self.values())

    def argv(self) -> list[str]:
        return command(REPORT, self.values(), self.extra)

    def outputs(self) -> dict[str, Path]:
        return output_files(REPORT, self.values())
