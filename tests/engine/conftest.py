"""Shared fixtures for engine tests: real sample data and tiny generated rasters.

Fixtures only: helpers that tests import live in tests/engine/helpers.py (no test imports conftest)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.engine.helpers import SAMPLE, run_cli, write_raster


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


@pytest.fixture(scope="session")
def tiny_seg_model(tmp_path_factory, kampala_z19, kampala_buildings) -> Path:
    """A building model for tests that need a real model file, not a good one: train-seg on the Kampala sample,
    one epoch of 16 chips of 64 px from random weights (about 5 s). Written as ``models/buildings.pt``, with the
    checkpoint train-seg leaves next to it (``buildings_checkpoint.pt``), as an operator's models folder looks."""
    model = tmp_path_factory.mktemp("models") / "buildings.pt"
    run_cli("train-seg", kampala_z19, "--buildings", kampala_buildings, "--out", model, "--epochs", 1,
            "--chip", 64, "--chips-per-epoch", 16, "--weights", "none", "--progress", "none", check=0)
    return model


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
