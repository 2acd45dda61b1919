"""Requests: what the dock, the Buildings panel and the Processing algorithms ask the engine to do, as plain values.

One module per engine tool (``cluster``, ``sweep``, ``predict``, ``stats`` with ``export``, ``train_seg``,
``segment``, ``evaluate_seg``), shared checks and choices in ``common``, free default output names in
``outputs``. Each request knows its command line (``argv()``), its files (``outputs()``) and what the engine
would reject (``problems()``). Nothing here imports Qt or QGIS (tests/plugin/test_layout.py checks).

The names below are the package's interface: ``from ..requests import ClusterRequest``.
"""
from __future__ import annotations

from ...engine.contract.limits import MAX_K, MIN_K
from .cluster import ClusterRequest
from .common import BACKBONES, DEVICES, MAX_EPOCHS, METHODS, UNITS, WEIGHTS, default_output
from .evaluate_seg import SEG_METRIC_LABELS, SEG_METRICS, EvaluateSegRequest, seg_scores_text
from .predict import PredictRequest
from .segment import SegmentRequest
from .stats import EXPORT_FORMATS, ExportRequest, StatsRequest
from .sweep import SweepRequest, parse_k, parse_sizes
from .train_seg import SEG_ENCODERS, TrainSegRequest, default_model_output

__all__ = ["BACKBONES", "DEVICES", "EXPORT_FORMATS", "MAX_EPOCHS", "MAX_K", "METHODS", "MIN_K", "SEG_ENCODERS",
           "SEG_METRICS", "SEG_METRIC_LABELS", "UNITS", "WEIGHTS", "ClusterRequest", "EvaluateSegRequest",
           "ExportRequest", "PredictRequest", "SegmentRequest", "StatsRequest", "SweepRequest", "TrainSegRequest",
           "default_model_output", "default_output", "parse_k", "parse_sizes", "seg_scores_text"]
