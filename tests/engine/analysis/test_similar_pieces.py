"""Similarity (engine.analysis.similar) on small arrays: centring, cosine, ranks, precision and query places."""
from __future__ import annotations

import numpy as np
import shapely
from shapely.geometry import Point, box

from engine.analysis.similar import (cosine_similarity, feature_mean, precision_at, query_vector, similarity_rank,
                                     tiles_at_places)


def test_cosine_of_centred_features_to_the_query_mean():
    feats = np.array([[2, 1], [2, 1.1], [0, 1], [0, 0.9]], np.float32)
    centre = feature_mean(feats, chunk=3)
    assert np.allclose(centre, [1, 1])
    sim = cosine_similarity(feats, query_vector(feats, [0], centre), centre, chunk=3)
    assert sim.name == "similarity" and sim[0] == 1 and sim[1] > 0.99 and sim[2] < -0.99
    rank = similarity_rank(sim, [True, False, False, False])
    assert rank.name == "rank" and rank.tolist() == [0, 1, 3, 2]
    assert precision_at(rank, [True, True, False, False], 1) == 1.0
    assert precision_at(rank, [True, True, False, False], 2) == 0.5


def test_the_tiles_under_points_and_polygons():
    tiles = np.array([box(x, y, x + 10, y + 10) for y in (0, 10) for x in (0, 10, 20)])
    places = np.array([Point(5, 5), Point(25, 15), box(9, 9, 21, 21), box(1, 11, 2, 12)])
    assert tiles_at_places(tiles, places[:2]).tolist() == [0, 5]
    assert tiles_at_places(tiles, places[2:3]).tolist() == [4]            # the tile whose centre it holds
    assert tiles_at_places(tiles, places[3:]).tolist() == [3]             # smaller than a tile: the tile it touches
    assert tiles_at_places(tiles, np.array([shapely.Point(100, 100)])).tolist() == []
