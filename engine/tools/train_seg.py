"""The train-seg tool: a U-Net building segmenter trained from footprints.

The params value and the run function are those of ``engine.segmentation.train``
(their code has not moved yet); the CLI takes them from here.
"""
from ..segmentation.train import TrainParams, run_train

__all__ = ["TrainParams", "run_train"]
