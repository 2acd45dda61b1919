"""The pieces of the HTML report (engine.analysis.report, engine.analysis.images), without a run."""
from __future__ import annotations

import io

import numpy as np
import pandas as pd

from engine.analysis.images import data_uri, grid_thumbnail, highlight_colors, png_bytes
from engine.analysis.report import Section, document, gallery_picks, table


def test_gallery_picks_the_closest_then_others_at_random():
    dist = np.array([0.5, 0.1, 0.9, 0.1, 0.3, 0.7, 0.2])
    closest, random_ = gallery_picks(dist, 3, seed=1)
    assert closest.tolist() == [1, 3, 6]                              # smallest first, ties by position
    assert len(random_) == 3 and not set(random_) & set(closest)
    assert gallery_picks(dist, 3, seed=1)[1].tolist() == random_.tolist()     # seeded
    few_closest, few_random = gallery_picks(dist[:2], 3)
    assert sorted(few_closest.tolist()) == [0, 1] and len(few_random) == 0


def test_png_of_a_tile_and_of_a_grid_thumbnail():
    from matplotlib.image import imread

    tile = np.zeros((3, 8, 8), np.uint8)
    tile[0] = 200
    back = imread(io.BytesIO(png_bytes(tile)), format="png")
    assert back.shape[:2] == (8, 8) and np.allclose(back[..., 0], 200 / 255) and np.allclose(back[..., 1], 0)
    colours = highlight_colors(np.array([0, 1, 1]), 1, "#ff0000")
    thumb = grid_thumbnail((2, 3), [0, 0, 1], [0, 2, 1], colours, max_side=30)
    assert thumb.shape == (20, 30, 3)                                 # 10 px per cell
    assert tuple(thumb[0, 25]) == (255, 0, 0) and tuple(thumb[0, 0]) == (236, 236, 236)
    assert tuple(thumb[0, 15]) == (255, 255, 255)                     # no tile there
    assert data_uri(b"abc") == "data:image/png;base64,YWJj"


def test_document_escapes_text_and_links_only_inside_itself():
    frame = pd.DataFrame({"eta2": [0.123456, float("nan")]}, index=pd.Index(["<b>", "x"], name="stat"))
    text = document("a <title>", "sub & title", [Section("S", table(frame), anchor="s")])
    assert "&lt;b&gt;" in text and "<b>" not in text and "0.123" in text and "–" in text
    assert 'href="#s"' in text and "http" not in text and "&lt;title&gt;" in text
