"""Images for reports and plots: PNG bytes of an array or a figure, data URIs, thumbnails of a tile grid.

Every image a report holds is embedded as ``data:image/png;base64,...`` so the HTML opens offline and on
another computer; nothing here reads or writes a file.
"""
from __future__ import annotations

import base64
import io

import numpy as np

GRID_BACKGROUND = (236, 236, 236)       # tiles of other clusters in a thumbnail
GRID_EMPTY = (255, 255, 255)            # no tile (skipped, outside the raster)


def png_bytes(image: np.ndarray) -> bytes:
    """PNG of a uint8 image, (h, w, 3) or (3, h, w) as the tiles are read."""
    from matplotlib.image import imsave

    image = np.asarray(image)
    if image.ndim == 3 and image.shape[0] in (1, 3) and image.shape[-1] not in (1, 3):
        image = np.moveaxis(image, 0, -1)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    buf = io.BytesIO()
    imsave(buf, np.ascontiguousarray(image, dtype=np.uint8), format="png")
    return buf.getvalue()


def figure_png(fig, dpi: int = 100) -> bytes:
    """PNG of a matplotlib figure (the figure is left open to its owner)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", pad_inches=0.1)
    return buf.getvalue()


def data_uri(png: bytes, mime: str = "image/png") -> str:
    """``data:image/png;base64,...``: an image inside the HTML itself."""
    return f"data:{mime};base64,{base64.b64encode(png).decode('ascii')}"


def hex_rgb(color: str) -> tuple[int, int, int]:
    h = color.lstrip("#")
    return tuple(int(h[i: i + 2], 16) for i in (0, 2, 4))


def grid_thumbnail(shape: tuple[int, int], rows, cols, colors, max_side: int = 200) -> np.ndarray:
    """(h, w, 3) uint8 map of a tile grid: tile (rows[i], cols[i]) painted ``colors[i]`` (RGB), other cells
    white; each cell enlarged to whole pixels so the map is about ``max_side`` pixels on its long side."""
    n_rows, n_cols = int(shape[0]), int(shape[1])
    img = np.empty((n_rows, n_cols, 3), dtype=np.uint8)
    img[:] = GRID_EMPTY
    img[np.asarray(rows, dtype=int), np.asarray(cols, dtype=int)] = np.asarray(colors, dtype=np.uint8).reshape(-1, 3)
    scale = max(1, int(max_side // max(n_rows, n_cols, 1)))
    return np.repeat(np.repeat(img, scale, axis=0), scale, axis=1)


def highlight_colors(labels, which, color: str) -> np.ndarray:
    """(n, 3) colours: ``color`` where ``labels == which``, light grey elsewhere (one cluster on the map)."""
    labels = np.asarray(labels)
    out = np.empty((len(labels), 3), dtype=np.uint8)
    out[:] = GRID_BACKGROUND
    out[labels == which] = hex_rgb(color)
    return out
