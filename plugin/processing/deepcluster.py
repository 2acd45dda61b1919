"""``urbanform:deepcluster``: the engine's ``cluster --method deepcluster`` (k-means pseudo-labels train the CNN).

Everything but the training options is ``urbanform:cluster``'s: the same
parameters, the same request object, the same styled tiles layer.
"""
from __future__ import annotations

from dataclasses import replace

from qgis.core import QgsProcessingParameterNumber

from ..requests import MAX_EPOCHS
from .cluster import HELP as CLUSTER_HELP
from .cluster import ClusterAlgorithm

EPOCHS, LR = "EPOCHS", "LR"

HELP = "\n".join([
    "DeepCluster (Caron et al.), the method of the Accra urban-form study: each epoch computes the tile features "
    "with the current CNN, clusters them with k-means, and trains the CNN for one pass on the tiles with the "
    "cluster numbers as labels (overlapping crops, flips, rotations and light colour jitter). The final clusters "
    "come from the trained CNN's features. Slower than k-means (minutes per epoch on a CPU for a few thousand "
    "tiles); progress shows each epoch's loss and the agreement (NMI) with the previous epoch.",
    "Training parameters:",
    "• Training epochs: 1 to 200; the engine may stop early when the clusters no longer change.",
    "• Learning rate: 0 lets the engine choose (lower for a pretrained backbone).",
    "The other parameters and the outputs are those of Cluster raster tiles:",
    CLUSTER_HELP.replace("with k-means", "with DeepCluster"),
])


class DeepClusterAlgorithm(ClusterAlgorithm):
    """Processing front end of ``python -m engine cluster --method deepcluster``."""

    NAME = "deepcluster"
    DISPLAY_NAME = "Cluster raster tiles with DeepCluster"
    HELP_TEXT = HELP

    def initAlgorithm(self, config=None) -> None:  # noqa: N802 - QGIS API
        super().initAlgorithm(config)
        number = QgsProcessingParameterNumber
        self.addParameter(number(EPOCHS, "Training epochs", number.Integer, 5, False, 1, MAX_EPOCHS))
        self.addParameter(number(LR, "Learning rate (0 = automatic)", number.Double, 0, False, 0, 1))

    def build_request(self, parameters, context, raster, out, area):
        request = super().build_request(parameters, context, raster, out, area)
        lr = self.parameterAsDouble(parameters, LR, context)
        return replace(request, method="deepcluster", epochs=self.parameterAsInt(parameters, EPOCHS, context),
                       lr=lr or None)
