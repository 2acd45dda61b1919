"""Requests: what the dock, the Buildings panel and the Processing algorithms ask the engine to do, as plain values.

One module per engine tool (``cluster``, ``sweep``, ``predict``, ``stats`` with ``export``, ``train_seg``,
``segment``, ``evaluate_seg``, ``report``, ``change``, ``similar``, ``classify``), shared helpers in ``common``,
free default output names in ``outputs``. Each request maps its fields to its tool's parameters (``values()``); its
command line (``argv()``), its files (``outputs()``) and what the engine would reject (``problems()``) are then
derived from the tool's declaration in ``engine.contract.tools``. Nothing here imports Qt or QGIS
(tests/plugin/test_layout.py checks).

The names below are the package's interface: ``from ..requests import ClusterRequest``. The choice lists and
limits are the contract's, re-exported for the panels.
"""
from __future__ import annotations

from ...engine.contract.defaults import BACKBONES, SEG_ENCODERS
from ...engine.contract.limits import MAX_K, MIN_K
from ...engine.contract.params import LENGTH_UNITS
from ...engine.contract.tools import DEVICES, EXPORT_FORMATS, MAX_EPOCHS, METHODS, TOOLS, WEIGHT_WORDS
from .change import ChangeRequest
from .classify import ClassifyRequest
from .cluster import DEEPCLUSTER, ClusterRequest
from .common import default_output
from .evaluate_seg import SEG_METRIC_LABELS, SEG_METRICS, EvaluateSegRequest, seg_scores_text
from .predict import PredictRequest
from .report import ReportRequest, default_report
from .segment import SegmentRequest
from .similar import SimilarRequest
from .stats import ExportRequest, StatsRequest
from .sweep import SweepRequest, parse_k, parse_sizes
from .train_seg import TrainSegRequest, default_model_output

__all__ = ["BACKBONES", "DEEPCLUSTER", "DEVICES", "EXPORT_FORMATS", "LENGTH_UNITS", "MAX_EPOCHS", "MAX_K", "METHODS",
           "MIN_K", "SEG_ENCODERS", "SEG_METRICS", "SEG_METRIC_LABELS", "TOOLS", "WEIGHT_WORDS",
           "ChangeRequest", "ClassifyRequest", "ClusterRequest", "EvaluateSegRequest", "ExportRequest",
           "PredictRequest", "ReportRequest", "SegmentRequest", "SimilarRequest", "StatsRequest",
           "SweepRequest", "TrainSegRequest", "default_model_output", "default_output", "default_report",
           "parse_k", "parse_sizes", "seg_scores_text"]
