"""Building statistics on Dask: the footprints read and summed partition by partition on the workers.

A layer of millions of footprints never sits in one process: each task reads
one run of its features (``partitions.Partition`` of the layer's feature order),
repairs them as one process does (``stats.measures.read_buildings``) and sums
them per tile (``stats.measures.building_sums``: counts, clipped areas, and the
sums behind the means). The tiles travel through the store (their WKB, written
once), the sums back through the scheduler, only for the tiles a partition
touches. Each task also leaves its sums in the store (``part-N.npz``, written
under a temporary name), so a client that dies keeps the partitions finished:
``--resume`` reads them back and runs only the others. The store is named
after the footprints file (path, size, time), the tiles and the CRS, so a
resumed run only ever reuses sums of the same inputs. The client adds the
partitions' sums in order and turns them into the columns
(``building_columns``); the warnings come from the added reports, so they say
what one process says.

Counts are exact; areas and means are sums of the same numbers grouped
otherwise, equal to one process's within float rounding.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .partitions import Partition, split
from .worker import cached

BUILDINGS_PER_PARTITION = 100_000       # footprints a task reads: tens of MB of geometry


@dataclass(frozen=True)
class BuildingJob:
    """The footprints (as the user gave them, ``name`` their flag), the tiles' WKB file, the CRS both are
    measured in, and the store folder the partitions' sums go to."""

    buildings: str
    name: str
    tiles: str
    crs: str
    store: str = ""

    def part_path(self, part: Partition) -> Path:
        return Path(self.store) / f"part-{part.index:06d}.npz"


def _load_tiles(path: str):
    import shapely

    with np.load(path, allow_pickle=False) as z:
        data, offsets = z["wkb"].tobytes(), z["offsets"]
    return np.array([shapely.from_wkb(data[a:b]) for a, b in zip(offsets[:-1], offsets[1:], strict=True)],
                    dtype=object)


@dataclass(frozen=True)
class _TilesFile:
    """A tiles file as a worker's cache key (``worker.cached``)."""

    path: str

    def open(self):
        return _load_tiles(self.path)


def building_partition(part: Partition, job: BuildingJob) -> dict:
    """One partition's footprints summed per tile: the touched tiles' positions and sums, the type report, the
    footprint count and whether any overlaps a tile."""
    from ..stats.measures import _clean, building_sums, overlaps, read_buildings

    spec = _TilesFile(job.tiles)
    with cached(spec, spec.open) as tiles:
        report: dict = {}
        b = read_buildings(job.buildings, job.crs, job.name, allow_empty=True, rows=slice(part.start, part.stop),
                           report=report)
        g, _ = _clean(b)
        sums = building_sums(tiles, g)
        hit = overlaps(tiles, g)
    touched = np.flatnonzero(np.any([sums[k] != 0 for k in sums], axis=0))
    result = {"tiles": touched, "sums": {k: v[touched] for k, v in sums.items()}, "report": report,
              "buildings": int(len(g)), "overlaps": hit}
    if job.store:
        _save_part(job.part_path(part), result)
    return result


def _save_part(path: Path, result: dict) -> None:
    """A partition's sums as ``part-N.npz`` (arrays, and the rest as JSON), whole or not at all."""
    from ..io import atomic_path

    info = {k: result[k] for k in ("report", "buildings", "overlaps")}
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, tiles=result["tiles"], info=np.frombuffer(json.dumps(info).encode(), np.uint8),
                 **{f"sum_{k}": v for k, v in result["sums"].items()})


def _load_part(path: Path) -> "dict | None":
    """The sums a finished partition left in the store (None: not there or unreadable)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            info = json.loads(z["info"].tobytes().decode())
            return {"tiles": z["tiles"], "sums": {k[4:]: z[k] for k in z.files if k.startswith("sum_")}, **info}
    except (OSError, ValueError, KeyError):
        return None


def store_key(buildings: str, tiles_wkb: dict, crs: str, n: int) -> str:
    """The store's name: the footprints file (path, size, modification time), the tiles, the CRS, the split."""
    st = os.stat(buildings)
    h = hashlib.sha256(json.dumps([os.path.abspath(buildings), st.st_size, st.st_mtime_ns, crs, n,
                                   BUILDINGS_PER_PARTITION]).encode())
    for v in tiles_wkb.values():
        h.update(np.ascontiguousarray(v).tobytes())
    return "buildings-" + h.hexdigest()[:20]


def building_stats_on_dask(session, buildings: str, tiles_m, store_root: Path, progress, name: str = "--buildings",
                           warnings: "list | None" = None, resume: bool = False):
    """``stats.measures.building_stats`` of the GeoSeries ``tiles_m`` (a metric CRS) and the footprints file
    ``buildings``, on the workers of ``session``; the tiles and the partitions' sums go through a store folder
    under ``store_root`` (removed at the end; with ``resume``, the sums an interrupted run left there are kept)."""
    import shutil

    from ..io import atomic_path
    from ..io.cache import prune_run_stores
    from ..io.vectors import feature_count
    from ..stats.measures import (BUILDING_SUMS, NO_FOOTPRINTS, _warn, add_reports, building_columns,
                                  overlap_message, type_messages)
    from .features import check_visible
    from .segment import _wkb

    n = feature_count(buildings, name, "building footprints", kind="polygon")
    parts = split(n, BUILDINGS_PER_PARTITION) if n else []
    wkb = _wkb(list(np.asarray(tiles_m.values, dtype=object)))
    folder = Path(store_root) / store_key(buildings, wkb, tiles_m.crs.to_wkt(), n)
    prune_run_stores(Path(store_root), folder.name, progress, "buildings")
    if folder.exists() and not resume:
        shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    tiles_file = folder / "tiles.npz"
    if not tiles_file.is_file():
        with atomic_path(tiles_file) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **wkb)
    check_visible(session, folder, None)
    job = BuildingJob(str(buildings), name, str(tiles_file), tiles_m.crs.to_wkt(), str(folder))
    kept = {p.index: r for p in parts if resume for r in (_load_part(job.part_path(p)),) if r is not None}
    todo = [p for p in parts if p.index not in kept]
    done = len(kept)
    note = f"; {done} of {len(parts)} kept from the interrupted run" if resume else ""
    progress("buildings", done, len(parts), f"{len(parts)} partitions of footprints{note}")

    def finished(part, _):
        nonlocal done
        done += 1
        progress("buildings", done, len(parts), f"{done} of {len(parts)} partitions of footprints")

    ran = dict(zip((p.index for p in todo), session.run(building_partition, todo, job, name="buildings",
                                                         on_done=finished), strict=True))
    results = [kept.get(p.index) or ran[p.index] for p in parts]
    shutil.rmtree(folder, ignore_errors=True)
    session.runs.append({"stage": "buildings", "partitions": len(parts), "footprints": n, "kept": len(kept)})
    sums = {k: np.zeros(len(tiles_m), np.int64 if k == "count" else np.float64) for k in BUILDING_SUMS}
    report = {"other": {}, "invalid": 0, "lost": 0}
    for r in results:                                          # in the layer's order
        for k in BUILDING_SUMS:
            sums[k][r["tiles"]] += r["sums"][k]
        report = add_reports(report, r["report"])
    for msg in type_messages(report, name, "polygons"):
        _warn(msg, warnings)
    total = sum(r["buildings"] for r in results)
    if total == 0:
        _warn(NO_FOOTPRINTS.format(name=name), warnings)
    elif len(tiles_m) and not any(r["overlaps"] for r in results):
        _warn(overlap_message(total, name, "footprints"), warnings)
    return building_columns(sums, tiles_m)
