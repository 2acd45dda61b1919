"""What a run records about itself: file checksums, package versions, the JSON manifest."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np


def sha256_file(path: "str | Path", chunk: int = 1 << 22) -> str:
    """The SHA-256 of a file's bytes; for a GDAL VRT (a mosaic of a study) also of every file it reads from,
    in order (nested VRTs too), so that the checksum of a mosaic changes when one of its scenes does."""
    h = hashlib.sha256()
    _hash_into(h, Path(path), chunk, set())
    return h.hexdigest()


def _hash_into(h, path: Path, chunk: int, seen: set) -> None:
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    if path.suffix.lower() != ".vrt":
        return
    seen.add(os.path.abspath(path))
    for source in vrt_sources(path):
        key = os.path.abspath(source)
        if key in seen or not os.path.isfile(source):          # a source read twice (each band) counts once
            continue
        seen.add(key)
        h.update(b"\0" + os.fsencode(key) + b"\0")
        _hash_into(h, Path(source), chunk, seen)


def vrt_sources(path: "str | Path") -> list[str]:
    """The files a VRT reads from (SourceFilename and, for a warped VRT, SourceDataset), in order, resolved
    against the VRT's folder where they are relative; [] for a VRT that cannot be parsed."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError):
        return []
    out: list[str] = []
    for el in root.iter():
        if el.tag not in ("SourceFilename", "SourceDataset") or not (el.text or "").strip():
            continue
        name = el.text.strip()
        if el.get("relativeToVRT") == "1":
            name = os.path.join(os.path.dirname(os.path.abspath(path)), name)
        if name not in out:
            out.append(name)
    return out


def write_json(path: "str | Path", obj: dict) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=2, default=_json_default)
        fh.write("\n")


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)


# distribution name -> the name the manifest uses
_VERSIONED = {"numpy": "numpy", "torch": "torch", "torchvision": "torchvision", "rasterio": "rasterio",
              "scikit-learn": "sklearn", "pyogrio": "pyogrio", "shapely": "shapely", "geopandas": "geopandas"}


def versions() -> dict:
    """Versions of the libraries that shape results, for the manifest.

    Read from the installed packages' metadata, not by importing them:
    importing torchvision and geopandas just for their version cost 1.6 s.
    """
    import platform
    import sys
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    from .. import __version__

    out["engine"] = __version__
    for dist, name in _VERSIONED.items():
        try:
            out[name] = version(dist)
        except PackageNotFoundError:
            pass
    try:
        import rasterio

        out["gdal"] = rasterio.__gdal_version__
    except ImportError:
        pass
    return out
