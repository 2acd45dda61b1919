"""The segment tool: building masks, probabilities and polygons from a trained U-Net, streamed.

The params value and the run function are those of ``engine.segmentation.infer``
(their code has not moved yet); the CLI takes them from here.
"""
from ..segmentation.infer import SegmentParams, run_segment

__all__ = ["SegmentParams", "run_segment"]
