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


# -- one declaration per fact (issue 12): limits, choice lists and output names come from engine.contract --------
def _docstrings(tree) -> set[int]:
    """ids of the docstring nodes of a module, its classes and functions (documentation may name files)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def _contract_facts():
    """The contract's choice lists, limits and output-name parts (through the ``urbanform`` package: a plain
    ``engine`` import here would look, to later tests, as if the plugin had imported the engine)."""
    import importlib

    defaults, limits, params, tools = (importlib.import_module(f"urbanform.engine.contract.{name}")
                                       for name in ("defaults", "limits", "params", "tools"))
    choices = {"METHODS": tools.METHODS, "DEVICES": tools.DEVICES, "PRECISIONS": tools.PRECISIONS,
               "WEIGHT_WORDS": tools.WEIGHT_WORDS, "EDGES": tools.EDGES, "EXPORT_FORMATS": tools.EXPORT_FORMATS,
               "PROGRESS_MODES": tools.PROGRESS_MODES, "LENGTH_UNITS": params.LENGTH_UNITS,
               "BACKBONES": defaults.BACKBONES, "SEG_ENCODERS": defaults.SEG_ENCODERS}
    numbers = {"MAX_K": limits.MAX_K, "CLUSTER_NODATA": limits.CLUSTER_NODATA, "MIN_TILE_PX": limits.MIN_TILE_PX,
               "MAX_EPOCHS": tools.MAX_EPOCHS, "SEG_CHIP_MULTIPLE": tools.SEG_CHIP_MULTIPLE}
    names = set()
    for tool in tools.TOOLS.values():
        for output in tool.outputs:
            if output.pattern.startswith("{stem}"):
                names.add(output.pattern[len("{stem}"):].split("{tag}")[0])      # _clusters.tif, _lineage_
    return choices, numbers, sorted(names)


# (file, what) that look like the contract's facts but are not: PyTorch builds of the installer, not devices
NOT_CONTRACT = {("runner/engine_setup.py", ("auto", "cpu", "cuda")), ("runner/engine_setup.py", ("cpu", "cuda")),
                ("processing/setupengine.py", ("auto", "cpu", "cuda"))}


def _duplicates(path: Path, source: str | None = None) -> list[str]:
    choices, numbers, names = _contract_facts()
    tree = ast.parse(path.read_text(encoding="utf-8") if source is None else source)
    docs = _docstrings(tree)
    rel = str(path.relative_to(PLUGIN))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            words = tuple(e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str))
            if len(words) >= 2 and len(words) == len(node.elts) and (rel, words) not in NOT_CONTRACT:
                for name, values in choices.items():
                    if set(words) <= set(values):
                        found.append(f"{rel}:{node.lineno} {words} copies {name}")
        elif isinstance(node, ast.Constant) and id(node) not in docs:
            if isinstance(node.value, str):
                found += [f"{rel}:{node.lineno} {node.value[:60]!r} names an output ({n!r})" for n in names
                          if n in node.value]
            elif isinstance(node.value, int) and not isinstance(node.value, bool):
                found += [f"{rel}:{node.lineno} {node.value} is {name}" for name, n in numbers.items()
                          if node.value == n]
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PLUGIN)))
def test_no_contract_fact_is_copied(urbanform, path):
    """No choice list, limit or output-name pattern of engine.contract is written again in plugin/ (docstrings may
    name files): the plugin imports them, so a change to a declaration reaches the dock and Processing."""
    found = _duplicates(path)
    assert not found, "write these once, in engine/contract, and import them:\n" + "\n".join(found)


def test_the_ui_files_hold_no_contract_limit(urbanform):
    """The panels' spin boxes take K and epoch bounds from the declarations (plugin/ui/bounds.py)."""
    _, numbers, _ = _contract_facts()
    for ui in sorted((REPO / "resources" / "ui").glob("*.ui")):
        text = ui.read_text(encoding="utf-8")
        for name in ("MAX_K", "MAX_EPOCHS"):
            assert f"<number>{numbers[name]}</number>" not in text, f"{ui.name} writes {name} again"


def test_the_copy_check_sees_a_copy(urbanform):
    source = 'METHODS = ("kmeans", "deepcluster")\nLIMIT = 254\npath = stem + "_manifest.json"\n' \
             'def f():\n    """OUT_manifest.json is documentation."""\n'
    found = _duplicates(PLUGIN / "requests" / "x.py", source)
    assert len(found) == 3 and "copies METHODS" in found[0] and "MAX_K" in found[1] and "_manifest.json" in found[2]
