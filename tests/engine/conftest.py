"""Shared fixtures for engine tests: real sample data and tiny generated rasters."""
from __future__ import annotations

import os
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


@pytest.fixture(autouse=True)
def _isolated_feature_cache(tmp_path, monkeypatch):
    """Every test gets its own feature cache, so no test sees another's features."""
    monkeypatch.setenv("URBANFORM_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="session")
def kampala_z19() -> Path:
    return SAMPLE / "kampala_ug_oam_rgb_z19_epsg3857.tif"


@pytest.fixture(scope="session")
def kampala_buildings() -> Path:
    return SAMPLE / "kampala_ug_osm_buildings.geojson"


def write_raster(path, data: np.ndarray, crs="EPSG:32630", transform=None, nodata=None, **extra) -> Path:
    """Write (bands, h, w) ``data`` as a GeoTIFF; default: 0.5 m pixels in UTM 30N."""
    transform = transform or Affine(0.5, 0, 500000.0, 0, -0.5, 700000.0)
    profile = dict(driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                   dtype=data.dtype, crs=crs, transform=transform, nodata=nodata, **extra)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return Path(path)


@pytest.fixture
def make_raster(tmp_path):
    """Factory: make_raster(name, data, **kw) -> path of a small GeoTIFF in tmp_path."""
    def make(name, data, **kw):
        return write_raster(tmp_path / name, data, **kw)
    return make


@pytest.fixture
def rgb_noise():
    """Random uint8 RGB (3, h, w)."""
    def make(h=256, w=256, seed=0):
        return np.random.default_rng(seed).integers(0, 256, size=(3, h, w), dtype=np.uint8)
    return make


@pytest.fixture(scope="session")
def city(tmp_path_factory):
    """A synthetic city with known zones (4x4 blocks of 256 px at 0.3 m, UTM 30N)."""
    from tests.synthetic import make_city

    return make_city(tmp_path_factory.mktemp("city") / "city.tif", zone_grid=(4, 4), zone_px=256, seed=3)


def pytest_configure(config):
    # rasterio 1.4 composes affine transforms with `*`, which affine 3 deprecates; not ours to fix
    config.addinivalue_line("filterwarnings", "ignore:Use `@` matmul:PendingDeprecationWarning")
