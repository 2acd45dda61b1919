"""Build the plugin zip and a plugins.xml for a custom QGIS plugin repository (`make package`).

    python3 resources/packaging/package.py [--dist dist] [--repo-url https://host/path]

The zip holds one folder, ``urbanform/``, with what a user needs and nothing
else (no tests, caches or outputs); entries are sorted and dated from
SOURCE_DATE_EPOCH or the last commit, so the same tree gives the same bytes.
plugins.xml uses the elements QGIS's plugin installer reads
(python/pyplugin_installer/installer_data.py). This folder is not shipped.
"""
from __future__ import annotations

import argparse
import configparser
import datetime as dt
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = "urbanform"
SHIPPED = ["metadata.txt", "__init__.py", "plugin", "engine", "resources", "LICENSE", "README.md",
           "requirements.txt", "requirements.lock"]
LOCK = "requirements.lock"
NOT_SHIPPED = {"resources/packaging"}          # this script
SKIP_DIRS = {"__pycache__", "tests", "dist", "demo_out", "bench_out"}
SKIP_SUFFIXES = (".pyc", ".pyo", ".aux.xml", "~", ".swp", ".orig", ".rej")


def git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def shipped_files() -> list[str]:
    if not (ROOT / LOCK).is_file():
        if git("ls-files", LOCK):
            sys.exit(f"make package: {LOCK} is in git but missing from the working tree; restore it "
                     "(the plugin's engine set-up installs from it).")
        print(f"make package: warning: no {LOCK}; the zip ships without it.", file=sys.stderr)
    files = []
    for top in SHIPPED:
        path = ROOT / top
        if path.is_file():
            files.append(top)
        elif path.is_dir():
            for dirpath, dirnames, filenames in os.walk(path):
                rel_dir = Path(dirpath).relative_to(ROOT).as_posix()
                dirnames[:] = [d for d in dirnames if not d.startswith(".") and d not in SKIP_DIRS
                               and not d.endswith(".egg-info") and f"{rel_dir}/{d}" not in NOT_SHIPPED]
                files += [f"{rel_dir}/{f}" for f in filenames
                          if not f.startswith(".") and not f.endswith(SKIP_SUFFIXES)]
    return sorted(files)


def build_zip(zip_path: Path, files: list[str], stamp: tuple) -> None:
    tmp = zip_path.with_name(zip_path.name + ".part")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for rel in files:
            info = zipfile.ZipInfo(f"{PLUGIN}/{rel}", date_time=stamp)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (0o100755 if os.access(ROOT / rel, os.X_OK) else 0o100644) << 16
            zf.writestr(info, (ROOT / rel).read_bytes())
    tmp.replace(zip_path)


def plugins_xml(meta: configparser.SectionProxy, zip_name: str, base_url: str, icon_url: str,
                created: str, updated: str) -> str:
    version = meta["version"].strip()
    fields = {
        "description": meta.get("description", ""),
        "about": meta.get("about", ""),
        "version": version,
        "qgis_minimum_version": meta.get("qgisMinimumVersion", ""),
        "qgis_maximum_version": meta.get("qgisMaximumVersion", "") or meta["qgisMinimumVersion"].split(".")[0] + ".99",
        "homepage": meta.get("homepage", ""),
        # the installer takes the plugin's folder name from file_name up to its first dot
        "file_name": f"{PLUGIN}.{version}.zip",
        "icon": icon_url,
        "author_name": meta.get("author", ""),
        "author_email": meta.get("email", ""),
        "download_url": f"{base_url}/{zip_name}",
        "uploaded_by": meta.get("author", ""),
        "create_date": created,
        "update_date": updated,
        "experimental": meta.get("experimental", "False"),
        "deprecated": meta.get("deprecated", "False"),
        "tracker": meta.get("tracker", ""),
        "repository": meta.get("repository", ""),
        "category": meta.get("category", ""),
        "tags": meta.get("tags", ""),
        "changelog": meta.get("changelog", ""),
        "server": meta.get("server", "False"),
    }
    # no plugin_id attribute: QGIS sends votes for it to plugins.qgis.org, where this plugin has no id
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', "<plugins>",
             f"  <pyqgis_plugin name={quoteattr(meta['name'].strip())} version={quoteattr(version)}>"]
    lines += [f"    <{k}>{escape(str(v).strip())}</{k}>" for k, v in fields.items()]
    lines += ["  </pyqgis_plugin>", "</plugins>", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dist", default="dist", help="output folder (default dist)")
    ap.add_argument("--repo-url", default="", help="URL the dist folder is served at (default: its file:// URL)")
    args = ap.parse_args()

    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ROOT / "metadata.txt", encoding="utf-8")
    meta = parser["general"]
    version = meta["version"].strip()

    epoch = int(os.environ.get("SOURCE_DATE_EPOCH") or git("log", "-1", "--format=%ct") or time.time())
    when = dt.datetime.fromtimestamp(max(epoch, 315532800), dt.timezone.utc)     # zip dates start in 1980
    first = git("log", "--reverse", "--format=%cI")
    created = first.splitlines()[0] if first else when.isoformat()

    dist = Path(args.dist) if Path(args.dist).is_absolute() else ROOT / args.dist
    dist.mkdir(parents=True, exist_ok=True)
    base_url = (args.repo_url or dist.resolve().as_uri()).rstrip("/")
    zip_name = f"{PLUGIN}-{version}.zip"
    build_zip(dist / zip_name, shipped_files(), when.timetuple()[:6])
    icon = meta.get("icon", "").strip()
    icon_url = ""
    if icon and (ROOT / icon).is_file():
        shutil.copyfile(ROOT / icon, dist / f"{PLUGIN}.png")
        icon_url = f"{base_url}/{PLUGIN}.png"
    (dist / "plugins.xml").write_text(plugins_xml(meta, zip_name, base_url, icon_url, created, when.isoformat()),
                                      encoding="utf-8")
    print(f"{dist / zip_name} (QGIS: Plugins > Manage and Install Plugins > Install from ZIP)")
    print(f"{dist / 'plugins.xml'} (plugin repository; download_url {base_url}/{zip_name})")


if __name__ == "__main__":
    main()
