"""Limits the engine enforces and the plugin checks before a run, written once (stdlib only).

K, the number of clusters: the cluster GeoTIFF (OUT_clusters.tif) is uint8 with
255 as nodata ("no tile"), so cluster ids are 0..253 and K is at most 254; one
cluster is no clustering, so K is at least 2.

K lists (``sweep --k``, the plugin's "K values"): ``parse_k_values`` is the one
parser. A K below MIN_K or above MAX_K is refused, with the whole text, before
any work: such a K is always a typing mistake (it can never be computed at any
tile size), and an analyst should learn that at once rather than find a warning
after a long sweep. K larger than the valid tiles of a tile size is different:
it depends on the raster and the tile size, so the sweep skips it there with a
warning (see engine.sweep).
"""
from __future__ import annotations

CLUSTER_NODATA = 255        # the cluster GeoTIFF's nodata value (uint8)
MIN_K = 2
MAX_K = 254                 # CLUSTER_NODATA - 1: ids 0..MAX_K-1 fit below the nodata value
# the smallest tile side, in pixels (a tile size in metres must come to at least this many pixels): smaller
# tiles hold too little of the urban form for the CNN's features to say anything
MIN_TILE_PX = 16

# many rasters: scenes whose footprints lie further apart than this (ground metres) are different places (cities):
# `cluster` fits one model on several places, each its own study (engine.raster.study.place_groups)
PLACE_GAP_M = 5000.0

# random seeds: numpy's and scikit-learn's generators take 0 .. 2**32 - 1 (torch takes more; the smaller wins)
MAX_SEED = 2 ** 32 - 1

K_HINT = "write K as a range 2..12, a list 2,4,6 or both 2..6,8,12."


def parse_k_values(text: str) -> list[int]:
    """``'2..12'``, ``'2,4,6'`` or ``'2..6,8,12'`` -> sorted distinct K values.

    ValueError with a message for the user when the text is not a K list, when a
    range runs backwards, or when a K is below MIN_K or above MAX_K.
    """
    parts = [p.strip() for p in str(text or "").split(",")]
    if not any(parts):
        raise ValueError(f"Give the K values: {K_HINT}")
    values: set[int] = set()
    for part in parts:
        try:
            if ".." in part:
                low, high = (int(v) for v in part.split(".."))
            else:
                low = high = int(part)
        except ValueError:
            raise ValueError(f"{part!r} is not a K value or range; {K_HINT}") from None
        if low > high:
            raise ValueError(f"The K range {part} runs backwards; write it as {high}..{low}.")
        if low < MIN_K or high > MAX_K:
            raise ValueError(f"K values must be between {MIN_K} and {MAX_K} ({part} is not): one cluster is no "
                             f"clustering, and the cluster GeoTIFF holds at most {MAX_K} clusters.")
        values.update(range(low, high + 1))
    return sorted(values)

# classes of a tile classification (classify): a field with more distinct values is a measurement, not classes
# (and the class GeoTIFF is uint8 with CLUSTER_NODATA as "no tile")
MAX_CLASSES = 50
# labels per class below which a classifier cannot be trained and cross-validated
MIN_LABELS = 3
