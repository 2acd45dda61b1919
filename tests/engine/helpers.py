"""Helpers shared by engine test modules (import them from here, never from a test module or conftest).

The repository's paths, the shared real data, small GeoTIFFs and the command line (in this process, or in a child
``python -m engine`` where the process itself is under test).
No torch here: conftest imports this module, so every test session would pay for it.
"""
from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.windows import Window

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


def run_cli(*args, cwd=REPO, env=None, check=None, process=False) -> subprocess.CompletedProcess:
    """Run the engine's command line with ``args``; returns a CompletedProcess (its return code, stdout, stderr).

    By default in this process: ``engine.cli.main(args)``, the function ``python -m engine`` calls, with stdout
    and stderr captured. A child interpreter would spend 3-5 s importing torch, scikit-learn and GDAL again
    before each run, most of the time of a run on the small rasters of the tests. ``process=True`` (and any
    ``env`` or ``cwd``) runs a real ``python -m engine`` child instead: for what only a process shows (its
    signals, its exit, what C libraries print, the environment it starts with).
    """
    argv = [str(a) for a in args]
    if process or env is not None or Path(cwd) != REPO:
        proc = subprocess.run([sys.executable, "-m", "engine", *argv], cwd=cwd, capture_output=True, text=True,
                              env={**os.environ, **(env or {})}, timeout=600)
    else:
        from engine.cli import main

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
        proc = subprocess.CompletedProcess([sys.executable, "-m", "engine", *argv], code, out.getvalue(),
                                           err.getvalue())
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


# -- many rasters as one study: scenes cut from one raster, so the truth is known
KAMPALA = SAMPLE / "kampala_ug_oam_rgb_z19_epsg3857.tif"     # 768 x 512 px, with an internal mask
CUTS = ((0, 300), (300, 520), (520, 768))          # columns of the three strips: not multiples of the tile size


def cut_strips(raster, folder, cuts=CUTS) -> list:
    """The raster cut into vertical strips (GeoTIFFs in ``folder``), in order."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    with rasterio.open(raster) as src:
        for i, (c0, c1) in enumerate(cuts):
            window = Window(c0, 0, c1 - c0, src.height)
            profile = dict(src.profile, width=c1 - c0, transform=src.window_transform(window))
            path = folder / f"strip_{i}.tif"
            with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "w", **profile) as dst:
                dst.write(src.read(window=window))
                dst.write_mask(src.dataset_mask(window=window))      # the sample has a mask: keep it
            paths.append(path)
    return paths


def hand_vrt(path, raster, strips) -> str:
    """A plain GDAL VRT of the strips with their masks, written by hand (SimpleSources), as gdalbuildvrt
    would."""
    with rasterio.open(raster) as src:
        t, w, h = src.transform, src.width, src.height
        crs = src.crs.to_wkt()
    bands = []
    for b in (1, 2, 3, "mask,1"):
        sources = []
        for strip in strips:
            with rasterio.open(strip) as s:
                x = round((s.transform.c - t.c) / t.a)
                sources.append(f"<SimpleSource><SourceFilename relativeToVRT=\"0\">{strip}</SourceFilename>"
                               f"<SourceBand>{b}</SourceBand><SrcRect xOff=\"0\" yOff=\"0\" xSize=\"{s.width}\" "
                               f"ySize=\"{s.height}\"/><DstRect xOff=\"{x}\" yOff=\"0\" xSize=\"{s.width}\" "
                               f"ySize=\"{s.height}\"/></SimpleSource>")
        band = f"<VRTRasterBand dataType=\"Byte\" band=\"{b}\">{''.join(sources)}</VRTRasterBand>"
        bands.append(band if b != "mask,1" else
                     f"<MaskBand><VRTRasterBand dataType=\"Byte\">{''.join(sources)}</VRTRasterBand></MaskBand>")
    path.write_text(f"<VRTDataset rasterXSize=\"{w}\" rasterYSize=\"{h}\"><SRS>{crs.replace('<', '&lt;')}</SRS>"
                    f"<GeoTransform>{t.c!r}, {t.a!r}, 0, {t.f!r}, 0, {t.e!r}</GeoTransform>{''.join(bands)}"
                    "</VRTDataset>")
    return str(path)
