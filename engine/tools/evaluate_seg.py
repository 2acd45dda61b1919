"""The evaluate-seg tool: pixel and object scores of a segmentation against reference footprints.

The function is ``engine.segmentation.evaluate.evaluate``; the CLI takes it from here.
"""
from ..segmentation.evaluate import evaluate

__all__ = ["evaluate"]
