"""The feature cache kept under a size budget: the least recently used feature files go first.

Every tool that describes tiles with a CNN caches the features as ``<cache>/<key>.npy`` (one file per raster,
tiling and recipe: ``engine.tools.cluster._compute_features``). Nothing removed them, so a machine that
clusters many rasters, a server taking uploads above all, filled its disk a few hundred megabytes at a time.

- ``default_cache_dir()``: the folder when a run names none (``$URBANFORM_CACHE/features``).
- ``budget_bytes()``: the budget, ``URBANFORM_CACHE_MAX_GB`` gigabytes (default ``DEFAULT_MAX_GB``; 0 keeps
  every file). Read before any work, so a bad value is refused before features are computed.
- ``touch(path)``: a cache hit marks its file as used (its modification time is the time of last use).
- ``trim(folder, max_bytes)``: after a new feature file is written, the least recently used ones are deleted
  until the feature files total at most the budget. A file used in the last ``GRACE_S`` seconds is never
  deleted, so a run still reading its features, or another process that has just found them, keeps them,
  even when that leaves the cache over budget for a while.

Only the finished feature files at the top of the folder are counted and deleted: partial files (``.KEY.part-PID``,
removed by the run that owns them), the partitions of Dask runs in progress (``parts/``), study VRTs
(``studies/``) and mapped buildings (``buildings/``, small) are left alone.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from ..errors import BadInput

ENV = "URBANFORM_CACHE_MAX_GB"
DEFAULT_MAX_GB = 20.0
GRACE_S = 3600.0


def default_cache_dir() -> Path:
    """The feature cache folder when a run names none: ``$URBANFORM_CACHE/features``, else
    ``~/.cache/urbanform/features`` (under ``$XDG_CACHE_HOME`` when set)."""
    root = os.environ.get("URBANFORM_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "urbanform")
    return Path(root) / "features"


def budget_bytes(environ=None) -> "int | None":
    """The feature cache's budget in bytes from ``URBANFORM_CACHE_MAX_GB`` (None: no limit); BadInput for a
    value that is not a number of gigabytes >= 0."""
    raw = (os.environ if environ is None else environ).get(ENV, "").strip()
    if not raw:
        return int(DEFAULT_MAX_GB * 2 ** 30)
    try:
        gb = float(raw)
    except ValueError:
        gb = float("nan")
    if not gb >= 0 or gb == float("inf"):
        raise BadInput(f"{ENV}={raw!r} is not a size: give the feature cache's budget in gigabytes, for example "
                       f"{ENV}={DEFAULT_MAX_GB:g} (the default), or 0 to keep every cached feature file.",
                       param="cache_dir")
    return None if gb == 0 else int(gb * 2 ** 30)


def touch(path: "str | Path") -> None:
    """Mark a cached file as used now (a cache hit); a file another process has just removed is no error."""
    try:
        os.utime(path)
    except OSError:
        pass


def feature_files(folder: "str | Path") -> list[tuple[float, int, Path]]:
    """(last use, size in bytes, path) of the finished feature files in ``folder``, least recently used first."""
    out = []
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return []
    for e in entries:
        if e.name.startswith(".") or not e.name.endswith(".npy"):
            continue
        try:
            if e.is_file(follow_symlinks=False):
                st = e.stat(follow_symlinks=False)
                out.append((st.st_mtime, st.st_size, Path(e.path)))
        except FileNotFoundError:                  # removed meanwhile by another process
            continue
    return sorted(out)


def trim(folder: "str | Path", max_bytes: "int | None", now: "float | None" = None,
         grace_s: "float | None" = None) -> list[tuple[Path, int]]:
    """Delete the least recently used feature files of ``folder`` until they total at most ``max_bytes``
    (None: nothing is deleted), never one used in the last ``grace_s`` seconds (default ``GRACE_S``); the
    (path, size) of each file deleted."""
    if max_bytes is None:
        return []
    now = time.time() if now is None else now
    grace_s = GRACE_S if grace_s is None else grace_s
    files = feature_files(folder)
    total = sum(size for _, size, _ in files)
    removed = []
    for used, size, path in files:
        if total <= max_bytes or now - used < grace_s:     # oldest first: every later file is as recent
            break
        try:
            path.unlink()
        except FileNotFoundError:                  # another process trimmed it first
            pass
        except OSError:
            continue
        else:
            removed.append((path, size))
        total -= size
    return removed
