"""Live similarity in the dock: the similarity of every tile recomputed as query tiles are clicked, without an
engine run.

A ``similar`` run writes OUT_live.npz (declared output ``live``): the tile ids and the tiles' centred CNN features
on their first principal axes. ``LiveSimilarity`` reads it with the standard library only (an .npz is a zip of
.npy files; QGIS's Python is not assumed to have numpy) and scores the tiles for any set of query tiles as the
engine does: the cosine of each tile's row to the mean of the query rows, and the rank of the others (1 = the most
similar, ties by position; 0 = a query tile). On the principal axes the cosines approximate the engine's on the
full features (the README gives the measured difference); Run writes the exact files again.

No Qt, no QGIS here: ``apply_to_layer`` in the panel writes the scores into the run's tiles layer.
"""
from __future__ import annotations

import ast
import math
import sys
import zipfile
from array import array
from operator import mul

TYPECODES = {"<i8": "q", "<f4": "f"}


def read_npy(data: bytes) -> tuple[tuple, array]:
    """(shape, flat array) of a little-endian int64 or float32 .npy (C order), or ValueError."""
    if data[:6] != b"\x93NUMPY":
        raise ValueError("not a .npy file")
    major = data[6]
    if major == 1:
        size, start = int.from_bytes(data[8:10], "little"), 10
    else:
        size, start = int.from_bytes(data[8:12], "little"), 12
    header = ast.literal_eval(data[start: start + size].decode("latin1"))
    code = TYPECODES.get(header.get("descr"))
    if code is None or header.get("fortran_order"):
        raise ValueError(f"unsupported .npy layout {header!r}")
    values = array(code)
    values.frombytes(data[start + size:])
    if sys.byteorder == "big":
        values.byteswap()
    shape = tuple(header["shape"])
    if math.prod(shape) != len(values):
        raise ValueError("truncated .npy file")
    return shape, values


class LiveSimilarity:
    """The tiles of one similar run, ready to score: ``tile_ids`` and one row of reduced features per tile."""

    def __init__(self, tile_ids, rows):
        self.tile_ids = list(tile_ids)
        self.rows = rows
        self.norms = [math.sqrt(sum(map(mul, r, r))) for r in rows]
        self.position = {t: i for i, t in enumerate(self.tile_ids)}

    @classmethod
    def load(cls, path) -> "LiveSimilarity":
        with zipfile.ZipFile(path) as z:
            (n,), ids = read_npy(z.read("tile_id.npy"))
            (n2, d), flat = read_npy(z.read("features.npy"))
        if n != n2:
            raise ValueError(f"{path}: {n} tile ids for {n2} feature rows")
        return cls(ids.tolist(), [tuple(flat[i * d: (i + 1) * d]) for i in range(n)])

    def __len__(self) -> int:
        return len(self.tile_ids)

    def scores(self, query_ids) -> tuple[list[float], list[int], list[int]]:
        """(similarity, rank, query 0/1) of every tile, in ``tile_ids`` order, for the query tiles ``query_ids``
        (ids that are not tiles of the run are ignored; none left gives ValueError)."""
        positions = sorted({self.position[t] for t in query_ids if t in self.position})
        if not positions:
            raise ValueError("no query tile")
        d = len(self.rows[0])
        q = [sum(self.rows[p][j] for p in positions) / len(positions) for j in range(d)]
        qn = max(math.sqrt(sum(map(mul, q, q))), 1e-12)
        q = [v / qn for v in q]
        sim = [sum(map(mul, r, q)) / max(n, 1e-12) for r, n in zip(self.rows, self.norms, strict=True)]
        is_query = [0] * len(sim)
        for p in positions:
            is_query[p] = 1
        rank = [0] * len(sim)
        order = sorted((i for i in range(len(sim)) if not is_query[i]), key=lambda i: (-sim[i], i))
        for r, i in enumerate(order, start=1):
            rank[i] = r
        return sim, rank, is_query
