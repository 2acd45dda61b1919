"""The check tool: whether this Python can run the engine (torch, devices, and a backbone's weights)."""
from __future__ import annotations

import sys
from dataclasses import dataclass

from ..errors import BadInput
from . import check_params


@dataclass
class CheckParams:
    """A ``check``: the fields and defaults ``contract.tools.CHECK`` declares."""

    backbone: str | None = None


def run(params: CheckParams, progress=None) -> dict:  # noqa: ARG001 - every tool's signature
    """This Python, torch's version and devices, and with ``backbone`` where its ImageNet weights are.

    ``ok`` is false (with ``error``) when this Python lacks the engine's packages.
    """
    import platform

    check_params("check", params)
    info = {"python": sys.executable, "python_version": platform.python_version()}
    try:
        import torch

        from ..features.backbones import backbone_spec, resolve_weights
        from ..features.extract import available_devices

        info.update(torch=torch.__version__, devices=available_devices(), ok=True)
        if params.backbone:
            try:
                info["weights"] = str(resolve_weights(backbone_spec(params.backbone), "imagenet"))
            except BadInput as exc:
                info["weights_error"] = str(exc)
    except ImportError as exc:
        info.update(ok=False, error=f"{exc}: this Python lacks the engine's packages; use Set up engine in the "
                                    "Urban Form Mapper panel, or `make setup` in a source checkout.")
    return info


def check(backbone: str | None = None) -> dict:
    """``run(CheckParams(backbone))``."""
    return run(CheckParams(backbone))
