"""`make package`: the zip QGIS installs and the plugins.xml of a custom plugin repository.

Nothing here needs the QGIS session; the zip is imported by QGIS's own Python in
a subprocess, as QGIS would load it from its plugins folder.
"""
from __future__ import annotations

import configparser
import os
import re
import subprocess
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SYS_PY = "/usr/bin/python3"
REPO_URL = "https://plugins.example.org/urbanform"


def metadata() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(REPO / "metadata.txt", encoding="utf-8")
    return parser["general"]


def make_package(dist: Path, repo_url: str = "") -> subprocess.CompletedProcess:
    proc = subprocess.run(["make", "-s", "package", f"DIST={dist}", f"REPO_URL={repo_url}"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    make_package(out, REPO_URL)
    return out


@pytest.fixture(scope="module")
def zip_path(dist) -> Path:
    path = dist / f"urbanform-{metadata()['version']}.zip"
    assert path.is_file(), sorted(p.name for p in dist.iterdir())
    return path


def test_zip_ships_the_plugin_and_nothing_else(zip_path):
    with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
    assert names == sorted(names)
    assert all(n.startswith("urbanform/") for n in names)
    for required in ("metadata.txt", "__init__.py", "LICENSE", "README.md", "requirements.txt",
                     "engine/__main__.py", "engine/cli/__init__.py", "engine/cli/parser.py", "engine/cli/main.py",
                     "engine/cli/commands.py", "plugin/main.py", "plugin/processing/cluster.py",
                     "resources/icon.png", "resources/ui/dock.ui"):
        assert f"urbanform/{required}" in names, required
    assert ("urbanform/requirements.lock" in names) == (REPO / "requirements.lock").is_file()
    tops = {n.split("/")[1] for n in names}
    assert tops <= {"metadata.txt", "__init__.py", "plugin", "engine", "resources", "LICENSE", "README.md",
                    "requirements.txt", "requirements.lock"}, tops
    bad = re.compile(r"(^|/)(tests|__pycache__|\.pytest_cache|\.qgis-settings|\.venv|\.git|dist|demo_out|bench_out"
                     r"|packaging)(/|$)|\.pyc$|\.aux\.xml$")
    assert not [n for n in names if bad.search(n.removeprefix("urbanform/"))]


def test_zip_is_reproducible(zip_path, tmp_path):
    make_package(tmp_path, REPO_URL)
    assert (tmp_path / zip_path.name).read_bytes() == zip_path.read_bytes()


def test_zip_installs_and_loads_in_qgis_python(zip_path, tmp_path):
    plugins = tmp_path / "plugins"
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(plugins)
    assert (plugins / "urbanform" / "metadata.txt").is_file()
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import urbanform, urbanform.plugin.main as m; "
        "assert urbanform.__file__.startswith(sys.argv[1]), urbanform.__file__; "
        "assert callable(urbanform.classFactory); print(m.UrbanFormPlugin.__name__)"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["QT_QPA_PLATFORM"] = "offscreen"
    proc = subprocess.run([SYS_PY, "-c", code, str(plugins)], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "UrbanFormPlugin"


def test_plugins_xml_is_a_repository_for_the_zip(dist, zip_path):
    meta = metadata()
    root = ET.parse(dist / "plugins.xml").getroot()
    assert root.tag == "plugins"
    (plugin,) = root.findall("pyqgis_plugin")
    assert plugin.get("name") == meta["name"]
    assert plugin.get("version") == plugin.findtext("version") == meta["version"]
    assert plugin.findtext("download_url") == f"{REPO_URL}/{zip_path.name}"
    # QGIS's installer names the plugin folder after file_name up to its first dot
    assert plugin.findtext("file_name").partition(".")[0] == "urbanform"
    assert plugin.findtext("qgis_minimum_version") == meta["qgisMinimumVersion"]
    assert plugin.findtext("about") == meta["about"].strip()
    assert plugin.findtext("description") == meta["description"].strip()
    assert plugin.findtext("icon") == f"{REPO_URL}/urbanform.png" and (dist / "urbanform.png").is_file()
    for element in ("qgis_maximum_version", "homepage", "author_name", "uploaded_by", "create_date", "update_date",
                    "experimental", "deprecated", "tracker", "repository", "tags", "server"):
        assert plugin.findtext(element), element


def test_plugins_xml_defaults_to_the_dist_folder_url(tmp_path):
    make_package(tmp_path)
    plugin = ET.parse(tmp_path / "plugins.xml").getroot().find("pyqgis_plugin")
    url = plugin.findtext("download_url")
    assert url == (tmp_path / f"urbanform-{metadata()['version']}.zip").resolve().as_uri()


def test_changelog_starts_with_the_current_version():
    meta = metadata()
    entries = [line.strip() for line in meta["changelog"].strip().splitlines()]
    assert entries[0].split()[0] == meta["version"]
    versions = [tuple(int(x) for x in e.split()[0].split(".")) for e in entries]
    assert versions == sorted(versions, reverse=True)


def test_engine_version_is_the_plugin_version():
    text = (REPO / "engine" / "__init__.py").read_text(encoding="utf-8")
    assert re.search(r'^__version__ = "([^"]+)"', text, re.M).group(1) == metadata()["version"]
