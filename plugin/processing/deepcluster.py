"""``urbanform:deepcluster``: the engine's ``cluster --method deepcluster`` (k-means pseudo-labels train the CNN).

Everything but the training options is ``urbanform:cluster``'s: the same
parameters, the same request object, the same styled tiles layer. The training
options are the declared DeepCluster parameters of the ``cluster`` tool.
"""
from __future__ import annotations

from dataclasses import replace

from . import params
from .cluster import CLUSTER, NOTES, OPTIONS
from .cluster import HELP as CLUSTER_HELP
from .cluster import PARAMS as CLUSTER_PARAMS
from .cluster import ClusterAlgorithm

EPOCHS, LR = "EPOCHS", "LR"
TRAINING = ("epochs", "lr")
DEEPCLUSTER = CLUSTER.param("epochs").applies_when[1]          # the method the training options apply to

HELP = "\n".join([
    "DeepCluster (Caron et al.), the method of the Accra urban-form study: each epoch computes the tile features "
    "with the current CNN, clusters them with k-means, and trains the CNN for one pass on the tiles with the "
    "cluster numbers as labels (overlapping crops, flips, rotations and light colour jitter). The final clusters "
    "come from the trained CNN's features. Slower than k-means (minutes per epoch on a CPU for a few thousand "
    "tiles); progress shows each epoch's loss and the agreement (NMI) with the previous epoch.",
    "Training parameters:",
    *params.bullets(CLUSTER, TRAINING, OPTIONS, NOTES),
    "The other parameters and the outputs are those of Cluster raster tiles:",
    CLUSTER_HELP.replace("with k-means", "with DeepCluster"),
])


class DeepClusterAlgorithm(ClusterAlgorithm):
    """Processing front end of ``python -m engine cluster --method deepcluster``."""

    NAME = "deepcluster"
    DISPLAY_NAME = "Cluster raster tiles with DeepCluster"
    HELP_TEXT = HELP
    PARAMS = (*CLUSTER_PARAMS, *TRAINING)

    def initAlgorithm(self, config=None) -> None:  # noqa: N802 - QGIS API
        super().initAlgorithm(config)
        self.add_params(*TRAINING)

    def build_request(self, parameters, context, raster, out, area, raster_file=None):
        request = super().build_request(parameters, context, raster, out, area, raster_file)
        return replace(request, method=DEEPCLUSTER, epochs=self.param_value(parameters, "epochs", context),
                       lr=self.param_value(parameters, "lr", context))
