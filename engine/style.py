"""Cluster colours shared by every output (GeoTIFF palette, quicklook, QML).

Cluster ``i`` always gets the same colour whatever K is, so maps made with
different K (or re-runs) read the same way. A qualitative set of blues,
greens, purples, yellow, cyan and magenta (after ColorBrewer's Paired/Set1
and Tableau), reordered for contrast between neighbours: no red, orange or
brown, which vanish over the red and rust roofs of African and Asian cities.
The plugin reads this file as plain text (it may not import the engine), so
PALETTE stays a literal tuple of hex strings.
"""
from __future__ import annotations

PALETTE = (
    "#1f78b4", "#33a02c", "#984ea3", "#ffff33", "#17becf", "#f032e6",
    "#a6cee3", "#b2df8a", "#cab2d6", "#1b9e77", "#7570b3", "#bcbd22",
    "#08519c", "#006d2c", "#54278f", "#e6f598", "#9edae5", "#6baed6",
    "#74c476", "#dadaeb",
)


def cluster_color(i: int) -> str:
    """Hex colour of cluster ``i`` (cycles after 20 clusters)."""
    return PALETTE[int(i) % len(PALETTE)]


def cluster_rgb(i: int) -> tuple[int, int, int]:
    h = cluster_color(i).lstrip("#")
    return tuple(int(h[j: j + 2], 16) for j in (0, 2, 4))
