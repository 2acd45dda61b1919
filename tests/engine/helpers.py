"""Helpers shared by engine test modules (import them from here, not from another test module)."""
from __future__ import annotations

import torch
from torch import nn


class OutOfMemoryAbove(nn.Module):
    """Fails like a full GPU (torch.cuda.OutOfMemoryError) on batches above ``limit`` chips, else runs ``net``."""

    def __init__(self, net: nn.Module, limit: int):
        super().__init__()
        self.net, self.limit, self.sizes = net, limit, []

    def forward(self, x):
        self.sizes.append(len(x))
        if len(x) > self.limit:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (batch {len(x)})")
        return self.net(x)
