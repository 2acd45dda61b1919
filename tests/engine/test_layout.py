"""The engine's layout: imports flow one way, from the contract up to the CLI.

Order (a module may import its own package and the packages ranked below it):

    contract                       stdlib only (the QGIS plugin imports it)
    errors, style, progress        shared leaves (contract and stdlib only)
    io                             the atomic writer, writers, manifest, output locks, the checked vector reader
    raster                         tiling and windowed reading, areas (read through io's vector reader)
    features                       backbones, weights, extraction, batching
    stats < clustering < segmentation, analysis
                                   one tier; within it DeepCluster uses eta-squared (stats), the
                                   segmenter reads the model container (clustering), never the reverse;
                                   analysis (change, similarity, classification, the report) uses
                                   stats and clustering, and segmentation and analysis never each other
    distributed                    Dask partitions, the shared feature store, merging (used by tools)
    tools                          one module per tool; only the CLI imports them
    service                        the HTTP face (OGC API - Processes): runs tools as engine processes
    cli, __main__                  argument parsing and printing (``serve`` starts the service)

Every import of an engine module, at the top of a file or inside a function,
is checked, and every one must resolve to a module and names that exist.

The tests follow the same layout: tests/engine/<package>/ holds the tests of engine/<package>/, and
a test imports its helpers from a helpers module (tests/engine/helpers.py, tests/engine/<package>/helpers.py,
tests/plugin/helpers.py), never from another test module or from a conftest.
"""
from __future__ import annotations

import ast
import importlib
import sys
from importlib.util import resolve_name
from pathlib import Path

import pytest

from tests.engine.helpers import REPO

ENGINE = REPO / "engine"
TESTS = REPO / "tests"

RANK = {"__init__": 0, "contract": 0, "errors": 1, "style": 1, "progress": 1, "io": 2, "raster": 3,
        "features": 4, "stats": 5, "clustering": 6, "segmentation": 7, "analysis": 7, "distributed": 8, "tools": 9,
        "service": 10, "cli": 11, "__main__": 12}


def _modules():
    for path in sorted(ENGINE.rglob("*.py")):
        rel = path.relative_to(ENGINE.parent).with_suffix("")
        parts = list(rel.parts)
        is_pkg = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_pkg else parts)
        yield path, name, is_pkg


def _imports(path: Path, name: str, is_pkg: bool):
    """(line, absolute module, names) of every import in the file, nested ones included."""
    package = name if is_pkg else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, []
        elif isinstance(node, ast.ImportFrom):
            module = resolve_name("." * node.level + (node.module or ""), package) if node.level else node.module
            yield node.lineno, module, [a.name for a in node.names]


def _package(module: str) -> str:
    """The layout package of an engine module: ``engine.tools.cluster`` -> ``tools``; ``engine`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


MODULES = list(_modules())


def test_every_engine_module_has_a_rank():
    assert {_package(name) for _, name, _ in MODULES} <= set(RANK), "give the new package a rank in RANK"


@pytest.mark.parametrize("path,name,is_pkg", MODULES, ids=[m[1] for m in MODULES])
def test_imports_flow_one_way(path, name, is_pkg):
    own = _package(name)
    bad = []
    for line, module, names in _imports(path, name, is_pkg):
        top = module.split(".")[0]
        if own == "contract":
            # the plugin imports the contract inside QGIS: stdlib and the contract itself only
            if top != "__future__" and top not in sys.stdlib_module_names and not module.startswith("engine.contract"):
                bad.append(f"{path.name}:{line} imports {module} (the contract is stdlib only)")
            continue
        if top != "engine":
            continue
        targets = [module] if module != "engine" else [f"engine.{n}" for n in names if n != "__version__"] or [module]
        for target in targets:
            other = _package(target)
            if other == own or other == "__init__":
                continue
            if other not in RANK:
                bad.append(f"{path.name}:{line} imports {target}, which has no rank")
            elif RANK[other] >= RANK[own]:
                bad.append(f"{name}:{line} imports {target} ({own} may not import {other})")
            elif other == "tools" and own not in ("cli", "__main__"):
                bad.append(f"{name}:{line} imports {target} (only the CLI imports tools)")
    assert not bad, "\n".join(bad)


def test_every_engine_import_resolves():
    """Imports inside functions run late: a moved module must not leave one pointing nowhere."""
    missing = []
    for path, name, is_pkg in MODULES:
        for line, module, names in _imports(path, name, is_pkg):
            if module.split(".")[0] != "engine":
                continue
            try:
                mod = importlib.import_module(module)
            except ModuleNotFoundError as exc:
                missing.append(f"{name}:{line} {module}: {exc}")
                continue
            for n in names:
                if not hasattr(mod, n):
                    try:
                        importlib.import_module(f"{module}.{n}")
                    except ModuleNotFoundError:
                        missing.append(f"{name}:{line} {module} has no {n}")
    assert not missing, "\n".join(missing)


def test_the_layout_check_catches_a_wrong_way_import(tmp_path):
    """The rule itself: clustering importing a tool, or the contract importing numpy, is refused."""
    fake = tmp_path / "engine" / "clustering" / "bad.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("from ..tools.cluster import run_cluster\n")
    found = list(_imports(fake, "engine.clustering.bad", False))
    assert found == [(1, "engine.tools.cluster", ["run_cluster"])]
    assert RANK[_package("engine.tools.cluster")] >= RANK["clustering"]
    with pytest.raises(AssertionError, match="clustering may not import tools"):
        test_imports_flow_one_way(fake, "engine.clustering.bad", False)
    contract = tmp_path / "engine" / "contract" / "bad.py"
    contract.parent.mkdir(parents=True)
    contract.write_text("import numpy\n")
    with pytest.raises(AssertionError, match="the contract is stdlib only"):
        test_imports_flow_one_way(contract, "engine.contract.bad", False)


def test_synthetic_city_is_not_shipped():
    assert not (ENGINE / "synthetic.py").exists()


# ----------------------------------------------------------------------------- the tests' own layout


def _test_module(path: Path, root: Path = REPO) -> tuple[str, bool]:
    """The dotted name of a file below ``root``: ``tests/engine/cli/test_cli.py`` -> ``tests.engine.cli.test_cli``."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    is_pkg = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_pkg else parts), is_pkg


def _imports_of_test_modules(path: Path, root: Path = REPO) -> list[str]:
    """Imports in ``path`` of a test module (``test_*``) or of a conftest, relative or absolute, nested or not."""
    name, is_pkg = _test_module(path, root)
    bad = []
    for line, module, names in _imports(path, name, is_pkg):
        for target in [module] + [f"{module}.{n}" for n in names]:
            last = target.rpartition(".")[2]
            if last.startswith("test_") or last == "conftest":
                bad.append(f"{path.relative_to(root)}:{line} imports {target}")
                break
    return bad


TEST_FILES = sorted(TESTS.rglob("*.py"))


def test_no_test_imports_another_test_module_or_a_conftest():
    """Shared helpers live in helpers modules; a test module or conftest is never imported (pytest imports them)."""
    assert len(TEST_FILES) > 50
    bad = [problem for path in TEST_FILES for problem in _imports_of_test_modules(path)]
    assert not bad, "move what is shared into a helpers module:\n" + "\n".join(bad)


def test_the_test_import_check_catches_test_modules_and_conftest(tmp_path):
    fake = tmp_path / "tests" / "engine" / "cli" / "test_fake.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("from .test_cli import run_cli\n"
                    "from ..conftest import REPO\n"
                    "from tests.engine import conftest\n"
                    "from . import helpers, test_other\n"
                    "import tests.engine.test_lock\n"
                    "from tests.truth import eta_squared\n"
                    "from tests.engine.helpers import run_cli\n"
                    "def f():\n"
                    "    from tests.engine.cli.test_cli_stats import x\n")
    assert [line.split(" imports ")[1] for line in _imports_of_test_modules(fake, tmp_path)] == [
        "tests.engine.cli.test_cli", "tests.engine.conftest", "tests.engine.conftest", "tests.engine.cli.test_other",
        "tests.engine.test_lock", "tests.engine.cli.test_cli_stats"]


def test_engine_tests_mirror_the_engine_packages():
    """tests/engine/<package>/ exists only for an engine package, and is a package itself (its own __init__.py)."""
    folders = sorted(p for p in (TESTS / "engine").iterdir() if p.is_dir() and not p.name.startswith((".", "__")))
    assert folders, "the engine tests are grouped by package"
    for folder in folders:
        assert (ENGINE / folder.name / "__init__.py").is_file(), f"tests/engine/{folder.name}: no such engine package"
        assert (folder / "__init__.py").is_file(), f"tests/engine/{folder.name} needs an __init__.py"
    loose = sorted(p.name for p in (TESTS / "engine").glob("test_*.py"))
    # (the exceptions check the whole checkout or the test helpers, not one package)
    assert loose == ["test_layout.py", "test_lock.py", "test_static_checks.py", "test_synthetic.py"], \
        "put a package's tests in its folder"
