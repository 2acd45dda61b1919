"""One file per fitted cluster model: CNN weights, PCA, centroids, tiling and preprocessing.

``cluster`` writes OUT_model.pt for both methods (k-means on a fixed CNN, and
DeepCluster, whose CNN was trained); ``predict`` reads it to put the tiles of
another raster into the same clusters. The file is a ``torch.save`` of plain
containers (strings, numbers, tensors) so it loads with
``torch.load(weights_only=True)``: opening a model file never runs code from it.

Layout::

    {"format": "urbanform-cluster-model", "version": 1,
     "meta": "<JSON: method, backbone, sobel, tiling, clustering, training history>",
     "kmeans": {"mean_": tensor, "components_": ..., "cluster_centers_": ...},
     "network": {pooled trunk state dict}}
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import BadInput
from .kmeans import KMeansTiles

FORMAT = "urbanform-cluster-model"
VERSION = 1


@dataclass
class ClusterModel:
    """A loaded model file."""

    kmeans: KMeansTiles
    network: dict                      # state dict of the pooled trunk (FeatureExtractor(state_dict=...))
    backbone: str
    sobel: bool
    tiling: dict                       # tile_px, tile_size, stride_px, edge, min_valid, bands, n_bands,
                                       # pixel_size_m, stretch, working_crs
    method: str = "kmeans"
    meta: dict = field(default_factory=dict)

    @property
    def k(self) -> int:
        return int(self.kmeans.n_clusters)


def save_model(path: "str | Path", kmeans: KMeansTiles, network: dict, *, backbone: str, sobel: bool,
               tiling: dict, method: str, extra: dict | None = None) -> None:
    """Write the model to ``path`` (the caller makes it atomic: ``OutputSet.temp``)."""
    import torch

    km_meta, arrays = kmeans.get_state()
    meta = {"method": method, "backbone": backbone, "sobel": bool(sobel), "tiling": tiling, "kmeans": km_meta,
            **(extra or {})}
    obj = {"format": FORMAT, "version": VERSION, "meta": json.dumps(meta, default=_jsonable),
           "kmeans": {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in arrays.items()},
           "network": {k: v.detach().cpu().contiguous() for k, v in network.items()}}
    torch.save(obj, path)


def read_container(path: "str | Path", fmt: str, version: int, kind: str, hint: str) -> dict:
    """A model file's dict (torch.load with weights_only=True, nothing in it can run), or BadInput saying why
    it is not an Urban Form Mapper ``kind`` file of format ``fmt``. Shared by every model file we write."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise BadInput(f"model {str(path)!r}: no such file. {hint}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not ours"
        raise BadInput(f"model {str(path)!r} is not an Urban Form Mapper {kind} file and was not loaded "
                       f"({type(exc).__name__}). {hint}") from None
    if not isinstance(obj, dict) or obj.get("format") != fmt:
        raise BadInput(f"model {str(path)!r} is a PyTorch file but not an Urban Form Mapper {kind} "
                       f"(no '{fmt}' marker). {hint}")
    if int(obj.get("version", 0)) > version:
        raise BadInput(f"model {str(path)!r} was written by a newer version (format {obj['version']}); "
                       "update Urban Form Mapper.")
    return obj


def load_model(path: "str | Path") -> ClusterModel:
    """Read a model file, or BadInput saying why it is not one of ours."""
    obj = read_container(path, FORMAT, VERSION, "cluster model", "Give the OUT_model.pt written by `cluster`.")
    meta = json.loads(obj["meta"])
    kmeans = KMeansTiles.from_state(meta["kmeans"], {k: v.numpy() for k, v in obj["kmeans"].items()})
    return ClusterModel(kmeans=kmeans, network=obj["network"], backbone=meta["backbone"], sobel=meta["sobel"],
                        tiling=meta["tiling"], method=meta["method"], meta=meta)


def _jsonable(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, os.PathLike):
        return os.fspath(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")
