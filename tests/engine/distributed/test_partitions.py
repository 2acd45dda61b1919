"""Partitions of tiles and bands of rows: every item once, in order, on the single-process batch boundaries."""
from __future__ import annotations

import pytest

from engine.distributed.partitions import (BAND_BLOCKS, Band, assign_partitions, chip_rows_for, partition_tiles,
                                           row_bands, tile_partitions)
from engine.segmentation.infer import chip_starts


@pytest.mark.parametrize("n,batch", [(1, 8), (31, 8), (32, 8), (33, 8), (1000, 256), (5, 1)])
def test_tile_partitions_cover_the_tiles_in_whole_batches(n, batch):
    parts = tile_partitions(n, batch)
    assert [p.index for p in parts] == list(range(len(parts)))
    assert parts[0].start == 0 and parts[-1].stop == n
    assert all(a.stop == b.start for a, b in zip(parts, parts[1:], strict=False))
    assert all(p.start % batch == 0 for p in parts)                    # a batch never straddles two partitions
    assert all(p.size == partition_tiles(batch) for p in parts[:-1])
    assert 0 < parts[-1].size <= partition_tiles(batch)


def test_assignment_partitions_are_whole_kmeans_chunks():
    parts = assign_partitions(100_000, 8192)
    assert all(p.start % 8192 == 0 for p in parts) and parts[-1].stop == 100_000


@pytest.mark.parametrize("height,block", [(512, 32), (512, 64), (500, 64), (100, 512)])
def test_bands_are_whole_blocks(height, block):
    bands = row_bands(height, block)
    assert bands[0].row0 == 0 and bands[-1].row1 == height
    assert all(b.row0 % (block * BAND_BLOCKS) == 0 for b in bands)
    assert all(a.row1 == b.row0 for a, b in zip(bands, bands[1:], strict=False))


@pytest.mark.parametrize("height,chip,overlap", [(512, 64, 16), (512, 64, 0), (500, 64, 32), (1000, 256, 64)])
def test_a_band_runs_every_chip_row_over_its_rows(height, chip, overlap):
    """Each band runs the chip rows from the first that reaches its first row to the one whose rows (up to the
    next chip row's start) hold its last row."""
    ys = chip_starts(height, chip, chip - overlap)
    for band in row_bands(height, 32) + [Band(0, 0, height)]:
        ks = chip_rows_for(band, ys, chip)
        over = [k for k, y in enumerate(ys) if y < band.row1 and y + chip > band.row0]
        assert ks.start == over[0]                                     # no chip over its first row is missed
        ends = [ys[k + 1] if k + 1 < len(ys) else height for k in ks]
        assert ends[-1] >= band.row1 and (len(ks) == 1 or ends[-2] < band.row1)
