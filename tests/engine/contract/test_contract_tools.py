"""The tool declarations (engine.contract.tools) and what is derived from them: checks, command lines, outputs."""
from __future__ import annotations

from pathlib import Path

import pytest

from engine.contract import problems as P
from engine.contract.limits import MAX_K, MIN_K, MIN_TILE_PX
from engine.contract.params import (BOOL, CHOICE, TYPES, check, output_files, parse_length, parse_lengths,
                                    parse_value, to_argv)
from engine.contract.tools import TOOLS


def codes(problems) -> dict[str, str]:
    return {p.param: p.code for p in problems}


@pytest.mark.parametrize("name", sorted(TOOLS))
def test_every_declaration_is_complete(name):
    tool = TOOLS[name]
    assert tool.name == name and tool.summary and tool.description
    names = tool.names()
    assert len(names) == len(set(names)), "a parameter is declared twice"
    for p in tool.params:
        assert p.type in TYPES and p.help, f"{name} --{p.name} needs a type and a help text"
        if p.type == CHOICE and p.default is not None:
            assert p.default in p.choices
        if p.default is not None and p.type != BOOL and not p.required:
            assert parse_value(p, p.default) is not None or p.default in p.words, f"{name} {p.name} default"
        if p.applies_when:
            assert p.applies_when[0] in names
    for rule in tool.rules:
        assert set(rule.params) <= set(names), f"{name}: rule {rule.kind} names an unknown parameter"
    if tool.output_param:
        assert tool.output_param in names


@pytest.mark.parametrize("name", sorted(TOOLS))
def test_defaults_with_the_required_values_are_a_valid_request(name):
    tool = TOOLS[name]
    values = {p.name: "x" + p.suffixes[0] if p.suffixes else "x" for p in tool.params if p.required}
    for rule in tool.rules:         # one of several inputs needed (stats: a statistics input; similar: the query)
        if rule.kind in ("one_of", "any_of"):
            values[rule.params[0]] = "b.gpkg"
    for rule in tool.rules:         # and what that input requires (classify: the labels' class field)
        if rule.kind == "requires" and rule.params[0] in values:
            values.setdefault(rule.params[1], "x")
    if name == "train-seg":
        values["out"] = "m.pt"
    if name == "export":
        values["out"] = "folder"
    assert check(tool, values, files=False) == []


def test_k_bounds_are_the_limits_and_name_the_parameter():
    tool = TOOLS["cluster"]
    base = {"raster": "r.tif", "out": "o.gpkg"}
    assert check(tool, {**base, "k": MIN_K}, files=False) == []
    assert check(tool, {**base, "k": MAX_K}, files=False) == []
    for bad in (MIN_K - 1, MAX_K + 1, "eight", 2.5):
        (problem,) = check(tool, {**base, "k": bad}, files=False)
        assert (problem.param, problem.code) == ("k", P.OUT_OF_RANGE)
    (problem,) = check(TOOLS["sweep"], {**base, "k": f"{MIN_K - 1}..6"}, files=False)
    assert (problem.param, problem.code) == ("k", P.BAD_FORMAT)


def test_lengths_parse_as_the_engine_labels_them():
    assert parse_length("64px") == (64.0, "px") and parse_length("64") == (64.0, "px")
    assert parse_length("2.5 m") == (2.5, "m")
    assert parse_lengths("32px, 2.5m,32px") == ["32px", "2.5m"]
    with pytest.raises(ValueError, match="whole"):
        parse_length("2.5px")
    with pytest.raises(ValueError, match=str(MIN_TILE_PX)):
        parse_length(f"{MIN_TILE_PX - 1}px", minimum=MIN_TILE_PX)
    assert parse_length("0px", minimum=0) == (0.0, "px")


def test_deepcluster_options_are_checked_only_for_deepcluster():
    tool = TOOLS["cluster"]
    base = {"raster": "r.tif", "out": "o.gpkg", "epochs": 0, "lr": -1, "momentum": 1.0, "augment": "sepia"}
    assert check(tool, base, files=False) == []
    found = codes(check(tool, {**base, "method": "deepcluster"}, files=False))
    assert set(found) == {"epochs", "lr", "momentum", "augment"}
    assert found["epochs"] == found["lr"] == found["momentum"] == P.OUT_OF_RANGE
    assert check(tool, {**base, "method": "deepcluster", "epochs": 3, "lr": "auto", "momentum": 0.5,
                        "augment": "colour"}, files=False) == []


def test_rules_between_parameters():
    cluster = TOOLS["cluster"]
    base = {"raster": "r.tif", "out": "o.gpkg"}
    assert codes(check(cluster, {**base, "overlap": "64px"}, files=False)) == {"overlap": P.OUT_OF_RANGE}
    assert check(cluster, {**base, "overlap": "10m"}, files=False) == []          # another unit: the raster decides
    assert codes(check(cluster, {**base, "red_band": 3}, files=False)) == {"nir_band": P.REQUIRED}
    assert codes(check(TOOLS["sweep"], {**base, "overlap": "32px"}, files=False)) == {"overlap": P.OUT_OF_RANGE}
    assert codes(check(TOOLS["stats"], {"run": "r.gpkg"}, files=False)) == {"buildings": P.REQUIRED}


def test_file_checks(tmp_path):
    tool = TOOLS["cluster"]
    raster = tmp_path / "r.tif"
    raster.write_bytes(b"")
    out = tmp_path / "run.gpkg"
    assert check(tool, {"raster": str(raster), "out": str(out)}) == []
    assert codes(check(tool, {"raster": str(tmp_path / "no.tif"), "out": str(out)})) == {"raster": P.NOT_FOUND}
    assert codes(check(tool, {"raster": str(raster), "out": str(tmp_path / "no" / "run.gpkg")})) == {
        "out": P.NOT_FOUND}
    assert codes(check(tool, {"raster": str(raster), "out": str(tmp_path / "run.shp")})) == {"out": P.BAD_FORMAT}
    # any file the run would write counts, not only the GeoPackage
    (tmp_path / "run_clusters.tif").write_bytes(b"")
    (problem,) = check(tool, {"raster": str(raster), "out": str(out)})
    assert (problem.param, problem.code) == ("out", P.EXISTS) and "run_clusters.tif" in problem.message
    assert check(tool, {"raster": str(raster), "out": str(out), "overwrite": True}) == []
    folder = tmp_path / "export"
    folder.write_text("a file")
    assert codes(check(TOOLS["export"], {"run": str(out.with_name("x.gpkg")), "out": str(folder)})) == {
        "run": P.NOT_FOUND, "out": P.NOT_FOLDER}


def test_command_lines_hold_what_differs_from_the_defaults():
    tool = TOOLS["cluster"]
    argv = to_argv(tool, {"raster": "a.tif", "out": "o.gpkg", "k": 6, "tile_size": "2.5m", "epochs": 9,
                          "extent": (1, 2, 3, 4), "quicklook": False, "use_cache": False})
    assert argv == ["cluster", "a.tif", "--out", "o.gpkg", "--k", "6", "--tile-size", "2.5m",
                    "--extent", "1.0,2.0,3.0,4.0", "--no-quicklook", "--no-cache"]     # epochs: k-means ignores it
    argv = to_argv(tool, {"raster": "a.tif", "out": "o.gpkg", "method": "deepcluster", "lr": 0.01})
    assert argv[-4:] == ["--method", "deepcluster", "--lr", "0.01"]
    assert to_argv(TOOLS["predict"], {"model": "m.pt", "raster": "r.tif", "out": "o.gpkg"})[:3] == [
        "predict", "m.pt", "r.tif"]


def test_output_names_follow_the_declared_patterns(tmp_path):
    out = str(tmp_path / "sweep.gpkg")
    files = output_files(TOOLS["sweep"], {"out": out, "tile_size": "64px,2.5m", "buildings": "b.gpkg"})
    assert files["lineage_2.5m"] == Path(tmp_path / "sweep_lineage_2_5m.png")
    assert files["stats_eta_csv"].name == "sweep_stats_eta.csv"
    assert "stats_eta_csv" not in output_files(TOOLS["sweep"], {"out": out})
    files = output_files(TOOLS["cluster"], {"out": out, "quicklook": False, "save_model": "m.pt"})
    assert set(files) == {"gpkg", "tif", "manifest"}
    assert set(output_files(TOOLS["segment"], {"out": out, "probability": True})) == {
        "gpkg", "mask", "prob", "manifest"}


@pytest.mark.parametrize("overwrite", [False, True])
def test_an_output_that_is_an_input_is_refused_even_with_overwrite(tmp_path, overwrite):
    raster = tmp_path / "site_clusters.tif"
    raster.write_bytes(b"raster")
    (problem,) = check(TOOLS["cluster"], {"raster": str(raster), "out": str(tmp_path / "site.gpkg"),
                                          "overwrite": overwrite})
    assert (problem.param, problem.code) == ("out", P.CLASHES)
    gpkg = tmp_path / "image.gpkg"                      # a GeoPackage raster given as its own output
    gpkg.write_bytes(b"gpkg")
    (problem,) = check(TOOLS["cluster"], {"raster": str(gpkg), "out": str(gpkg), "overwrite": overwrite})
    assert problem.code == P.CLASHES
    link = tmp_path / "link.gpkg"                       # through a symlink
    link.symlink_to(gpkg)
    (problem,) = check(TOOLS["cluster"], {"raster": str(gpkg), "out": str(link), "overwrite": overwrite})
    assert problem.code == P.CLASHES
    mask = tmp_path / "x_mask.tif"
    mask.write_bytes(b"mask")
    model = tmp_path / "m.pt"
    model.write_bytes(b"model")
    (problem,) = check(TOOLS["segment"], {"raster": str(mask), "model": str(model), "out": str(tmp_path / "x.gpkg"),
                                          "overwrite": overwrite})
    assert (problem.param, problem.code) == ("out", P.CLASHES)


def test_a_finetuned_classify_run_has_its_own_progress_stages():
    """classify --finetune tunes before it describes the tiles: the bar follows validate, tune, features."""
    from engine.contract.progress import CLASSIFY_STAGES, FINETUNE_STAGES, progress_for

    plain = progress_for(["classify", "r.tif", "--labels", "l.gpkg", "--field", "c", "--out", "o.gpkg"])
    tuned = progress_for(["classify", "r.tif", "--labels", "l.gpkg", "--field", "c", "--finetune", "--out", "o.gpkg"])
    assert plain({"stage": "features", "done": 0, "total": 1}) == CLASSIFY_STAGES["features"][0]
    steps = [tuned({"stage": s, "done": 1, "total": 2}) for s in ("validate", "tune", "features", "classify")]
    assert steps == sorted(steps) and tuned({"stage": "features", "done": 0, "total": 1}) == \
        FINETUNE_STAGES["features"][0]
