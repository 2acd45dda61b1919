"""The one atomic writer: outputs written under partial names and promoted together (OutputSet, NpyFile).

Every output of a run is first written under a temporary name next to its
final path and renamed into place only when the whole run has succeeded, so a
failed or cancelled run leaves nothing half-written. Existing files are never
replaced unless the caller passed ``overwrite=True``.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ..contract.outputs import partial_name
from ..errors import BadInput
from .manifest import write_json

# Files SQLite and GDAL may leave next to a file they write.
_SIDECARS = ("", "-wal", "-shm", "-journal", ".aux.xml")


def partial_path(final: "str | Path", tag: str = "") -> Path:
    """The temporary name ``final`` is written under: ``.{stem}.part-{pid}{tag}{suffix}`` in the same folder.

    The only place the engine names its partial files. The process id lets the
    plugin remove what a killed engine left (``.{stem}.part-{pid}*`` next to
    each output) and keeps two processes writing the same output apart.
    """
    return partial_name(final, os.getpid(), tag)


def remove_partial(tmp: "str | Path") -> None:
    """Delete a temporary file and its SQLite/GDAL side files, if present."""
    for extra in _SIDECARS:
        Path(str(tmp) + extra).unlink(missing_ok=True)


def promote(tmp: "str | Path", final: "str | Path") -> None:
    """Rename a finished temporary file into place (and its GDAL ``.aux.xml``, if any).

    The engine's only rename of an output: every writer ends here.
    """
    tmp, final = Path(tmp), Path(final)
    if final.exists() and final.is_file():
        final.unlink()
    os.replace(tmp, final)
    aux = Path(str(tmp) + ".aux.xml")
    if aux.exists():
        os.replace(aux, Path(str(final) + ".aux.xml"))


@contextmanager
def atomic_path(final: "str | Path") -> Iterator[Path]:
    """Yield the temporary path to write ``final`` under; rename it into place when the block succeeds.

    >>> with atomic_path(out) as tmp:
    ...     torch.save(obj, tmp)

    Any exception (``Cancelled``, ``KeyboardInterrupt`` included) leaves
    ``final`` untouched and removes the temporary file.
    """
    final = Path(final)
    tmp = partial_path(final)
    remove_partial(tmp)
    try:
        yield tmp
        promote(tmp, final)
    finally:
        remove_partial(tmp)


@contextmanager
def atomic_folder(final: "str | Path") -> Iterator[Path]:
    """Yield an empty temporary folder to fill; rename it to ``final`` when the block succeeds, so a reader sees
    the whole folder or none. A ``final`` that another process put in place meanwhile is kept (theirs has the
    same content: callers name folders after what they hold); any exception removes the temporary folder."""
    import shutil

    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(final)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove_folder(folder: "str | Path") -> bool:
    """Delete ``folder`` so that no reader sees it half gone: renamed out of sight first (to its partial name),
    then removed. False when it is gone already (another process removed it) or cannot be moved."""
    import shutil

    folder = Path(folder)
    gone = partial_path(folder, ".gone")
    try:
        os.rename(folder, gone)
    except OSError:
        return False
    shutil.rmtree(gone, ignore_errors=True)
    return True


def write_text_atomic(final: "str | Path", text: str, encoding: str = "utf-8") -> None:
    with atomic_path(final) as tmp:
        tmp.write_text(text, encoding=encoding)


def write_bytes_atomic(final: "str | Path", data: bytes) -> None:
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(final: "str | Path", obj: dict) -> None:
    with atomic_path(final) as tmp:
        write_json(tmp, obj)


def _writable(folder: Path) -> bool:
    """Whether a file can really be created in ``folder`` (os.access is always true for root)."""
    import tempfile

    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


class OutputSet:
    """The files one run writes, committed together.

    >>> with OutputSet([out_gpkg, out_tif], overwrite=False) as outs:
    ...     write_gpkg(outs.temp(out_gpkg), ...)
    ...     outs.commit()

    ``check()`` (called by the constructor) fails early, before any work, if a
    folder is missing or not writable, or a file exists and overwrite is off.
    Leaving the block without ``commit()`` (an error, Ctrl+C) removes the
    temporary files.
    """

    def __init__(self, paths: Iterable["str | Path"], overwrite: bool = False):
        self.paths = [Path(p) for p in paths]
        self.overwrite = overwrite
        self._temps: dict[Path, Path] = {}
        self.check()

    def check(self) -> None:
        for p in self.paths:
            folder = p.parent if str(p.parent) else Path(".")
            if not folder.is_dir():
                raise BadInput(f"output folder {str(folder)!r} does not exist; create it or choose another --out.")
            if not _writable(folder):
                raise BadInput(f"output folder {str(folder)!r} is not writable; choose another --out.")
            if p.exists() and not self.overwrite:
                raise BadInput(f"output {str(p)!r} already exists; choose another --out, or pass --overwrite "
                               "to replace it.")
            if p.exists() and p.is_dir():
                raise BadInput(f"output {str(p)!r} is a folder; give a file name.")

    def temp(self, path: "str | Path") -> Path:
        """The temporary name to write ``path`` under (same folder, same suffix)."""
        path = Path(path)
        if path not in self._temps:
            self._temps[path] = partial_path(path)
            remove_partial(self._temps[path])
        return self._temps[path]

    def commit(self, missing_ok: bool = False) -> None:
        """Rename every temporary file into place. With ``missing_ok``, a temporary file that was never
        written removes its final file instead (a stale part of an older output)."""
        for final, tmp in self._temps.items():
            if missing_ok and not tmp.exists():
                if final.is_file():
                    final.unlink()
                continue
            promote(tmp, final)
        self._temps.clear()

    def abort(self) -> None:
        for tmp in self._temps.values():
            remove_partial(tmp)
        self._temps.clear()

    def __enter__(self) -> "OutputSet":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.abort()


class NpyFile:
    """Rows of a 2-D ``.npy`` file read and written with plain file I/O.

    A memory map would do the same, but every page it touches counts as
    resident memory until it is unmapped; reading and writing through the file
    keeps the process's memory flat however many tiles there are.
    ``f[a:b]`` and ``f[index_array]`` read rows; ``f[a:b] = rows`` writes them.
    """

    def __init__(self, path: "str | Path", shape: tuple[int, int] | None = None, dtype=np.float32):
        self.path = Path(path)
        if shape is not None:                      # create
            self.shape, self.dtype = (int(shape[0]), int(shape[1])), np.dtype(dtype)
            with open(self.path, "wb") as fh:
                np.lib.format.write_array_header_1_0(
                    fh, {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                         "shape": self.shape})
                self.offset = fh.tell()
                fh.truncate(self.offset + self.shape[0] * self.shape[1] * self.dtype.itemsize)
        else:                                      # open
            with open(self.path, "rb") as fh:
                version = np.lib.format.read_magic(fh)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, fortran, dtype = read_header(fh)
                if fortran or len(shape) != 2:
                    raise ValueError(f"{self.path} is not a C-ordered 2-D array")
                self.shape, self.dtype, self.offset = tuple(shape), np.dtype(dtype), fh.tell()
        self.row_bytes = self.shape[1] * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def _read(self, fh, start: int, stop: int) -> np.ndarray:
        fh.seek(self.offset + start * self.row_bytes)
        data = np.fromfile(fh, dtype=self.dtype, count=(stop - start) * self.shape[1])
        return data.reshape(stop - start, self.shape[1])

    def __getitem__(self, key) -> np.ndarray:
        with open(self.path, "rb") as fh:
            if isinstance(key, slice):
                start, stop, step = key.indices(self.shape[0])
                if step != 1:
                    raise IndexError("NpyFile slices need step 1")
                return self._read(fh, start, max(start, stop))
            idx = np.asarray(key)
            out = np.empty((len(idx), self.shape[1]), dtype=self.dtype)
            for i, row in enumerate(idx):
                out[i] = self._read(fh, int(row), int(row) + 1)[0]
            return out

    def __setitem__(self, key: slice, rows: np.ndarray) -> None:
        start, stop, _ = key.indices(self.shape[0])
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        if rows.shape != (stop - start, self.shape[1]):
            raise ValueError(f"rows of shape {rows.shape} do not fit rows {start}:{stop}")
        with open(self.path, "r+b") as fh:
            fh.seek(self.offset + start * self.row_bytes)
            fh.write(rows.tobytes())
