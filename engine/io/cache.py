"""The feature cache kept under a size budget: the least recently used entries go first.

Every tool that describes tiles with a CNN caches the features as ``<cache>/<key>.npy`` (one file per raster,
tiling and recipe: ``engine.tools.cluster._compute_features``), and ``--form MODEL.pt`` keeps the buildings
the model maps as ``<cache>/buildings/<key>.gpkg`` with the mask and manifest ``segment`` writes beside it
(``engine.tools.formsource``). Nothing removed them, so a machine that clusters many rasters, a server taking
uploads above all, filled its disk a few hundred megabytes at a time.

- ``default_cache_dir()``: the folder when a run names none (``$URBANFORM_CACHE/features``).
- ``budget_bytes()``: the budget, ``URBANFORM_CACHE_MAX_GB`` gigabytes (default ``DEFAULT_MAX_GB``; 0 keeps
  every file). Read before any work, so a bad value is refused before features are computed.
- ``touch(*paths)``: a cache hit marks its files as used (their modification time is the time of last use).
- ``trim(folder, max_bytes)``: after a new entry is written, the least recently used ones are deleted until
  the entries total at most the budget. An entry used in the last ``GRACE_S`` seconds is never deleted, so a
  run still reading it, or another process that has just found it, keeps it, even when that leaves the cache
  over budget for a while.

An entry is a finished feature file at the top of the folder, or one mapped buildings layer with its mask
and manifest (``buildings/KEY.gpkg``, ``KEY_mask.tif``, ``KEY_manifest.json``: last used when the most
recent of them was, removed together, the manifest first, so that what is left of a group half removed is
never taken for a cache hit). Partial files and locks (names starting with a dot, removed by the run that
owns them), the partitions of Dask runs in progress (``parts/``) and study VRTs (``studies/``, removed with
their scenes: ``engine.raster.study.prune_studies``) are left alone by ``trim``.

- ``prune_stores(folder)``: the stores of Dask runs (``<cache>/features/parts/KEY`` of cluster, predict and
  sweep, DeepCluster's ``parts/deepcluster-ID``; ``<cache>/segment/KEY`` of segment; ``<cache>/stats/KEY``
  of the building statistics) are removed when their run succeeds and kept when it fails, for ``--resume``.
  A store nothing has been written to for ``STORE_MAX_AGE_S`` (a week) is taken for abandoned and removed
  (``prune_run_stores``) when the next Dask run that keeps its store in the same folder starts; never that
  run's own store, which ``--resume`` wants.
"""
from __future__ import annotations

import os
import re
import time
from pathlib import Path

from ..errors import BadInput

ENV = "URBANFORM_CACHE_MAX_GB"
DEFAULT_MAX_GB = 20.0
GRACE_S = 3600.0
STORE_MAX_AGE_S = 7 * 86400.0      # a Dask run's store untouched this long is abandoned (prune_stores)
BUILDINGS = "buildings"            # the folder of the buildings --form MODEL.pt maps (engine.tools.formsource)
# the files of one mapped buildings layer: engine.tools.segment.output_paths(KEY.gpkg)
_BUILDINGS_FILE = re.compile(r"^([0-9A-Za-z]+)(\.gpkg|_mask\.tif|_prob\.tif|_manifest\.json)$")


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


def touch(*paths: "str | Path") -> None:
    """Mark the files of a cache entry as used now (a cache hit); a file another process has just removed is
    no error."""
    for path in paths:
        try:
            os.utime(path)
        except OSError:
            pass


def _files(folder) -> list[os.DirEntry]:
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return []
    return [e for e in entries if not e.name.startswith(".")]


def _stat(entry: os.DirEntry):
    """The entry's stat when it is a plain file still there (another process may have removed it)."""
    try:
        return entry.stat(follow_symlinks=False) if entry.is_file(follow_symlinks=False) else None
    except FileNotFoundError:
        return None


def feature_files(folder: "str | Path") -> list[tuple[float, int, Path]]:
    """(last use, size in bytes, path) of the finished feature files in ``folder``, least recently used first."""
    out = []
    for e in _files(folder):
        if e.name.endswith(".npy") and (st := _stat(e)) is not None:
            out.append((st.st_mtime, st.st_size, Path(e.path)))
    return sorted(out)


def building_groups(folder: "str | Path") -> list[tuple[float, int, tuple[Path, ...]]]:
    """(last use, size in bytes, files) of each mapped buildings layer under ``folder/buildings``, least
    recently used first; the files in the order they are removed (the manifest first)."""
    groups: dict[str, list] = {}
    for e in _files(Path(folder) / BUILDINGS):
        m = _BUILDINGS_FILE.match(e.name)
        if m and (st := _stat(e)) is not None:
            groups.setdefault(m.group(1), []).append((not e.name.endswith("_manifest.json"), st, Path(e.path)))
    out = []
    for files in groups.values():
        files.sort(key=lambda f: (f[0], f[2].name))
        out.append((max(st.st_mtime for _, st, _ in files), sum(st.st_size for _, st, _ in files),
                    tuple(path for _, _, path in files)))
    return sorted(out)


def entries(folder: "str | Path") -> list[tuple[float, int, tuple[Path, ...]]]:
    """(last use, size in bytes, files) of everything the budget counts in ``folder``: each feature file and
    each mapped buildings layer; least recently used first."""
    return sorted([(used, size, (path,)) for used, size, path in feature_files(folder)] + building_groups(folder))


def trim(folder: "str | Path", max_bytes: "int | None", now: "float | None" = None,
         grace_s: "float | None" = None) -> list[tuple[Path, int]]:
    """Delete the least recently used entries of ``folder`` (``entries``) until they total at most
    ``max_bytes`` (None: nothing is deleted), never one used in the last ``grace_s`` seconds (default
    ``GRACE_S``); for each entry deleted, its first file (the feature file, or the buildings' manifest) and
    its size."""
    if max_bytes is None:
        return []
    now = time.time() if now is None else now
    grace_s = GRACE_S if grace_s is None else grace_s
    found = entries(folder)
    total = sum(size for _, size, _ in found)
    removed = []
    for used, size, paths in found:
        if total <= max_bytes or now - used < grace_s:     # oldest first: every later entry is as recent
            break
        gone = True
        for path in paths:
            try:
                path.unlink()
            except FileNotFoundError:              # another process trimmed it first
                pass
            except OSError:
                gone = path is not paths[0]        # the rest of a group whose manifest went is no hit any more
                break
        if gone:
            removed.append((paths[0], size))
            total -= size
    return removed


def trimmed_message(removed: list[tuple[Path, int]], budget: int) -> str:
    """What a run says after ``trim`` removed ``removed``, naming the budget and its variable."""
    gb = sum(size for _, size in removed) / 2 ** 30
    n_b = sum(1 for path, _ in removed if path.parent.name == BUILDINGS)
    what = f"{len(removed) - n_b} feature file(s)" + (f" and {n_b} mapped buildings layer(s)" if n_b else "")
    return (f"feature cache over its {budget / 2 ** 30:g} GB budget ({ENV}): removed the least recently used "
            f"{what}, {gb:.2f} GB")


def _newest_write(folder: Path) -> float:
    """The last time a file under ``folder`` (or the folder itself) was written."""
    newest = folder.stat().st_mtime
    for root, _dirs, names in os.walk(folder):
        for name in names:
            try:
                newest = max(newest, os.stat(os.path.join(root, name), follow_symlinks=False).st_mtime)
            except FileNotFoundError:
                pass
    return newest


def prune_stores(folder: "str | Path", keep: "str | None" = None, now: "float | None" = None,
                 max_age_s: "float | None" = None) -> list[Path]:
    """Remove the stores of interrupted Dask runs in ``folder`` (one sub-folder each) that nothing has been
    written to for ``max_age_s`` seconds (default ``STORE_MAX_AGE_S``), except the store named ``keep`` (the
    run's own); the stores removed. Each goes as ``atomic.remove_folder`` removes a folder: out of sight
    first. A missing folder is nothing to do."""
    from .atomic import remove_folder

    now = time.time() if now is None else now
    max_age_s = STORE_MAX_AGE_S if max_age_s is None else max_age_s
    removed = []
    for e in _files(folder):
        if e.name == keep or not e.is_dir(follow_symlinks=False):
            continue
        try:
            stale = now - _newest_write(Path(e.path)) > max_age_s
        except FileNotFoundError:                  # another process removed it first
            continue
        if stale and remove_folder(e.path):
            removed.append(Path(e.path))
    return removed


def pruned_message(removed: list[Path]) -> str:
    """What a run says after ``prune_stores`` removed ``removed``."""
    return (f"removed {len(removed)} store(s) of interrupted Dask runs that nothing had written to for over "
            f"{STORE_MAX_AGE_S / 86400:g} days (too late for --resume): {', '.join(p.name for p in removed)}")


def prune_run_stores(stores: "str | Path", key: str, progress, stage: str) -> list[Path]:
    """Before a Dask run that keeps its store in ``stores/key``: ``prune_stores`` there (never ``key``), saying
    what went as ``progress(stage, 0, 1, message)``."""
    pruned = prune_stores(stores, keep=key)
    if pruned:
        progress(stage, 0, 1, pruned_message(pruned))
    return pruned
