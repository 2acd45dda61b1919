"""Helpers shared by the segmentation tests (import them from here, never from a test module).

The hand-made evaluation layout (grid, mask and footprints; worked out in test_segment_evaluate's
docstring) and a network that fails like a full GPU.
"""
from __future__ import annotations

import geopandas as gpd
import numpy as np
import rasterio
import torch
from affine import Affine
from shapely.geometry import box
from torch import nn

X0, Y0 = 500000.0, 700010.0
CRS = "EPSG:32630"


def cells(r0, r1, c0, c1):
    """Box of pixel rows r0..r1-1 and cols c0..c1-1 in map coordinates."""
    return box(X0 + c0, Y0 - r1, X0 + c1, Y0 - r0)


def write_mask(path, nodata=None):
    m = np.zeros((10, 10), np.uint8)
    m[0:4, 0:4] = 1
    m[6:9, 6:9] = 1
    if nodata is not None:
        m[9, :] = nodata
    with rasterio.open(path, "w", driver="GTiff", width=10, height=10, count=1, dtype="uint8", crs=CRS,
                       transform=Affine(1, 0, X0, 0, -1, Y0), nodata=nodata) as ds:
        ds.write(m, 1)
    return path


def write_truth(path, crs=CRS):
    g = gpd.GeoDataFrame(geometry=[cells(0, 4, 2, 6), cells(6, 9, 6, 8)], crs=CRS)
    g.to_crs(crs).to_file(path)
    return path


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
