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

Reading checks everything before any work: a missing, empty, damaged or
truncated file, a file of another kind (a segmentation model, a DeepCluster
checkpoint, a state dict of weights, a random or a booby-trapped pickle), a
newer format, metadata or k-means arrays that do not fit together, and a
network that does not fit its backbone are each a BadInput naming the file and
the fix (see ``engine.features.backbones.load_torch_file``).
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
# the segmentation model's marker (engine.segmentation.modelfile.FORMAT) is declared here, next to the reader
# every model file shares, so that each tool can name the other's model when it is given one by mistake
SEG_FORMAT = "urbanform-segmentation-model"


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

    @property
    def pool(self) -> str:
        """The feature recipe (``--pool``; files written before it existed: 'last')."""
        return str((self.meta.get("features") or {}).get("pool", "last"))

    @property
    def depth_weights(self) -> "tuple | None":
        """The weights of ``--pool multi``'s depths (files written before they existed: all 1); None with
        'last'."""
        from ..features.backbones import backbone_spec

        recorded = (self.meta.get("features") or {}).get("depth_weights")
        spec = backbone_spec(self.backbone)
        return spec.pool_weights(self.pool, recorded if recorded is not None else (1.0,) * spec.n_depths)

    @property
    def cnn_px(self) -> "int | None":
        """``--cnn-px`` of the run (None: tiles as read)."""
        px = (self.meta.get("features") or {}).get("cnn_px")
        return int(px) if px else None

    @property
    def form(self) -> "FormJoin | None":  # noqa: F821
        """The fitted ``--form`` join, or None when the run had no --form."""
        from .formjoin import FormJoin

        state = (self.meta.get("features") or {}).get("form")
        return FormJoin.from_state(state) if state else None


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


def _known_formats() -> dict[str, str]:
    """The files the engine writes, by format marker: what each is, in words a user recognises."""
    from .deepcluster import CHECKPOINT_FORMAT

    return {FORMAT: "a cluster model (OUT_model.pt written by `cluster`, for `predict`)",
            SEG_FORMAT: "a building segmentation model (written by `train-seg`, for `segment`)",
            CHECKPOINT_FORMAT: "a DeepCluster training checkpoint (for `cluster --resume`)"}


def read_container(path: "str | Path", fmt: str, version: int, kind: str, hint: str) -> dict:
    """A model file's dict (torch.load with weights_only=True, nothing in it can run), or BadInput saying why
    it is not an Urban Form Mapper ``kind`` file of format ``fmt``. Shared by every model file we write."""
    import torch

    from ..features.backbones import load_torch_file

    path = Path(path)
    label = f"model {str(path)!r}"
    obj = load_torch_file(path, label, f"an Urban Form Mapper {kind} file", hint)
    marker = obj.get("format") if isinstance(obj, dict) else None
    if marker != fmt:
        known = _known_formats()
        if isinstance(marker, str) and marker in known:
            raise BadInput(f"{label} is {known[marker]}, not an Urban Form Mapper {kind}. {hint}")
        if isinstance(obj, dict) and obj and all(torch.is_tensor(v) for v in obj.values()):
            raise BadInput(f"{label} is a state dict of network weights (for --weights), not an Urban Form Mapper "
                           f"{kind}. {hint}")
        raise BadInput(f"{label} is a PyTorch file but not an Urban Form Mapper {kind} "
                       f"(no '{fmt}' marker). {hint}")
    try:
        found = int(obj.get("version", 0))
    except (TypeError, ValueError):
        raise BadInput(f"{label} is damaged (its format version {obj.get('version')!r} is not a number). "
                       f"{hint}") from None
    if found > version:
        raise BadInput(f"{label} was written by a newer version (format {found}); "
                       "update Urban Form Mapper.")
    return obj


HINT = "Give the OUT_model.pt written by `cluster`."
# what predict reads from the tiling record (engine.tools.cluster.tiling_settings writes more)
_TILING_KEYS = ("tile_px", "stride_px", "tile_size", "overlap", "edge", "min_valid", "bands", "n_bands")


def load_model(path: "str | Path") -> ClusterModel:
    """Read a model file, or BadInput saying why it is not one of ours (checked whole, before any work)."""
    import torch

    obj = read_container(path, FORMAT, VERSION, "cluster model", HINT)
    damaged = f"model {str(path)!r} is damaged"
    try:
        meta = json.loads(obj["meta"])
        arrays = {k: v.numpy() for k, v in obj["kmeans"].items()}
        kmeans = KMeansTiles.from_state(meta["kmeans"], arrays)
        network = obj["network"]
        backbone, sobel, tiling, method = str(meta["backbone"]), bool(meta["sobel"]), meta["tiling"], meta["method"]
        missing = [k for k in _TILING_KEYS if k not in tiling]
        if missing:
            raise KeyError(missing[0])
        if not isinstance(network, dict) or not all(torch.is_tensor(v) for v in network.values()):
            raise TypeError("network")
    except KeyError as exc:
        raise BadInput(f"{damaged} (its {exc.args[0]!r} record is missing). {HINT}") from None
    except (TypeError, ValueError, AttributeError):
        raise BadInput(f"{damaged} (its records cannot be read). {HINT}") from None
    recipe = meta.get("features") or {}
    pool = str(recipe.get("pool", "last"))
    n_form = int((recipe.get("form") or {}).get("n_form_", 0))
    _check_kmeans(path, kmeans, backbone, pool, n_form)
    _check_network(path, network, backbone, sobel, pool)
    model = ClusterModel(kmeans=kmeans, network=network, backbone=backbone, sobel=sobel, tiling=tiling,
                         method=method, meta=meta)
    try:
        model.depth_weights
    except BadInput:
        raise BadInput(f"{damaged} (its depth weights {recipe.get('depth_weights')!r} do not fit the {backbone} "
                       f"features). {HINT}") from None
    return model


def _check_kmeans(path, km: KMeansTiles, backbone: str, pool: str = "last", n_form: int = 0) -> None:
    """The PCA and centroid arrays fit each other and the feature size (backbone, --pool, --form columns)."""
    from ..features.backbones import BACKBONES

    if backbone not in BACKBONES:
        raise BadInput(f"model {str(path)!r} was made with backbone {backbone!r}, which this version does not "
                       f"know ({', '.join(BACKBONES)}); update Urban Form Mapper.")
    if pool not in ("last", "multi"):
        raise BadInput(f"model {str(path)!r} was made with --pool {pool!r}, which this version does not know; "
                       "update Urban Form Mapper.")
    dim, k, c = BACKBONES[backbone].feature_dim(pool) + n_form, km.n_clusters, km.n_components_
    shapes = {"mean_": (dim,), "components_": (c, dim), "cluster_centers_": (k, c)}
    bad = [name for name, want in shapes.items() if tuple(np.shape(getattr(km, name))) != want]
    if bad or km.n_features_in_ != dim or not all(np.isfinite(getattr(km, n)).all() for n in shapes):
        raise BadInput(f"model {str(path)!r} is damaged: its clustering arrays ({', '.join(bad) or 'values'}) do "
                       f"not fit {k} clusters of {c} components of {backbone} features. {HINT}")


def _check_network(path, network: dict, backbone: str, sobel: bool, pool: str = "last") -> None:
    """The saved network has exactly the parameters of its backbone (checked on torch's meta device: no
    memory, no weights, no time)."""
    import torch

    from ..features.backbones import backbone_spec, pooled_network

    spec = backbone_spec(backbone)
    with torch.device("meta"):
        net = pooled_network(spec, spec.build(), sobel, pool)
    own = net.state_dict()
    missing = sorted(set(own) - set(network))
    extra = sorted(set(network) - set(own))
    shape = [k for k in set(own) & set(network) if tuple(own[k].shape) != tuple(network[k].shape)]
    if missing or extra or shape:
        example = (missing or extra or shape)[0]
        raise BadInput(f"model {str(path)!r} is damaged: its network does not fit backbone {backbone} "
                       f"(sobel={sobel}; {len(missing)} missing, {len(extra)} unexpected and {len(shape)} "
                       f"mis-shaped parameters, e.g. {example}). {HINT}")


def _jsonable(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, os.PathLike):
        return os.fspath(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")
