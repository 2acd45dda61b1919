"""Few-shot classification pieces (engine.analysis.classify): classes, spatial folds, scores."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from engine.analysis.classify import (TileClassifier, auto_block, class_report, class_values, confusion,
                                      spatial_blocks, spatial_folds)
from engine.errors import BadInput


def test_spatial_folds_hold_out_blocks_and_keep_their_neighbours_out_of_training():
    rows, cols = np.indices((12, 12)).reshape(2, -1)
    assert spatial_blocks(rows, cols, 4).nunique() == 9 and auto_block(12, 12, 3) == 3
    folds = spatial_folds(rows, cols, block=4, folds=3, seed=0)
    tested = np.concatenate([test for _, test in folds])
    assert sorted(tested.tolist()) == list(range(144))                 # every tile is tested once
    for train, test in folds:
        assert not set(train) & set(test)
        gap = np.maximum(np.abs(rows[train][:, None] - rows[test][None]), np.abs(cols[train][:, None] -
                                                                               cols[test][None]))
        assert gap.min() >= 2                                          # no training tile touches a test tile


def test_class_values_refuse_few_labels_and_measurements():
    assert class_values(pd.Series([1.0, 1.0, 1.0, 2.0, 2.0, 2.0]), "code").tolist() == ["1"] * 3 + ["2"] * 3
    with pytest.raises(BadInput, match="fewer than 3 labels") as exc:
        class_values(pd.Series(["a", "a", "a", "b", "b"]), "kind")
    assert exc.value.param == "labels"
    with pytest.raises(BadInput, match="numeric with 60 distinct values") as exc:
        class_values(pd.Series(np.arange(60) * 0.5), "height")
    assert exc.value.param == "field"
    with pytest.raises(BadInput, match="one class only"):
        class_values(pd.Series(["a"] * 5), "kind")


def test_classifier_scores_and_confusion():
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(0, 1, (10, 5)), rng.normal(4, 1, (10, 5))])
    y = np.repeat([0, 1], 10)
    for kind in ("logreg", "forest"):
        model = TileClassifier(kind).fit(X, y)
        proba = model.predict_proba(X, 3)
        assert proba.shape == (20, 3) and np.allclose(proba.sum(1), 1) and (proba[:, 2] == 0).all()
        assert (model.predict(X) == y).mean() >= 0.9
    report = class_report([0, 0, 1, 1], [0, 1, 1, -1], ["a", "b"])
    assert report.loc["a", "precision"] == 1 and report.loc["a", "recall"] == 0.5
    assert report.loc["all", "recall"] == 0.5 and report.loc["b", "labels"] == 2
    m = confusion([0, 0, 1, 1], [0, 1, 1, -1], ["a", "b"])
    assert m.columns.tolist() == ["a", "b", "none"] and m.loc["b", "none"] == 1
