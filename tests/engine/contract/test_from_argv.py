"""from_argv is the inverse of to_argv: a command line back into named values (the plugin's remote runner sends
them to the service), for every tool's examples and for typical values of every parameter."""
from __future__ import annotations

import shlex

import pytest

from engine.contract import params as C
import re

from engine.contract.params import from_argv, parse_value, to_argv
from engine.contract.tools import TOOLS


def typical(param: C.Param):
    """A value of ``param`` other than its default, of the kind a form or a script gives (numbers, tuples, lists,
    paths with spaces)."""
    t = param.type
    if t == C.BOOL:
        return not param.default
    if t == C.INT:
        low = int(param.minimum or 0)
        step = param.multiple_of or 1
        value = (low // step + 2) * step
        return value if param.maximum is None or value <= param.maximum else int(param.maximum)
    if t == C.FLOAT:
        low, high = param.minimum or 0.0, param.maximum if param.maximum is not None else 10.0
        return low + (high - low) * 0.375
    if t == C.CHOICE:
        return param.choices[-1] if param.choices[-1] != param.default else param.choices[0]
    if t in C.INPUT_FILES:
        return f"in put/{param.name} file{param.suffixes[0] if param.suffixes else '.gpkg'}"
    if t == C.OUT_FILE:
        return f"out dir/{param.name}{param.suffixes[0] if param.suffixes else '.gpkg'}"
    if t in (C.OUT_FOLDER, C.FOLDER):
        return f"a folder/{param.name}"
    if t == C.TEXT and param.pattern:                     # the one patterned text so far: a Dask address
        assert re.fullmatch(param.pattern, "local:2"), param.name
        return "local:2"
    return {C.TEXT: "motorway,trunk road", C.K_LIST: [2, 3, 4, 8], C.SIZE: "20m", C.SIZES: "32px,2.5m",
            C.EXTENT: (-10.5, -2.0, 30.25, 4.0), C.BANDS: [3, 2, 1]}[t]


def same_value(param: C.Param, a, b) -> bool:
    """Whether two values mean the same to the engine (``6`` and ``"6"``; ``(1, 2)`` and ``"1.0,2.0"``)."""
    if param.type == C.BOOL:
        return a is b
    return parse_value(param, a) == parse_value(param, b)


@pytest.mark.parametrize("name", sorted(TOOLS))
def test_typical_values_survive_the_round_trip(name):
    tool = TOOLS[name]
    values = {p.name: typical(p) for p in tool.params if p.cli}
    argv = to_argv(tool, values)
    back = from_argv(tool, argv)
    assert to_argv(tool, back) == argv
    given = {p.name for p in tool.params if p.cli and C.applies(p, {**tool.defaults(), **values})}
    assert set(back) == given, set(back) ^ given
    for param in tool.params:
        if param.name in back:
            assert same_value(param, back[param.name], values[param.name]), param.name
    assert from_argv(tool, argv[1:]) == back                # the tool's name first is optional


@pytest.mark.parametrize("name", sorted(TOOLS))
def test_the_defaults_give_an_empty_command_line_and_no_values(name):
    tool = TOOLS[name]
    required = {p.name: typical(p) for p in tool.params if p.required or p.positional}
    back = from_argv(tool, to_argv(tool, required))
    assert set(back) == {n for n, v in required.items() if C.is_given(tool.param(n), v)
                         and (tool.param(n).cli or tool.param(n).positional)}


@pytest.mark.parametrize("example", [(t.name, e) for t in TOOLS.values() for e in t.examples], ids=lambda x: x[1][:60])
def test_every_example_reads_back(example):
    name, line = example
    words = shlex.split(line)
    assert words[:4] == ["python", "-m", "engine", name]
    tool = TOOLS[name]
    back = from_argv(tool, words[3:])
    again = from_argv(tool, to_argv(tool, back))
    for key, value in back.items():           # a value equal to its default is left out of the new line
        param = tool.param(key)
        if key in again:
            assert same_value(param, again[key], value), key
        else:
            assert same_value(param, value, param.default), key


def test_flags_inline_values_and_errors():
    tool = TOOLS["cluster"]
    values = from_argv(tool, ["cluster", "a.tif", "--out=o.gpkg", "--no-quicklook", "--no-cache", "--k", "6",
                              "--k", "7", "--extent", "-1,-2,3,4"])
    assert values == {"raster": "a.tif", "out": "o.gpkg", "quicklook": False, "use_cache": False, "k": "7",
                      "extent": "-1,-2,3,4"}
    assert from_argv(TOOLS["predict"], ["m.pt", "r.tif", "--out", "o.gpkg"]) == {
        "model": "m.pt", "raster": "r.tif", "out": "o.gpkg"}
    # several rasters are one study: a list, which to_argv writes back as the same positionals
    study = from_argv(TOOLS["predict"], ["m.pt", "a.tif", "b.tif", "--out", "o.gpkg", "c.tif"])
    assert study == {"model": "m.pt", "raster": ["a.tif", "b.tif", "c.tif"], "out": "o.gpkg"}
    assert to_argv(TOOLS["predict"], study)[:5] == ["predict", "m.pt", "a.tif", "b.tif", "c.tif"]
    with pytest.raises(ValueError, match="unexpected argument 'b.gpkg'"):
        from_argv(TOOLS["report"], ["a.gpkg", "b.gpkg", "--out", "r.html"])
    for argv, words in ((["a.tif", "--colour", "red"], "unknown option --colour"),
                        (["a.tif", "--out"], "--out needs a value"), ([], "RASTER is missing"),
                        (["a.tif", "--no-quicklook=1"], "takes no value")):
        with pytest.raises(ValueError, match=words):
            from_argv(tool, argv)
