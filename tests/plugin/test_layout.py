"""The plugin's package layout (issue 12, "Layout"), checked on the imports of every module under plugin/.

- plugin modules use the engine only through its contract (``engine.contract``): the engine itself runs in its
  own process (DESIGN.md, "Why a subprocess");
- plugin/runner/ imports no Qt widgets (``qgis.PyQt.QtWidgets``, ``qgis.gui``), nor plugin/ui or plugin/layers
  (which do): it runs the engine, the panels
  show it;
- plugin/requests/ imports nothing of QGIS or Qt: requests are plain values.

Imports are read with ``ast`` (relative ones resolved against the module's package), so the check needs no QGIS
and sees imports inside functions too.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PLUGIN = REPO / "plugin"
MODULES = sorted(PLUGIN.rglob("*.py"))


def module_name(path: Path) -> str:
    """'plugin/runner/task.py' -> 'plugin.runner.task' (a package's __init__ -> the package)."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, source: str | None = None) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``path``; ``from X import a, b`` gives X.a and X.b too,
    so that ``from ...engine import cli`` reads as engine.cli."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8") if source is None else source, str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            found.append((node.lineno, module))
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def where(path: Path, line: int) -> str:
    return f"{path.relative_to(REPO)}:{line}"


def test_every_plugin_module_is_found():
    names = {module_name(p) for p in MODULES}
    for expected in ("plugin.main", "plugin.provider", "plugin.requests.cluster", "plugin.requests.sweep",
                     "plugin.runner.engine_setup", "plugin.runner.task", "plugin.layers.clusters", "plugin.ui.dock",
                     "plugin.processing.cluster"):
        assert expected in names
    assert all(p.parent == PLUGIN or (p.parent / "__init__.py").is_file() for p in MODULES)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PLUGIN)))
def test_the_engine_only_through_its_contract(path):
    wrong = [where(path, line) + f" imports {name}" for line, name in imports(path)
             if (name == "engine" or name.startswith("engine."))
             and not (name == "engine.contract" or name.startswith("engine.contract."))]
    assert not wrong, "the plugin may import only engine.contract from the engine:\n" + "\n".join(wrong)


@pytest.mark.parametrize("path", sorted((PLUGIN / "runner").rglob("*.py")), ids=lambda p: p.name)
def test_runner_has_no_widgets(path):
    wrong = [where(path, line) + f" imports {name}" for line, name in imports(path)
             if name.startswith(("qgis.PyQt.QtWidgets", "PyQt5.QtWidgets", "qgis.gui", "plugin.ui", "plugin.layers"))]
    assert not wrong, "plugin/runner/ runs the engine; widgets belong in plugin/ui/:\n" + "\n".join(wrong)


@pytest.mark.parametrize("path", sorted((PLUGIN / "requests").rglob("*.py")), ids=lambda p: p.name)
def test_requests_are_plain_values(path):
    wrong = [where(path, line) + f" imports {name}" for line, name in imports(path)
             if name.split(".")[0] in ("qgis", "PyQt5", "sip")]
    assert not wrong, "plugin/requests/ holds plain values: no QGIS, no Qt:\n" + "\n".join(wrong)


def test_engine_setup_is_plain_python():
    """The installer runs without QGIS (``python3 plugin/runner/engine_setup.py --home DIR``)."""
    path = PLUGIN / "runner" / "engine_setup.py"
    assert not [name for _, name in imports(path) if name.split(".")[0] in ("qgis", "PyQt5", "plugin", "engine")]


def test_the_rules_see_a_violation():
    """Relative imports resolve as Python resolves them, so a forbidden import cannot hide behind dots."""
    source = "from ...engine import cli\nfrom ...engine.contract import defaults\nfrom qgis.gui import QgsMapCanvas\n" \
             "from .. import settings\nfrom . import task\n"
    names = [name for _, name in imports(PLUGIN / "runner" / "probe.py", source)]
    assert "engine.cli" in names and "engine.contract.defaults" in names and "qgis.gui.QgsMapCanvas" in names
    assert "plugin.settings" in names and "plugin.runner.task" in names
