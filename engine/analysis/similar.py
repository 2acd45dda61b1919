"""Find places like a query: cosine similarity of every tile's CNN features to the mean of the query tiles'.

Pooled CNN features are all positive, so raw cosines crowd near 1 everywhere; the features are centred on the
mean tile of the raster first, so that similarity measures what a tile has more or less of than the usual tile,
as the query does. Memory stays flat: the features are read in chunks (an ``NpyFile`` or an array).

Pure functions returning named Series (momepy style).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

CHUNK = 8192


def feature_mean(feats, chunk: int = CHUNK) -> np.ndarray:
    """The mean feature vector of every row, in chunks (float64 sums)."""
    total = np.zeros(feats.shape[1], dtype=np.float64)
    for s in range(0, len(feats), chunk):
        total += np.asarray(feats[s: s + chunk], dtype=np.float64).sum(axis=0)
    return (total / max(len(feats), 1)).astype(np.float32)


def query_vector(feats, positions, centre: np.ndarray) -> np.ndarray:
    """The mean of the centred features of the query tiles (their positions in ``feats``)."""
    rows = np.asarray(feats[np.sort(np.asarray(positions, dtype=np.int64))], dtype=np.float32)
    return (rows - centre).mean(axis=0)


def cosine_similarity(feats, query: np.ndarray, centre: np.ndarray, chunk: int = CHUNK) -> pd.Series:
    """Cosine between each tile's centred features and ``query``, -1 to 1, named ``similarity``."""
    q = np.asarray(query, dtype=np.float32)
    q = q / max(float(np.linalg.norm(q)), 1e-12)
    out = np.empty(len(feats), dtype=np.float32)
    for s in range(0, len(feats), chunk):
        x = np.asarray(feats[s: s + chunk], dtype=np.float32) - centre
        out[s: s + len(x)] = (x @ q) / np.maximum(np.linalg.norm(x, axis=1), 1e-12)
    return pd.Series(out, name="similarity")


def similarity_rank(similarity, query_mask) -> pd.Series:
    """1 for the most similar tile that is not a query tile, 2 for the next...; 0 for the query tiles. Ties are
    broken by position. Named ``rank``."""
    sim = np.asarray(similarity, dtype=np.float64)
    mask = np.asarray(query_mask, dtype=bool)
    order = np.lexsort((np.arange(len(sim)), -sim))
    order = order[~mask[order]]
    rank = np.zeros(len(sim), dtype=np.int32)
    rank[order] = np.arange(1, len(order) + 1)
    return pd.Series(rank, name="rank")


def precision_at(rank, relevant, n: int) -> float:
    """Share of the top ``n`` ranked tiles (rank 1..n) that are ``relevant``."""
    rank, relevant = np.asarray(rank), np.asarray(relevant, dtype=bool)
    top = (rank >= 1) & (rank <= n)
    return float(relevant[top].mean()) if top.any() else float("nan")


def tiles_at_places(tile_polygons, places) -> np.ndarray:
    """Positions of the tiles a set of places points at: the tile that holds each point; for a polygon the tiles
    whose centre it holds, or, for a polygon smaller than a tile, the tiles it touches. ``tile_polygons`` and
    ``places`` are shapely arrays in one CRS."""
    import shapely

    places = np.asarray(places, dtype=object)
    tree = shapely.STRtree(tile_polygons)
    found: set[int] = set()
    kinds = shapely.get_type_id(places)
    points = places[np.isin(kinds, (0, 4))]                           # Point, MultiPoint
    if len(points):
        found.update(tree.query(points, predicate="intersects")[1].tolist())
    areas = places[np.isin(kinds, (3, 6))]                            # Polygon, MultiPolygon
    if len(areas):
        centres = shapely.centroid(tile_polygons)
        for area in areas:
            inside = tree.query(area, predicate="intersects")
            held = inside[shapely.contains(area, centres[inside])]
            found.update((held if len(held) else inside).tolist())
    return np.array(sorted(found), dtype=np.int64)


def principal_features(feats, centre: np.ndarray, dims: int, chunk: int = CHUNK) -> np.ndarray:
    """The centred features on their ``dims`` principal axes (n x min(dims, dim), float32), in chunks.

    Cosines between these rows approximate the cosines of ``cosine_similarity`` (the mean of the query's rows is
    the projection of the query vector); the dock recomputes similarity from them as the query changes."""
    d = feats.shape[1]
    cov = np.zeros((d, d), dtype=np.float64)
    for s in range(0, len(feats), chunk):
        x = np.asarray(feats[s: s + chunk], dtype=np.float64) - centre
        cov += x.T @ x
    values, vectors = np.linalg.eigh(cov)
    axes = vectors[:, np.argsort(values)[::-1][: max(1, min(dims, d))]]
    axes *= np.where(axes[np.abs(axes).argmax(axis=0), np.arange(axes.shape[1])] < 0, -1.0, 1.0)   # fixed signs
    out = np.empty((len(feats), axes.shape[1]), dtype=np.float32)
    for s in range(0, len(feats), chunk):
        out[s: s + chunk] = (np.asarray(feats[s: s + chunk], dtype=np.float64) - centre) @ axes
    return out


def write_live(path, tile_ids, reduced: np.ndarray) -> None:
    """OUT_live.npz: ``tile_id`` (int64) and ``features`` (float32), little-endian, uncompressed, so that the
    dock reads it with the standard library."""
    with open(path, "wb") as f:
        np.savez(f, tile_id=np.ascontiguousarray(tile_ids, dtype="<i8"),
                 features=np.ascontiguousarray(reduced, dtype="<f4"))
