"""Cluster colours shared by every output (GeoTIFF palette, quicklook, QML).

Cluster ``i`` always gets the same colour whatever K is, so maps made with
different K (or re-runs) read the same way. Qualitative colours after
ColorBrewer's Set1/Dark2/Paired, reordered for contrast between neighbours.
"""
from __future__ import annotations

PALETTE = (
    "#e41a1c", "#377eb8", "#4daf4a", "#984ea3", "#ff7f00", "#ffff33",
    "#a65628", "#f781bf", "#1b9e77", "#999999", "#66a61e", "#e6ab02",
    "#1f78b4", "#fb9a99", "#b2df8a", "#cab2d6", "#6a3d9a", "#b15928",
    "#a6cee3", "#fdbf6f",
)


def cluster_color(i: int) -> str:
    """Hex colour of cluster ``i`` (cycles after 20 clusters)."""
    return PALETTE[int(i) % len(PALETTE)]


def cluster_rgb(i: int) -> tuple[int, int, int]:
    h = cluster_color(i).lstrip("#")
    return tuple(int(h[j: j + 2], 16) for j in (0, 2, 4))
