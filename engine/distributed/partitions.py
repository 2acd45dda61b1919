"""How work is split for Dask: partitions of tiles (features, assignment) and bands of rows (segmentation).

Pure arithmetic on counts; nothing here reads pixels or imports Dask.

Features: one process computes the features of the valid tiles (row-major
order) in batches of ``batch_size`` tiles. A :class:`Partition` is
``PARTITION_BATCHES`` whole batches of that sequence, so each batch a worker
runs holds exactly the tiles of one batch of the single-process run and the
features come out the same. The partition size depends on the batch size only,
never on the number of workers: a run resumed on another cluster finds the
same partitions.

Segmentation: a :class:`Band` is ``BAND_BLOCKS`` polygonisation blocks of raster
rows (the last band ends with the raster), so its blocks are the blocks one
process polygonises and only buildings that reach a band's edge are merged by
the client (``engine.segmentation.polygons``).
"""
from __future__ import annotations

from dataclasses import dataclass

# feature batches per partition: 16 Mpx of tiles on a CPU (seconds of work), 256 Mpx on a GPU. Measured on 2 cores
# (4096 tiles of 64 px, efficientnet_lite0, one warm worker against one process): 4 batches +15 %, 16 batches +3 %
PARTITION_BATCHES = 16
ASSIGN_CHUNKS = 4              # KMeansTiles chunks per assignment task (the chunks one process assigns by)
BAND_BLOCKS = 4                # polygonisation blocks per segmentation band (2048 rows at the default block)


@dataclass(frozen=True)
class Partition:
    """Tiles ``start`` to ``stop`` (excluded) of a run's valid tiles, in the grid's row-major order."""

    index: int
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start


def split(n: int, size: int) -> list[Partition]:
    """``n`` items in partitions of ``size`` (the last one shorter)."""
    if size < 1:
        raise ValueError("a partition holds at least one item")
    return [Partition(i, start, min(n, start + size)) for i, start in enumerate(range(0, n, size))]


def partition_tiles(batch_size: int, batches: int = PARTITION_BATCHES) -> int:
    """Tiles per feature partition: whole batches, so batches never straddle two partitions."""
    return int(batch_size) * int(batches)


def tile_partitions(n_tiles: int, batch_size: int, batches: int = PARTITION_BATCHES) -> list[Partition]:
    """The feature partitions of ``n_tiles`` valid tiles extracted ``batch_size`` at a time."""
    return split(n_tiles, partition_tiles(batch_size, batches))


def assign_partitions(n_tiles: int, chunk: int, chunks: int = ASSIGN_CHUNKS) -> list[Partition]:
    """The assignment partitions: whole ``KMeansTiles.chunk`` blocks, the blocks one process assigns by."""
    return split(n_tiles, int(chunk) * int(chunks))


@dataclass(frozen=True)
class Band:
    """Raster rows ``row0`` to ``row1`` (excluded) of a segmentation."""

    index: int
    row0: int
    row1: int


def row_bands(height: int, block: int, blocks: int = BAND_BLOCKS) -> list[Band]:
    """Bands of ``blocks`` polygonisation blocks (``block`` rows each) down a raster ``height`` rows high."""
    return [Band(p.index, p.start, p.stop) for p in split(height, int(block) * int(blocks))]


def chip_rows_for(band: Band, ys: list[int], chip: int) -> range:
    """The chip rows (indices into ``ys``, the chip row offsets) a band must run so that every one of its rows
    gets the contributions of every chip over it, in the order one process adds them: from the first chip
    row that reaches ``row0`` to the one whose rows end at or after ``row1``."""
    first = next(k for k, y in enumerate(ys) if y + chip > band.row0)
    last = next((k for k in range(len(ys) - 1) if ys[k + 1] >= band.row1), len(ys) - 1)
    return range(first, last + 1)
