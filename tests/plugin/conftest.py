"""Plugin tests run inside the real QGIS (pytest-qgis, QT_QPA_PLATFORM=offscreen).

The repository root is the plugin folder; QGIS imports it as the package
``urbanform``. The fixture below makes that name importable from a link, as
QGIS's plugin loader would.
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def plugin_parent(tmp_path_factory) -> Path:
    """A folder holding ``urbanform`` -> the repository (like QGIS's plugins folder)."""
    parent = tmp_path_factory.mktemp("plugins")
    (parent / "urbanform").symlink_to(REPO, target_is_directory=True)
    return parent


@pytest.fixture(scope="session")
def urbanform(plugin_parent):
    sys.path.insert(0, str(plugin_parent))
    try:
        yield importlib.import_module("urbanform")
    finally:
        sys.path.remove(str(plugin_parent))
