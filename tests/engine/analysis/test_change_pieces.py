"""Change between dates (engine.analysis.change) on small arrays: scores, transitions, plots and the QML style."""
from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np

from engine.analysis.change import (alluvial_figure, change_qml, change_score, changed, heatmap_figure,
                                    transition_matrix, transition_table)
from engine.analysis.images import figure_png


def test_score_and_changed_are_named_series():
    a = np.array([[1, 0], [0, 1], [1, 0]], np.float32)
    b = np.array([[1, 0], [1, 0], [-1, 0]], np.float32)
    score = change_score(a, b)
    assert score.name == "chg_score" and np.allclose(score, [0, np.sqrt(2), 2])
    moved = changed([0, 1, 2], [0, 2, 2])
    assert moved.name == "changed" and moved.tolist() == [0, 1, 0]


def test_transition_matrix_and_table():
    m = transition_matrix([0, 0, 1, 1, 1, 2], [0, 1, 1, 1, 2, 2], 4)
    assert m.shape == (4, 4) and m.to_numpy().sum() == 6 and m.loc[1, 1] == 2 and m.loc[3].sum() == 0
    table = transition_table(m)
    assert table.iloc[0].to_dict() == {"from": 1, "to": 1, "tiles": 2, "share": 2 / 3}
    assert table.tiles.sum() == 6 and (table.tiles > 0).all()


def test_plots_and_style():
    m = transition_matrix([0, 0, 1, 2, 2], [0, 1, 1, 2, 0], 3)
    for fig in (heatmap_figure(m), alluvial_figure(m, ["#1f78b4", "#33a02c", "#984ea3"])):
        assert figure_png(fig).startswith(b"\x89PNG")
    root = ET.fromstring(change_qml(1.2).split("\n", 1)[1])
    ranges = root.find("renderer-v2").find("ranges")
    assert root.find("renderer-v2").get("attr") == "chg_score" and len(ranges) == 5
    assert float(ranges[0].get("lower")) == 0 and float(ranges[-1].get("upper")) >= 1.2
