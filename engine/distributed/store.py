"""The feature store: a folder every worker sees, one ``.npy`` file of features per partition.

Features never travel through the Dask scheduler: a worker writes its
partition's features straight into the store (under a temporary name, renamed
when complete, so a file that is there is whole), and the client reads them
from there. The store also holds the tiles' positions (``positions.npy``, read
by each task for its partition) and ``store.json``, which says how the tiles
were partitioned; a resumed run reuses the partitions already there only when
it partitions the same way.

When every partition is there, :meth:`FeatureStore.gather` writes them, in
order, into the one feature file a single-process run writes (the feature
cache), so everything after the features is the single-process code on the
same numbers.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from ..io import NpyFile, atomic_path, write_json_atomic
from .partitions import Partition

STORE_VERSION = 1


class FeatureStore:
    """The store folder of one set of features (``folder``, named after the features' cache key)."""

    def __init__(self, folder: "str | Path"):
        self.folder = Path(folder)

    @property
    def meta_path(self) -> Path:
        return self.folder / "store.json"

    @property
    def positions_path(self) -> Path:
        return self.folder / "positions.npy"

    def part_path(self, part: Partition) -> Path:
        return self.folder / f"part-{part.index:06d}.npy"

    def layout(self, n_tiles: int, dim: int, partition_tiles: int) -> dict:
        return {"version": STORE_VERSION, "tiles": int(n_tiles), "dim": int(dim),
                "partition_tiles": int(partition_tiles)}

    def prepare(self, rows: np.ndarray, cols: np.ndarray, dim: int, partition_tiles: int, resume: bool) -> None:
        """Make the store ready for these tiles: with ``resume``, keep the partitions an earlier run of the
        same layout finished; otherwise (or for another layout) start empty."""
        layout = self.layout(len(rows), dim, partition_tiles)
        kept = resume and self.meta_path.is_file() and self._read_meta() == layout
        if not kept and self.folder.exists():
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        if not kept or not self.positions_path.is_file():
            with atomic_path(self.positions_path) as tmp, open(tmp, "wb") as fh:
                np.save(fh, np.stack([np.asarray(rows, np.int64), np.asarray(cols, np.int64)], axis=1))
            write_json_atomic(self.meta_path, layout)

    def _read_meta(self) -> dict:
        try:
            return json.loads(self.meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def positions(self, part: Partition) -> tuple[np.ndarray, np.ndarray]:
        """(rows, cols) of the partition's tiles."""
        pos = np.load(self.positions_path, mmap_mode="r")[part.start: part.stop]
        return np.array(pos[:, 0]), np.array(pos[:, 1])

    def done(self, part: Partition, dim: int) -> bool:
        """Whether the partition's features are in the store (a whole file of the right shape)."""
        path = self.part_path(part)
        if not path.is_file():
            return False
        try:
            return NpyFile(path).shape == (part.size, dim)
        except (OSError, ValueError):
            return False

    def gather(self, parts: list[Partition], dim: int, final: "str | Path") -> NpyFile:
        """The partitions, in order, as one ``.npy`` file at ``final`` (written atomically, one partition in
        memory at a time)."""
        n = parts[-1].stop if parts else 0
        with atomic_path(final) as tmp:
            out = NpyFile(tmp, shape=(n, dim))
            for part in parts:
                out[part.start: part.stop] = NpyFile(self.part_path(part))[0: part.size]
        return NpyFile(final)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        try:
            self.folder.parent.rmdir()            # the stores' folder, when this was the last store in it
        except OSError:
            pass
