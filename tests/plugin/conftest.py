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


@pytest.fixture(autouse=True, scope="session")
def _quiet_qgis_at_exit(qgis_app):
    """Before pytest-qgis calls exitQgis: no task running, no layer left, no dead Python wrapper pending.

    A QgsTask or a map layer that outlives exitQgis crashes the process at exit
    (after every test passed), so the session ends cleanly here.
    """
    yield
    import gc
    import time

    from qgis.core import QgsApplication, QgsProject
    from qgis.PyQt.QtCore import QCoreApplication

    manager = QgsApplication.taskManager()
    manager.cancelAll()
    end = time.monotonic() + 60
    while manager.countActiveTasks() and time.monotonic() < end:
        QCoreApplication.processEvents()
        time.sleep(0.05)
    QgsProject.instance().removeAllMapLayers()
    QgsProject.instance().clear()
    gc.collect()
    for _ in range(3):
        QCoreApplication.processEvents()
    # layers Python still owns (a frame or a Qt connection kept one alive) must die before exitQgis
    from qgis.core import QgsMapLayer
    from qgis.PyQt import sip

    for obj in gc.get_objects():
        if isinstance(obj, QgsMapLayer) and not sip.isdeleted(obj) and sip.ispyowned(obj):
            print(f"\nreleasing a map layer left alive by the tests: {obj.name()!r} ({obj.source()})")
            sip.delete(obj)
