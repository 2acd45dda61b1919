"""The ``similar`` tool: every tile of a raster scored by how much it looks like a few query tiles.

``run(SimilarParams(raster=IMG.tif, out=OUT.gpkg, query_tiles="12,40"))`` (or ``query=PLACES.gpkg``):

1. the checks (declared, the query file's header, the query tile ids' form) before any work;
2. the raster is cut as ``cluster`` cuts it and the features come from the same cache (``tile_features``);
3. the query tiles are found (ids on the grid, or the tiles under the places, reprojected), then the cosine
   similarity of every tile to their mean (``engine.analysis.similar``) and its rank;
4. OUT.gpkg (layer 'tiles'), the similarity GeoTIFF, OUT_top.csv, OUT_live.npz (the features on their first
   principal axes, for the dock's live updates as query tiles are clicked) and the manifest, committed together.
"""
from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass

import numpy as np

from ..contract import defaults
from ..contract import problems as P
from ..contract.params import output_files
from ..contract.tools import SIMILAR
from ..errors import BadInput
from ..progress import Progress, committing
from . import check_params, check_vector_inputs, locked_outputs, param_values, study_params


@dataclass
class SimilarParams:
    """A ``similar`` run: the fields and defaults ``contract.tools.SIMILAR`` declares."""

    raster: str
    out: str
    query: str | None = None
    query_tiles: str | None = None
    top: int = 20
    tile_size: str = "64px"
    overlap: str = "0px"
    edge: str = "drop"
    min_valid: float = 0.5
    bands: str | None = None
    extent: str | None = None
    area: str | None = None
    backbone: str = defaults.DEFAULT_BACKBONE
    weights: str = defaults.DEFAULT_WEIGHTS
    device: str = "auto"
    precision: str = "auto"
    batch_size: int | None = None
    seed: int = 0
    cache_dir: str | None = None
    use_cache: bool = True
    overwrite: bool = False


def parse_tile_ids(text: str) -> list[int]:
    """'12, 40' -> [12, 40], or BadInput naming --query-tiles."""
    try:
        ids = sorted({int(t) for t in str(text).replace(" ", "").split(",") if t != ""})
    except ValueError:
        ids = []
    if not ids or min(ids) < 0:
        raise BadInput(f"--query-tiles {text!r}: give tile ids (whole numbers from 0) separated by commas, e.g. "
                       "'12,40'.", param="query_tiles", code=P.BAD_FORMAT)
    return ids


def query_positions(params, tiled, tile_ids: np.ndarray, rows, cols) -> np.ndarray:
    """Positions (in the valid tiles) of the query: the given ids, or the tiles under the query places."""
    if params.query_tiles:
        wanted = parse_tile_ids(params.query_tiles)
        where = {int(t): i for i, t in enumerate(tile_ids)}
        missing = [t for t in wanted if t not in where]
        if missing:
            g = tiled.grid
            raise BadInput(f"--query-tiles: tile(s) {', '.join(map(str, missing[:5]))} are not valid tiles of this "
                           f"raster and tiling ({g.n_rows} x {g.n_cols} tiles, ids 0 to {len(g) - 1}; "
                           f"{len(tile_ids)} valid). Take ids from the tile_id of a run with the same tiling.",
                           param="query_tiles", code=P.OUT_OF_RANGE)
        return np.array([where[t] for t in wanted], dtype=np.int64)
    import shapely

    from ..analysis.similar import tiles_at_places
    from ..io.vectors import read_vector
    from .cluster import tile_polygons

    places = read_vector(params.query, "--query", "points or polygons on the places to look for")
    geoms = shapely.make_valid(places.to_crs(tiled.working_crs).geometry.to_numpy())
    geoms = geoms[~shapely.is_empty(geoms)]
    found = tiles_at_places(tile_polygons(tiled, rows, cols), geoms) if len(geoms) else np.array([], np.int64)
    if not len(found):
        raise BadInput(f"--query {params.query!r}: none of its {len(places)} places lies on a valid tile of the raster "
                       f"{params.raster!r}; check that both cover the same place.", param="query",
                       code=P.NO_OVERLAP)
    return found


def run(params: SimilarParams, progress: Progress | None = None) -> dict:
    """Run the ``similar`` tool; returns the manifest (also written to disk)."""
    check_params("similar", params)
    check_vector_inputs("similar", params)
    params = study_params("similar", params)
    if params.query_tiles:
        parse_tile_ids(params.query_tiles)
    progress = progress or Progress("none")
    files = output_files(SIMILAR, param_values(params))
    with locked_outputs(files.values()):
        return _run(params, progress, files)


def _run(params: SimilarParams, progress, files: dict) -> dict:
    import pandas as pd

    from ..analysis.similar import (cosine_similarity, feature_mean, principal_features, query_vector,
                                    similarity_rank, write_live)
    from ..contract.tools import LIVE_DIMS
    from ..io import OutputSet, versions, write_gpkg_chunks, write_json, write_value_tif
    from ..raster.tiling import TiledRaster
    from .cluster import Laps, input_record, tile_frames
    from .tile_features import open_extractor, select, tile_features

    lap = Laps()
    outset = OutputSet(files.values(), overwrite=params.overwrite)
    progress("open", 0, 0, f"opening {params.raster}")
    with outset, TiledRaster(params.raster, params.tile_size, params.overlap, params.edge, params.bands,
                             seed=params.seed) as tiled, tempfile.TemporaryDirectory(prefix="urbanform-") as workdir:
        extractor = open_extractor(params)
        lap("open")
        g = tiled.grid
        # the query first: a wrong id or a place off the raster is said before the features are computed
        rows, cols, valid = select(params, tiled, progress)
        ids = rows.astype(np.int64) * g.n_cols + cols
        query = query_positions(params, tiled, ids, rows, cols)
        lap("scan")
        tf = tile_features(params, tiled, extractor, workdir, progress, (rows, cols, valid))
        lap("features")
        progress("similar", 0, 1, f"{len(query)} query tile(s)")
        centre = feature_mean(tf.feats)
        similarity = cosine_similarity(tf.feats, query_vector(tf.feats, query, centre), centre)
        is_query = np.zeros(len(ids), dtype=bool)
        is_query[query] = True
        rank = similarity_rank(similarity, is_query)
        progress("similar", 1, 1)
        lap("similar")
        live = principal_features(tf.feats, centre, LIVE_DIMS)
        progress("write", 0, 3, str(files["gpkg"]))
        columns = {"tile_id": ids, "row": rows.astype(np.int32), "col": cols.astype(np.int32),
                   "similarity": similarity.to_numpy(), "rank": rank.to_numpy(),
                   "query": is_query.astype(np.int8)}
        write_gpkg_chunks(outset.temp(files["gpkg"]), "tiles", tile_frames(tiled, rows, cols, columns),
                          tiled.crs.to_wkt())
        grid = np.full(g.shape, np.nan, dtype=np.float32)
        grid[rows, cols] = similarity.to_numpy()
        write_value_tif(outset.temp(files["tif"]), grid, g.cell_transform(), tiled.working_crs, "similarity")
        progress("write", 1, 3)
        top = np.flatnonzero((rank.to_numpy() >= 1) & (rank.to_numpy() <= params.top))
        top = top[np.argsort(rank.to_numpy()[top])]
        centres = g.corners(rows[top], cols[top]).mean(axis=1)
        pd.DataFrame({"rank": rank.to_numpy()[top], "tile_id": ids[top], "row": rows[top], "col": cols[top],
                      "similarity": similarity.to_numpy()[top], "x": centres[:, 0], "y": centres[:, 1]}
                     ).to_csv(outset.temp(files["top_csv"]), index=False)
        write_live(outset.temp(files["live"]), ids, live)
        progress("write", 2, 3)
        manifest = {
            "tool": "similar",
            "parameters": asdict(params),
            "inputs": input_record(params.raster, tiled, tf.checksum),
            "tiling": {"tile_size": str(params.tile_size), "overlap": str(params.overlap), "edge": params.edge,
                       "bands": tiled.bands, "tile_px": g.size, "n_rows": g.n_rows, "n_cols": g.n_cols,
                       "tiles_valid": int(len(ids)), "warped": tiled.warped},
            "features": tf.record(),
            "similar": {"query_tiles": ids[query].tolist(), "top": ids[top].tolist(),
                        "mean_similarity": float(similarity.mean()),
                        "top_similarity": float(similarity.to_numpy()[top].mean()) if len(top) else None},
            "outputs": {k: str(v) for k, v in files.items()},
            "versions": versions(),
        }
        manifest["timings_s"] = lap.total()
        write_json(outset.temp(files["manifest"]), manifest)
        with committing():
            outset.commit()
        progress("write", 3, 3, f"wrote {files['gpkg']}")
    return manifest
