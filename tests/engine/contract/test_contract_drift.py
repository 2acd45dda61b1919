"""Every face of a tool is its declaration (engine.contract.tools): the params values, argparse, the literals.

- each tool's params value (engine.tools.<tool>) has exactly the declared Python-API parameters, with the
  declared defaults, and the CLI runs it through ``run(params, progress)``;
- argparse has exactly the declared CLI parameters: flags, defaults, choices, required, on/off flags;
- no choice list or output-name pattern of the contract is written again elsewhere in the engine (MAX_K:
  tests/engine/contract/test_contract.py; the plugin is checked by tests/plugin).
"""
from __future__ import annotations

import argparse
import ast
import inspect
import re
from dataclasses import MISSING, fields

import pytest

from engine.cli import build_parser, main
from engine.cli.commands import COMMANDS
from engine.contract import defaults
from engine.contract import tools as declared
from engine.contract.params import BOOL, CHOICE, check
from engine.contract.tools import TOOLS
from tests.engine.helpers import REPO

NAMES = sorted(TOOLS)


def test_every_declared_tool_has_a_command_and_no_other():
    assert set(COMMANDS) == set(TOOLS)


@pytest.mark.parametrize("name", NAMES)
def test_params_value_is_the_declaration(name):
    params_class, run = COMMANDS[name].load()
    tool = TOOLS[name]
    api = {p.name: p for p in tool.params if p.api}
    own = {f.name: f for f in fields(params_class)}
    assert set(own) == set(api), f"{params_class.__name__} differs from the declaration of {name}"
    for field_name, f in own.items():
        param = api[field_name]
        if f.default is MISSING and f.default_factory is MISSING:
            assert param.required, f"{name}: {field_name} has no default but is not required"
        else:
            assert f.default == param.default, f"{name}: {field_name} defaults to {f.default!r}, " \
                                               f"declared {param.default!r}"
    assert list(inspect.signature(run).parameters) == ["params", "progress"]
    assert inspect.signature(run).parameters["progress"].default is None


def _actions(name: str) -> dict[str, argparse.Action]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "tool").choices[name]
    return {a.dest: a for a in sub._actions if a.dest != "help"}


@pytest.mark.parametrize("name", NAMES)
def test_argparse_is_the_declaration(name):
    tool = TOOLS[name]
    actions = _actions(name)
    assert set(actions) == {p.name for p in tool.params if p.cli}
    for param in tool.params:
        if not param.cli:
            continue
        action = actions[param.name]
        assert action.default == param.default, f"{name} {param.flag}"
        assert tuple(action.choices or ()) == (param.choices if param.type == CHOICE else ())
        if param.positional:
            assert action.option_strings == [] and action.metavar == param.flag
            continue
        assert action.option_strings == [param.flag] and action.required == param.required
        if param.type == BOOL:
            kind = argparse._StoreFalseAction if param.default else argparse._StoreTrueAction
            assert isinstance(action, kind), f"{name} {param.flag}"


@pytest.mark.parametrize("name", NAMES)
def test_every_default_passes_the_declared_checks(name):
    """What argparse hands over without options is a valid request (given the required values)."""
    tool = TOOLS[name]
    parsed = {dest: action.default for dest, action in _actions(name).items()}
    required = {p.name: "x" + p.suffixes[0] if p.suffixes else "d" if name == "export" else "x"
                for p in tool.params if p.required}
    # a tool that needs one of several inputs (stats: any statistics input; similar: the query) gets the first
    extra = {r.params[0]: "b.gpkg" for r in tool.rules if r.kind in ("one_of", "any_of")}
    extra |= {r.params[1]: "x" for r in tool.rules if r.kind == "requires" and r.params[0] in extra}
    assert check(tool, {**parsed, **required, **extra}, files=False) == []


def test_a_usage_error_is_one_line_naming_the_flag(capsys):
    assert main(["cluster", "r.tif", "--out", "o.gpkg", "--k", "abc"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "error: --k: 'abc' is not a whole number." and len(err) == 2 and "--help" in err[1]
    assert main(["sweep", "r.tif", "--out", "o.gpkg", "--method", "spectral"]) == 2
    assert capsys.readouterr().err.startswith("error: --method: 'spectral' is not one of kmeans, deepcluster.")


def test_a_declared_check_names_the_flag(tmp_path, capsys):
    raster = tmp_path / "r.tif"
    raster.write_bytes(b"")
    assert main(["cluster", str(raster), "--out", str(tmp_path / "o.gpkg"), "--k", "1"]) == 2
    assert capsys.readouterr().err == "error: --k: 1 is out of range: give a value between 2 and 254.\n"
    assert main(["cluster", str(tmp_path / "none.tif"), "--out", str(tmp_path / "o.gpkg")]) == 2
    assert capsys.readouterr().err == f"error: RASTER: {tmp_path / 'none.tif'} does not exist.\n"
    # a parameter that does not apply is not checked: --epochs is DeepCluster's
    assert main(["probe", str(raster), "--tile-size", "8px"]) == 2
    assert capsys.readouterr().err.startswith("error: --tile-size: '8px': tiles need at least")


# ----------------------------------------------------------------------------- one declaration per fact

CHOICE_LISTS = {name: value for name, value in vars(declared).items()          # DEEP is applies_when, no list
                if isinstance(value, tuple) and len(value) >= 2 and all(isinstance(v, str) for v in value)
                and name.isupper() and name != "DEEP"} | {"BACKBONES": defaults.BACKBONES,
                                                         "SEG_ENCODERS": defaults.SEG_ENCODERS,
                                                         "AUGMENTS": defaults.AUGMENTS}
OUTPUT_SUFFIXES = sorted({re.sub(r"\{(stem|tag)\}", "", o.pattern).split("_", 1)[-1]
                          for tool in TOOLS.values() for o in tool.outputs if o.pattern.startswith("{stem}_")}
                         | {"checkpoint.pt"})


def _sources(folder: str):
    contract = REPO / "engine" / "contract"
    for path in sorted((REPO / folder).rglob("*.py")):
        if contract not in path.parents:
            yield path


def choice_list_literals(folder: str) -> list[str]:
    """``file:line name`` of every tuple, list or set literal in ``folder`` that repeats a contract choice list
    (two of its words next to each other: ``("drop", "pad")``, ``["shp", "gpkg", "csv"]``)."""
    found = []
    for path in _sources(folder):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, (ast.Tuple, ast.List, ast.Set)):
                continue
            words = [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
            for name, choices in CHOICE_LISTS.items():
                if any(words[i:i + 2] == list(choices[j:j + 2]) for i in range(len(words) - 1)
                       for j in range(len(choices) - 1)):
                    found.append(f"{path.relative_to(REPO)}:{node.lineno} {name}")
    return found


def output_name_patterns(folder: str) -> list[str]:
    """``file:line text`` of every string that builds an output name the contract declares: an f-string part
    or a plain string starting with ``_mask.tif``, ``_manifest.json``... (prose in docstrings and messages,
    ``OUT_mask.tif``, is not a pattern)."""
    found = []
    for path in _sources(folder):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            parts = []
            if isinstance(node, ast.JoinedStr):
                parts = [v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str)]
            elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
                parts = [v.value for v in (node.left, node.right)
                         if isinstance(v, ast.Constant) and isinstance(v.value, str)]
            for text in parts:
                if any(text.startswith(("_" + s, "_{")) and text.lstrip("_").startswith(s.split("{")[0])
                       for s in OUTPUT_SUFFIXES):
                    found.append(f"{path.relative_to(REPO)}:{node.lineno} {text!r}")
    return found


def test_the_checks_find_what_they_look_for():
    assert {"METHODS", "EDGES", "EXPORT_FORMATS", "DEVICES", "PRECISIONS", "PROGRESS_MODES"} <= set(CHOICE_LISTS)
    assert {"mask.tif", "manifest.json", "clusters.tif", "stats.csv", "checkpoint.pt", "lineage_.png"} <= \
        set(OUTPUT_SUFFIXES)


def test_choice_lists_are_written_only_in_the_contract():
    assert choice_list_literals("engine") == []


def test_output_names_are_built_only_in_the_contract():
    assert output_name_patterns("engine") == []

