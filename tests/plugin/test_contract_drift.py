"""The plugin cannot drift from the tool declarations (engine.contract.tools, issue 12).

- every Processing algorithm's contract-derived parameters have the declared bounds, default, choices, optional
  and advanced flags and help;
- every command line a request builds parses with the declared tool (each flag declared, each value accepted);
- requests and the engine name the same output files (fractional metre sweeps included) and refuse the same
  values with the same codes.
"""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "resources" / "sample" / "kampala_ug_oam_rgb_z19_epsg3857.tif"
BUILDINGS = REPO / "resources" / "sample" / "kampala_ug_osm_buildings.geojson"


@pytest.fixture(scope="module")
def contract(urbanform):
    from urbanform.engine.contract import params, problems, tools

    return params, problems, tools


def engine_algorithms(urbanform):
    from urbanform.plugin.provider import algorithm_classes

    return [cls for cls in algorithm_classes() if cls.TOOL]


def test_every_engine_algorithm_declares_its_tool_and_parameters(urbanform, contract):
    from urbanform.plugin.provider import algorithm_classes

    _, _, tools = contract
    engine = {cls.NAME: cls.TOOL for cls in algorithm_classes() if cls.TOOL}
    assert engine == {"cluster": "cluster", "deepcluster": "cluster", "sweep": "sweep", "predict": "predict",
                      "statistics": "stats", "export": "export", "trainsegmentation": "train-seg",
                      "segment": "segment", "evaluatesegmentation": "evaluate-seg", "report": "report",
                      "change": "change", "similar": "similar", "classify": "classify"}
    for cls in algorithm_classes():
        if cls.TOOL:
            assert cls.PARAMS and set(cls.PARAMS) <= set(tools.TOOLS[cls.TOOL].names()), cls.NAME
            assert set(cls.OPTIONS) <= set(cls.PARAMS), cls.NAME


@pytest.mark.parametrize("tool", ["change", "classify"])
def test_the_analyses_algorithms_expose_every_declared_parameter(urbanform, contract, tool):
    """Every parameter of change and classify is an algorithm parameter (Processing replaces its outputs: no
    overwrite; progress is the CLI's); the extent is QGIS's own parameter where the tool has one."""
    _, _, tools = contract
    cls = next(c for c in engine_algorithms(urbanform) if c.NAME == tool)
    alg = cls()
    alg.initAlgorithm()
    declared = {p.name for p in tools.TOOLS[tool].params if p.api} - {"overwrite", "extent"}
    if tool == "classify":                # classify: the tiling, area, weights and cache options are the CLI's
        declared &= {"raster", "labels", "field", "model", "classifier", "folds", "finetune", "tile_size",
                     "backbone", "device", "seed", "out"}
    assert declared <= set(cls.PARAMS), declared - set(cls.PARAMS)
    assert all(alg.parameterDefinition(alg.parameter_name(n)) is not None for n in declared)
    if "extent" in tools.TOOLS[tool].names() and tool == "change":
        assert alg.parameterDefinition("EXTENT") is not None


@pytest.mark.parametrize("index", range(13))
def test_processing_parameters_are_the_declarations(urbanform, contract, index):
    from qgis.core import (QgsProcessingParameterBoolean, QgsProcessingParameterDefinition,
                           QgsProcessingParameterEnum, QgsProcessingParameterNumber)

    params, _, tools = contract
    cls = engine_algorithms(urbanform)[index]
    alg = cls()
    alg.initAlgorithm()
    tool = tools.TOOLS[cls.TOOL]
    for name in cls.PARAMS:
        declared, options = tool.param(name), cls.OPTIONS.get(name, {})
        definition = alg.parameterDefinition(alg.parameter_name(name))
        where = f"{cls.NAME} {definition.name() if definition else name}"
        assert definition is not None, where
        assert definition.description().startswith(options.get("title", declared.title)), where
        assert definition.help() == declared.help, where
        advanced = bool(definition.flags() & QgsProcessingParameterDefinition.FlagAdvanced)
        assert advanced == declared.advanced, where
        optional = bool(definition.flags() & QgsProcessingParameterDefinition.FlagOptional)
        if declared.type in (params.INT, params.FLOAT):
            assert isinstance(definition, QgsProcessingParameterNumber), where
            integer = definition.dataType() == QgsProcessingParameterNumber.Integer
            assert integer == (declared.type == params.INT), where
            low, high = definition.minimum(), definition.maximum()
            assert low < -1e300 if declared.minimum is None else low == declared.minimum, where     # unbounded
            assert high > 1e300 if declared.maximum is None else high == declared.maximum, where
            default = declared.default if isinstance(declared.default, (int, float)) else None
            assert definition.defaultValue() == default and optional == (default is None), where
        elif declared.type == params.CHOICE:
            assert isinstance(definition, QgsProcessingParameterEnum), where
            labels = options.get("labels", {})
            assert set(labels) <= set(declared.choices), where
            assert definition.options() == [labels.get(c, c) for c in declared.choices], where
            assert declared.choices[int(definition.defaultValue())] == declared.default, where
        elif declared.type == params.BOOL:
            assert isinstance(definition, QgsProcessingParameterBoolean), where
            assert bool(definition.defaultValue()) == declared.default, where
        else:
            assert optional == (not declared.required), where
        if declared.suffixes:
            filters = definition.fileFilter() if hasattr(definition, "fileFilter") else ""
            assert all(f"*{s}" in filters for s in declared.suffixes) or declared.type == params.OUT_FILE, where


def _parse(tool, argv: list[str], params) -> dict:
    """A command line read back with the declaration alone: every flag declared, every value accepted."""
    assert argv[0] == tool.name
    positional = [p for p in tool.params if p.positional]
    by_flag = {p.flag: p for p in tool.params if not p.positional and p.cli}
    values = {p.name: v for p, v in zip(positional, argv[1:1 + len(positional)])}
    rest = argv[1 + len(positional):]
    while rest:
        flag = rest.pop(0)
        assert flag in by_flag, f"{tool.name}: {flag} is not declared"
        param = by_flag[flag]
        if param.type == params.BOOL:
            values[param.name] = not param.default
            continue
        value = rest.pop(0)
        params.parse_value(param, value)                   # raises on a value the engine would refuse
        values[param.name] = value
    return values


def sample_requests(tmp_path):
    from urbanform.plugin import requests as r

    out, model = str(tmp_path / "o.gpkg"), str(tmp_path / "m.pt")
    Path(model).write_bytes(b"")
    return [
        r.ClusterRequest(raster=str(SAMPLE), out=out),
        r.ClusterRequest(raster=str(SAMPLE), out=out, k=5, method=r.DEEPCLUSTER, epochs=2, lr=0.01, tile_size=20,
                         tile_unit="m", overlap=5, backbone=r.BACKBONES[0], weights="none", device=r.DEVICES[1],
                         seed=3, extent=(1, 2, 3, 4), buildings=str(BUILDINGS), batch_size=4, overwrite=True),
        r.SweepRequest(raster=str(SAMPLE), out=out),
        r.SweepRequest(raster=str(SAMPLE), out=out, k_text="2..4, 8", tile_sizes="2.5,5", tile_unit="m",
                       method=r.DEEPCLUSTER, epochs=2, resume=True, roads=str(BUILDINGS)),
        r.PredictRequest(model=model, raster=str(SAMPLE), out=out, resample=True, overwrite=True),
        r.StatsRequest(run=out, buildings=str(BUILDINGS), nir_band=4, red_band=1, road_field="fclass"),
        r.ExportRequest(run=out, out_dir=str(tmp_path), format=r.EXPORT_FORMATS[-1], overwrite=True),
        r.TrainSegRequest(raster=str(SAMPLE), buildings=str(BUILDINGS), out=model, chip=64, epochs=None, minutes=1.5,
                          val_fraction=0.3, chips_per_epoch=8, label_area=str(BUILDINGS), seed=2),
        r.SegmentRequest(raster=str(SAMPLE), model=model, out=out, overlap=16, threshold=0.4, probability=True,
                         min_area=2, simplify=0, regularize=True, resample=True),
        r.EvaluateSegRequest(pred=str(SAMPLE), truth=str(BUILDINGS), area=str(BUILDINGS)),
        r.ReportRequest(run=out, out=str(tmp_path / "r.html"), examples=3, seed=2, overwrite=True),
        r.ChangeRequest(model=model, raster_before=str(SAMPLE), raster_after=str(SAMPLE), out=out, resample=True),
        r.ChangeRequest(model=model, raster_before=str(SAMPLE), raster_after=str(SAMPLE), out=out, res_tolerance=0.2,
                        extent=(1, 2, 3, 4), area=str(BUILDINGS), device=r.DEVICES[1], precision="fp32",
                        batch_size=8),
        r.SimilarRequest(raster=str(SAMPLE), out=out, query_tiles="3,5", top=5, tile_size="20m", seed=1),
        r.SimilarRequest(raster=str(SAMPLE), out=out, query=str(BUILDINGS), backbone=r.BACKBONES[0]),
        r.ClassifyRequest(raster=str(SAMPLE), out=out, labels=str(BUILDINGS), field="building", classifier="forest",
                          folds=3, tile_size="20m", finetune=True),
        r.ClassifyRequest(raster=str(SAMPLE), out=out, model=model, overwrite=True),
    ]


def test_request_command_lines_parse_with_the_declared_tools(urbanform, contract, tmp_path):
    params, _, tools = contract
    for req in sample_requests(tmp_path):
        tool = tools.TOOLS[req.argv()[0]]
        assert tool is req.TOOL
        parsed = _parse(tool, req.argv(), params)
        if "progress" in tool.names():
            assert parsed["progress"] == "json", req.argv()
        assert params.check(tool, parsed, files=False) == [], (req.argv(), params.check(tool, parsed, files=False))


def test_requests_and_the_engine_name_the_same_files(urbanform, contract, tmp_path):
    from urbanform.engine.contract.outputs import sweep_layer_name
    from urbanform.plugin import requests as r

    params, _, tools = contract
    out = tmp_path / "s.gpkg"
    sweep = r.SweepRequest(raster=str(SAMPLE), out=str(out), tile_sizes="2.5,10", tile_unit="m", buildings="b.gpkg")
    assert sweep.outputs() == params.output_files(tools.TOOLS["sweep"], {"out": str(out), "tile_size": "2.5m,10m",
                                                                          "buildings": "b.gpkg"})
    assert [sweep_layer_name(label) for label in sweep.tile_labels()] == sweep.layer_names() == ["tiles_2_5m",
                                                                                                 "tiles_10m"]
    assert {"s_lineage_2_5m.png", "s_pca_2_5m.png", "s_stats_eta.csv"} <= {p.name for p in sweep.outputs().values()}
    for req in sample_requests(tmp_path):
        if isinstance(req, r.ExportRequest):
            continue                                     # a folder of files named after the run's layers
        assert req.outputs() == params.output_files(req.TOOL, req.values(), sizes=getattr(req, "tile_labels",
                                                                                       lambda: None)()), req


@pytest.mark.parametrize("k_text", ["1..4", "2..255", "0", "5..3", "a"])
def test_a_bad_k_list_is_refused_with_the_contracts_code(urbanform, contract, k_text, tmp_path):
    from urbanform.plugin import requests as r

    params, _, tools = contract
    req = r.SweepRequest(raster=str(SAMPLE), out=str(tmp_path / "s.gpkg"), k_text=k_text)
    (engine,) = params.check(tools.TOOLS["sweep"], {"raster": "r.tif", "out": "o.gpkg", "k": k_text}, files=False)
    assert [(p.param, p.code) for p in req.problems()] == [(engine.param, engine.code)]


@pytest.mark.parametrize("change", [{"k": 1}, {"k": 255}, {"epochs": 0, "method": "deepcluster"},
                                    {"tile_size": 8}, {"overlap": 64}, {"device": "tpu"}, {"backbone": "x"}])
def test_cluster_values_are_refused_with_the_contracts_codes(urbanform, contract, change, tmp_path):
    from dataclasses import replace

    from urbanform.plugin import requests as r

    params, _, tools = contract
    req = replace(r.ClusterRequest(raster=str(SAMPLE), out=str(tmp_path / "c.gpkg")), **change)
    engine = params.check(tools.TOOLS["cluster"], req.values(), files=False)
    assert engine and [(p.param, p.code) for p in req.problems()] == [(p.param, p.code) for p in engine]
