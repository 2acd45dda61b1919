"""Default output names that collide with nothing: ``kampala_clusters.gpkg``, then ``kampala_clusters_2.gpkg`` ...

A name is free only when none of the files a run would write under it exists (OUT.gpkg, OUT_clusters.tif,
OUT_model.pt, OUT_manifest.json, ...): ``files_of(path)`` says which, from the run's request.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable

MAX_TRIES = 999


def output_folder(raster: str) -> tuple[Path, str]:
    """(folder, base name) for outputs named after ``raster``: next to it, or the home folder when that is not
    writable (or no raster is chosen)."""
    base = Path(raster).with_suffix("") if raster else Path.home() / "urbanform"
    folder = base.parent if os.access(base.parent, os.W_OK) else Path.home()
    return folder, base.name


def free_name(first: str, files_of: Callable[[str], Iterable[Path]]) -> str:
    """``first`` when none of ``files_of(first)`` exists, else the first of STEM_2.EXT, STEM_3.EXT ... that is
    free the same way."""
    first_path = Path(first)
    for i in range(1, MAX_TRIES + 1):
        candidate = first_path if i == 1 else first_path.with_name(f"{first_path.stem}_{i}{first_path.suffix}")
        if not any(Path(p).exists() for p in files_of(str(candidate))):
            return str(candidate)
    return str(first_path)


def is_taken(path: str, files_of: Callable[[str], Iterable[Path]]) -> bool:
    return bool(path) and any(Path(p).exists() for p in files_of(path))


def proposed_output(raster: str, kind: str, files_of: Callable[[str], Iterable[Path]],
                    suffix: str = ".gpkg") -> str:
    """A free ``RASTER_KIND.gpkg`` (or ``suffix``) next to the raster, numbered _2, _3 ... when taken."""
    folder, base = output_folder(raster)
    return free_name(str(folder / f"{base}_{kind}{suffix}"), files_of)
