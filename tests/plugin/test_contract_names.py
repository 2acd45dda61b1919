"""The plugin's K limits, K parser and output names are engine.contract's (the engine's, in QGIS)."""
from __future__ import annotations


import pytest

from .helpers import SAMPLE

# the same text gets the same answer in tests/engine/contract/test_contract.py (the engine's ``sweep --k``)
K_TEXTS = {"2..12": list(range(2, 13)), "2,4,6": [2, 4, 6], "2..6,8,12": [2, 3, 4, 5, 6, 8, 12],
           " 4 , 2,2..3 ": [2, 3, 4], "2..254": list(range(2, 255)), "1..4": "between 2 and 254",
           "2..255": "between 2 and 254", "0": "between 2 and 254", "5..3": "runs backwards",
           "a,b": "not a K value", "": "Give the K values", "2,,3": "not a K value", "2.5": "not a K value"}


@pytest.fixture(scope="module")
def contract(urbanform):
    from urbanform.engine.contract import limits, outputs

    return limits, outputs


@pytest.mark.parametrize("text", list(K_TEXTS))
def test_k_text_gets_the_contracts_answer(urbanform, contract, text, tmp_path):
    from urbanform.plugin import requests as request

    limits, _ = contract
    expected = K_TEXTS[text]
    req = request.SweepRequest(raster=str(SAMPLE), out=str(tmp_path / "s.gpkg"), k_text=text)
    if isinstance(expected, list):
        assert request.parse_k(text) == limits.parse_k_values(text) == req.ks() == expected
        assert req.problems() == []
    else:
        with pytest.raises(ValueError, match=expected) as refused:
            limits.parse_k_values(text)
        with pytest.raises(ValueError) as plugin_refused:
            request.parse_k(text)
        assert str(plugin_refused.value) == str(refused.value)
        assert any(str(refused.value) in str(p) for p in req.problems()), req.problems()


def test_k_limits_are_the_contracts(urbanform, contract, tmp_path):
    from urbanform.plugin import requests as request
    from urbanform.plugin.processing.cluster import HELP, K, ClusterAlgorithm

    limits, _ = contract
    assert (request.MIN_K, request.MAX_K) == (limits.MIN_K, limits.MAX_K) == (2, 254)
    alg = ClusterAlgorithm()
    alg.initAlgorithm()
    param = alg.parameterDefinition(K)
    assert (param.minimum(), param.maximum()) == (limits.MIN_K, limits.MAX_K)
    assert f"{limits.MIN_K} to {limits.MAX_K}" in HELP
    ok = dict(raster=str(SAMPLE), out=str(tmp_path / "c.gpkg"))
    assert request.ClusterRequest(**ok, k=limits.MAX_K).problems() == []
    too_many = request.ClusterRequest(**ok, k=limits.MAX_K + 1).problems()
    assert any(f"between 2 and {limits.MAX_K}" in str(p) for p in too_many), too_many


def test_min_tile_px_is_the_contracts(urbanform, contract, tmp_path):
    from urbanform.plugin import requests as request
    from urbanform.plugin.processing import cluster, sweep

    limits, _ = contract
    small = limits.MIN_TILE_PX
    assert request.parse_sizes(f"{small},64", "px") == [small, 64]
    with pytest.raises(ValueError, match=f"at least {small} px"):
        request.parse_sizes(str(small - 1), "px")
    ok = dict(raster=str(SAMPLE), out=str(tmp_path / "c.gpkg"))
    assert request.ClusterRequest(**ok, tile_size=small).problems() == []
    (problem,) = request.ClusterRequest(**ok, tile_size=small - 1).problems()
    assert (problem.param, problem.code) == ("tile_size", "out_of_range") and f"at least {small} px" in str(problem)
    assert f"(at least {small})" in cluster.HELP and f"(pixels, at least {small}, or" in " ".join(sweep.HELP.split())


def test_fractional_metre_sweep_names_are_the_engines(urbanform, contract, tmp_path):
    """'2.5m' tiles: the engine writes tiles_2_5m and s_lineage_2_5m.png; the plugin looks for the same."""
    from urbanform.plugin import requests as request
    from urbanform.plugin.layers.clusters import _size_key

    _, outputs = contract
    req = request.SweepRequest(raster=str(SAMPLE), out=str(tmp_path / "s.gpkg"), tile_sizes="2.5,5", tile_unit="m")
    labels = ["2.5m", "5m"]
    assert req.tile_labels() == labels and req.argv()[req.argv().index("--tile-size") + 1] == "2.5m,5m"
    assert req.layer_names() == [outputs.sweep_layer_name(label) for label in labels] == ["tiles_2_5m", "tiles_5m"]
    assert req.outputs() == outputs.sweep_outputs(tmp_path / "s.gpkg", labels)
    assert {"s_lineage_2_5m.png", "s_pca_2_5m.png", "s_lineage_5m.png"} <= {p.name for p in req.plots()}
    from urbanform.plugin.ui.plots import plot_title

    assert [plot_title(p, "s") for p in req.plots()] == ["metrics", "lineage 2.5m", "pca 2.5m", "lineage 5m", "pca 5m"]
    assert sorted(["tiles_10m", "tiles_5m", "tiles_2_5m"], key=_size_key) == ["tiles_2_5m", "tiles_5m", "tiles_10m"]
    cluster = request.ClusterRequest(raster=str(SAMPLE), out=str(tmp_path / "c.gpkg"))
    assert cluster.outputs() == outputs.cluster_outputs(tmp_path / "c.gpkg")
    assert request.PredictRequest("m.pt", str(SAMPLE), str(tmp_path / "c.gpkg")).outputs() == \
        {k: v for k, v in outputs.cluster_outputs(tmp_path / "c.gpkg").items() if k != "model"}
