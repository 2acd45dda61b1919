"""The evaluate-seg tool: pixel and object scores of a segmentation against reference footprints.

The scoring is ``engine.segmentation.evaluate.evaluate``; this module checks the
inputs as ``contract.tools.EVALUATE_SEG`` declares them and runs it.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..segmentation.evaluate import evaluate
from . import check_params

__all__ = ["EvaluateSegParams", "evaluate", "run"]


@dataclass
class EvaluateSegParams:
    """An ``evaluate-seg`` run: the fields and defaults ``contract.tools.EVALUATE_SEG`` declares."""

    pred: str
    truth: str
    area: str | None = None


def run(params: EvaluateSegParams, progress=None) -> dict:  # noqa: ARG001 - every tool's signature
    """The scores (a flat dict, see ``evaluate``) of ``params.pred`` against ``params.truth``."""
    check_params("evaluate-seg", params)
    return evaluate(params.pred, params.truth, params.area)
