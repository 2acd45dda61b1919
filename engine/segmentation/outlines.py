"""Polygons of the 4-connected regions of a binary mask, traced with array operations.

``rasterio.features.shapes`` hands every vertex to Python as a tuple (and the polygons then go back to
arrays): on a dense city that was most of segment's time outside the model. :func:`mask_polygons` gives
the same polygons (pixel coordinates, one per 4-connected region, its holes inside it) without a Python
loop over vertices or regions:

1. every pixel edge between a region pixel and a background pixel becomes a directed edge with the region
   on its right (x to the right, y down), so outer boundaries and hole boundaries are all closed chains;
2. at a corner where two region pixels touch only diagonally, two chains meet; the region pixels are
   separate regions (4-connectivity), so each chain keeps to its own pixel, or the same region reaching
   round, so each chain keeps to its own background pixel: the outer boundary and a hole (or two holes)
   touch at that corner instead of one ring crossing itself, which GEOS would call invalid;
3. the edges are kept as straight runs, so every vertex is a corner where the outline turns; the rings
   are put in order by one depth-first walk (scipy's csgraph) and each goes to the region of the pixels on
   its right: the ring that runs clockwise on screen is the region's shell, the others its holes.
"""
from __future__ import annotations

import numpy as np


def _runs(fg: np.ndarray):
    """Pixel edges between a region pixel and a background pixel across the rows of ``fg`` (padded by one
    pixel), as maximal runs: (corner row, first pixel column, last pixel column, region below?)."""
    inner = fg[:, 1:-1]
    below = inner[1:]
    edge = below != inner[:-1]
    w = edge.shape[1]
    i = np.flatnonzero(edge)
    y, x = np.divmod(i, w)
    down = below.ravel()[i]
    new = np.r_[True, (i[1:] != i[:-1] + 1) | (y[1:] != y[:-1]) | (down[1:] != down[:-1])]
    first = np.nonzero(new)[0]
    last = np.r_[first[1:], len(i)] - 1
    return y[first], x[first], x[last], down[first]


def _segments(fg: np.ndarray):
    """The straight pieces of the region outlines, each with the region on its right (x to the right, y down):
    start and end corner (x, y), and the region and background pixels next to each end (flat indices into
    the mask padded by one pixel, for the pairing at corners where two regions touch diagonally)."""
    wp = fg.shape[1]

    def px(r, c):                                  # pixel (row, col) of the mask -> flat padded index
        return (r + 1) * wp + c + 1

    # horizontal pixel edges at corner row y (0..h): region below runs east, region above runs west
    y, x0, x1, down = _runs(fg)
    east = (np.where(down, x0, x1 + 1), y, np.where(down, x1 + 1, x0), y,
            np.where(down, px(y, x0), px(y - 1, x1)), np.where(down, px(y, x1), px(y - 1, x0)),
            np.where(down, px(y - 1, x0), px(y, x1)), np.where(down, px(y - 1, x1), px(y, x0)))
    # vertical pixel edges at corner column x (0..w) (rows of the transposed mask): region on the right runs
    # north, region on the left runs south
    x, y0, y1, right = _runs(np.ascontiguousarray(fg.T))
    south = (x, np.where(right, y1 + 1, y0), x, np.where(right, y0, y1 + 1),
             np.where(right, px(y1, x), px(y0, x - 1)), np.where(right, px(y0, x), px(y1, x - 1)),
             np.where(right, px(y1, x - 1), px(y0, x)), np.where(right, px(y0, x - 1), px(y1, x)))
    return [np.concatenate(cols).astype(np.int64) for cols in zip(east, south)]


def _successors(start: np.ndarray, end: np.ndarray, fg_start, fg_end, bg_start, bg_end, labels) -> np.ndarray:
    """For every segment (corners as integer ids), the segment that follows it along its ring."""
    order = np.argsort(start, kind="stable")
    s_sorted = start[order]
    pos = np.searchsorted(s_sorted, end)
    nxt = order[pos]
    two = pos + 1 < len(order)
    two[two] = s_sorted[pos[two] + 1] == end[two]
    if two.any():                                  # two regions' pixels touch only diagonally at this corner
        e = np.nonzero(two)[0]
        a, b = nxt[e], order[pos[e] + 1]
        same_region = labels[fg_start[a]] == labels[fg_start[b]]
        take_a = np.where(same_region, bg_start[a] == bg_end[e], fg_start[a] == fg_end[e])
        nxt[e] = np.where(take_a, a, b)
    return nxt


def _ring_order(nxt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(segments in ring order, ring number of each) for the permutation ``nxt``: each cycle is cut before its
    smallest segment and hung from one root, so one depth-first walk lists the rings one after another."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components, depth_first_order

    n = len(nxt)
    chain = csr_matrix((np.ones(n, np.int8), nxt, np.arange(n + 1)), shape=(n, n))
    _, comp = connected_components(chain, directed=True, connection="weak")
    _, heads = np.unique(comp, return_index=True)
    is_tail = np.zeros(n, bool)
    is_tail[np.argsort(nxt)[heads]] = True          # the segment before each head (argsort inverts nxt)
    child = nxt[~is_tail]
    indptr = np.r_[0, np.cumsum(~is_tail), n]
    tree = csr_matrix((np.ones(n, np.int8), np.r_[child, heads], indptr), shape=(n + 1, n + 1))
    walk = depth_first_order(tree, n, directed=True, return_predecessors=False)[1:]
    is_head = np.zeros(n, bool)
    is_head[heads] = True
    return walk, np.cumsum(is_head[walk]) - 1


def mask_polygons(mask: np.ndarray, r0: int = 0, c0: int = 0) -> list:
    """Shapely polygons of the 4-connected True regions of ``mask``, in pixel coordinates offset by (c0, r0)
    (x = column, y = row, the corners of the pixels), each with its holes: the same polygons as
    ``rasterio.features.shapes(mask, mask=mask, connectivity=4)``, vertices only where the outline turns."""
    import shapely
    from scipy import ndimage

    m = np.asarray(mask, dtype=bool)
    if m.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {m.shape}")
    if not m.any():
        return []
    h, w = m.shape
    lab = np.zeros((h + 2, w + 2), np.int32)
    ndimage.label(m, output=lab[1:-1, 1:-1])      # 4-connected regions, numbered 1..n; 0 around them
    sx, sy, ex, ey, fg_s, fg_e, bg_s, bg_e = _segments(lab > 0)
    labels = lab.ravel()
    nxt = _successors(sy * (w + 1) + sx, ey * (w + 1) + ex, fg_s, fg_e, bg_s, bg_e, labels)
    walk, rid = _ring_order(nxt)
    x, y = (sx[walk] + c0).astype(np.float64), (sy[walk] + r0).astype(np.float64)
    starts = np.nonzero(np.r_[True, rid[1:] != rid[:-1]])[0]
    after = np.arange(1, len(rid) + 1)               # the next vertex along the ring
    after[np.r_[starts[1:], len(rid)] - 1] = starts
    # signed area (shoelace): > 0 for a ring that runs clockwise on screen (y down), i.e. a region's shell
    hole = np.bincount(rid, x * y[after] - x[after] * y) < 0
    ring_region = labels[fg_s[walk[starts]]]
    ranked = np.lexsort((hole, ring_region))          # the rings, shell first, region by region
    ring_rank = np.empty(len(starts), np.int64)
    ring_rank[ranked] = np.arange(len(starts))
    vertex_rank = ring_rank[rid]
    v = np.argsort(vertex_rank, kind="stable")
    rings = shapely.linearrings(np.column_stack([x[v], y[v]]), indices=vertex_rank[v])
    ring_poly = np.unique(ring_region, return_inverse=True)[1]      # regions numbered 0.. in order
    return list(shapely.polygons(rings, indices=ring_poly[ranked]))
