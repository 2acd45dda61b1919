"""What a run records about itself: file checksums, package versions, the JSON manifest."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np


def sha256_file(path: "str | Path", chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


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
