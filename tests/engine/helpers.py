"""Helpers shared by engine test modules (import them from here, never from a test module or conftest).

The repository's paths, the shared real data, small GeoTIFFs and the CLI in a subprocess.
No torch here: conftest imports this module, so every test session would pay for it.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = Path(os.environ.get("URBANFORM_SHARED_DATA", REPO.parent / "shared" / "data"))
SAMPLE = REPO / "resources" / "sample"


def shared(name: str) -> Path:
    """A file of ../shared/data (the real imagery and footprints), or skip where it is absent."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"{path} is not here (set URBANFORM_SHARED_DATA)")
    return path


def write_raster(path, data: np.ndarray, crs="EPSG:32630", transform=None, nodata=None, **extra) -> Path:
    """Write (bands, h, w) ``data`` as a GeoTIFF; default: 0.5 m pixels in UTM 30N."""
    transform = transform or Affine(0.5, 0, 500000.0, 0, -0.5, 700000.0)
    profile = dict(driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                   dtype=data.dtype, crs=crs, transform=transform, nodata=nodata, **extra)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return Path(path)


def run_cli(*args, cwd=REPO, env=None, check=None):
    """Run ``python -m engine ARGS``; returns the CompletedProcess."""
    proc = subprocess.run([sys.executable, "-m", "engine", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=600)
    if check is not None:
        assert proc.returncode == check, f"exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    return proc


def no_files_left(folder: Path) -> bool:
    return not any(p.is_file() for p in folder.rglob("*") if "cache" not in p.parts)


def work_events(stdout: str) -> list[dict]:
    """The progress events on an engine's stdout: every JSON line but the error event a bad input ends with
    (``--progress json``). Empty when no work began."""
    import json

    from engine.contract.progress import is_error

    return [e for e in (json.loads(line) for line in stdout.splitlines() if line.strip()) if not is_error(e)]
