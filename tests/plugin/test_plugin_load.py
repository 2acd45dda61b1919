"""The plugin loads and unloads in real QGIS without pulling in heavy libraries."""
from __future__ import annotations

import configparser
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

from qgis.core import QgsApplication

from .helpers import fresh_qgis_env, run_in_own_group

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "torchvision", "rasterio", "geopandas", "sklearn", "engine")


def test_metadata_is_complete():
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(REPO / "metadata.txt", encoding="utf-8")
    meta = parser["general"]
    for key in ("name", "qgisMinimumVersion", "description", "about", "version", "author", "email",
                "repository", "tracker", "homepage", "category", "icon", "tags", "hasProcessingProvider",
                "experimental"):
        assert meta.get(key), f"metadata.txt lacks {key}"
    assert meta["name"] == "Urban Form Mapper"
    assert meta["qgisMinimumVersion"] == "3.22"
    assert meta["category"] == "Raster"
    assert meta["hasProcessingProvider"] == "yes"
    assert (REPO / meta["icon"]).is_file()


def test_plugin_loads_registers_provider_and_unloads(urbanform, qgis_iface):
    registry = QgsApplication.processingRegistry()
    plugin = urbanform.classFactory(qgis_iface)
    plugin.initGui()
    try:
        provider = registry.providerById("urbanform")
        assert provider is not None and provider.name() == "Urban Form Mapper"
        assert [a.objectName() for a in plugin.actions] == ["urbanformDock", "urbanformAbout"]
        assert "Urban Form Mapper" in plugin.about_text()
    finally:
        plugin.unload()
    assert registry.providerById("urbanform") is None
    assert plugin.actions == []
    loaded = [m for m in HEAVY if m in sys.modules]
    assert loaded == [], f"loading the plugin imported {loaded}"


def test_plugin_loads_in_the_qgis_desktop_app(plugin_parent, tmp_path):
    """Start the real QGIS desktop (under Xvfb), load and start the plugin, check the Raster menu."""
    script = tmp_path / "check.py"
    report = tmp_path / "report.txt"
    script.write_text(textwrap.dedent(f"""
        import os, sys, traceback
        import qgis.utils
        from qgis.utils import iface, loadPlugin, startPlugin, unloadPlugin, updateAvailablePlugins
        lines = []
        # report exceptions instead of opening QGIS's modal error dialog (which would hang the test)
        qgis.utils.showException = lambda t, v, tb, msg=None, *a, **k: lines.append(
            "error=%s: %s" % (msg, "".join(traceback.format_exception(t, v, tb)).replace("\\n", " | ")))
        try:
            updateAvailablePlugins()
            lines.append("load=%s" % loadPlugin("urbanform"))
            lines.append("start=%s" % startPlugin("urbanform"))
            menu = [a.text() for a in iface.rasterMenu().actions()]
            lines.append("menu=%s" % ("Urban Form Mapper" in " ".join(menu).replace("&", "")))
            from qgis.core import QgsApplication
            lines.append("provider=%s" % (QgsApplication.processingRegistry().providerById("urbanform") is not None))
            lines.append("heavy=%s" % ",".join(m for m in {HEAVY!r} if m in sys.modules))
            lines.append("unload=%s" % unloadPlugin("urbanform"))
        except Exception as exc:
            lines.append("error=%r" % exc)
        open({str(report)!r}, "w").write("\\n".join(lines))
        os._exit(0)
    """))
    env = fresh_qgis_env(tmp_path, QGIS_PLUGINPATH=plugin_parent, QT_QPA_PLATFORM="xcb")
    run_in_own_group(["xvfb-run", "-a", "qgis.bin", "--noversioncheck", "--nologo", "--noplugins", "--code",
                      str(script)], env, timeout=180)
    assert report.exists(), "QGIS did not finish the script within 180 s"
    got = dict(line.split("=", 1) for line in report.read_text().splitlines())
    assert got.get("error") is None, got
    assert got == {"load": "True", "start": "True", "menu": "True", "provider": "True", "heavy": "",
                   "unload": "True"}, got


def test_package_zip_has_urbanform_top_folder(tmp_path):
    subprocess.run(["make", "-s", "package"], cwd=REPO, check=True, capture_output=True)
    zips = sorted((REPO / "dist").glob("urbanform-*.zip"))
    assert zips, "make package wrote no zip"
    with zipfile.ZipFile(zips[-1]) as zf:
        names = zf.namelist()
    assert all(n.startswith("urbanform/") for n in names)
    for required in ("urbanform/metadata.txt", "urbanform/__init__.py", "urbanform/plugin/main.py",
                     "urbanform/engine/cli/main.py", "urbanform/resources/icon.png", "urbanform/LICENSE"):
        assert required in names
    assert not any("__pycache__" in n for n in names)
