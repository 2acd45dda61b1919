"""Where the plugin's files are (it may run from a source tree or an installed zip)."""
from __future__ import annotations

from pathlib import Path

PLUGIN_DIR = Path(__file__).resolve().parent.parent
RESOURCES = PLUGIN_DIR / "resources"


def icon_path() -> Path:
    return RESOURCES / "icon.png"


def read_metadata() -> dict:
    """metadata.txt's [general] section as a dict (used for the About box and the version)."""
    import configparser

    parser = configparser.ConfigParser(interpolation=None)
    parser.read(PLUGIN_DIR / "metadata.txt", encoding="utf-8")
    return dict(parser["general"]) if parser.has_section("general") else {}
