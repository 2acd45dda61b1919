"""A PNG quicklook: the image with the cluster map over it and a legend."""
from __future__ import annotations

import numpy as np

from ..style import cluster_color


def write_quicklook(path, tiled, grid_labels: np.ndarray, k: int, title: str = "", max_side: int = 1024) -> None:
    """Draw the decimated image, the clusters (semi-transparent) and a legend with tile counts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    image, t = tiled.read_quicklook(max_side)
    h, w = image.shape[:2]
    extent = (t.c, t.c + t.a * w, t.f + t.e * h, t.f)
    ct = tiled.grid.cell_transform()
    gh, gw = grid_labels.shape
    cextent = (ct.c, ct.c + ct.a * gw, ct.f + ct.e * gh, ct.f)
    masked = np.ma.masked_less(grid_labels, 0)
    cmap = ListedColormap([cluster_color(i) for i in range(k)])

    fig, ax = plt.subplots(figsize=(9, 9 * h / max(w, 1) + 0.6), dpi=110)
    ax.imshow(image, extent=extent, interpolation="bilinear")
    ax.imshow(masked, extent=cextent, cmap=cmap, vmin=-0.5, vmax=k - 0.5, alpha=0.45, interpolation="nearest")
    counts = np.bincount(grid_labels[grid_labels >= 0], minlength=k)
    ax.legend(handles=[Patch(color=cluster_color(i), label=f"cluster {i} ({counts[i]} tiles)") for i in range(k)],
              loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    ax.set_title(title, fontsize=10)
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.tick_params(labelsize=7)
    ax.ticklabel_format(useOffset=False, style="plain")
    fig.tight_layout()
    fig.savefig(path, format="png", bbox_inches="tight")
    plt.close(fig)
