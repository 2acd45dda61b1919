"""The ``change`` tool: two dates of one place assigned to one saved model's clusters, tile by tile.

``run(ChangeParams(model=MODEL.pt, raster_before=A.tif, raster_after=B.tif, out=OUT.gpkg))``:

1. the checks: the declared ones, the model file, both rasters (the model's band count; the first date about the
   model's resolution, or ``resample``), and the two overlapping (``engine.raster.align``), before any work;
2. the first date is cut as the model's run was; the second is put on that same grid (a warped VRT when its CRS,
   resolution or extent differ) and cut alike; tiles valid on both dates are kept;
3. the features of both dates with the model's CNN, their clusters and the change score
   (``engine.analysis.change``);
4. OUT.gpkg (layer 'tiles'), the transition matrix (CSV, heatmap), the alluvial plot, a QGIS style and the
   manifest, committed together (``engine.io.OutputSet``).
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..contract import problems as P
from ..contract.params import output_files
from ..contract.tools import CHANGE
from ..errors import BadInput
from ..progress import Progress, committing
from . import check_params, check_vector_inputs, locked_outputs, param_values, study_params


@dataclass
class ChangeParams:
    """A ``change`` run: the fields and defaults ``contract.tools.CHANGE`` declares."""

    model: str
    raster_before: str
    raster_after: str
    out: str
    resample: bool = False
    res_tolerance: float = 0.1
    extent: str | None = None
    area: str | None = None
    device: str = "auto"
    precision: str = "auto"
    batch_size: int | None = None
    overwrite: bool = False


def check_after(model, raster_after: str) -> None:
    """The second date has the model's band count (its resolution does not matter: it is warped onto the grid)."""
    from ..raster.tiling import inspect_raster

    info = inspect_raster(raster_after, param="raster_after")
    n = model.tiling["n_bands"]
    if info.count != n:
        raise BadInput(f"RASTER_AFTER {raster_after!r} has {info.count} band(s) but the model was made for {n}-band "
                       "imagery; give an image of the same kind of sensor as the first date.",
                       param="raster_after", code=P.BAD_FORMAT)


def run(params: ChangeParams, progress: Progress | None = None) -> dict:
    """Run the ``change`` tool; returns the manifest (also written to disk)."""
    check_params("change", params)
    check_vector_inputs("change", params)
    params = study_params("change", params)
    progress = progress or Progress("none")
    files = output_files(CHANGE, param_values(params))
    with locked_outputs(files.values()):
        return _run(params, progress, files)


def reduced(model, feats, chunk: int = 8192) -> np.ndarray:
    """The model's reduced features (PCA, L2) of every row of ``feats``, chunk by chunk."""
    out = np.empty((len(feats), model.kmeans.n_components_), dtype=np.float32)
    for s in range(0, len(feats), chunk):
        out[s: s + chunk] = model.kmeans.reduce(feats[s: s + chunk])
    return out


def _run(params: ChangeParams, progress, files: dict) -> dict:
    from ..analysis.change import (alluvial_figure, change_qml, change_score, changed, heatmap_figure,
                                   transition_matrix, transition_table)
    from ..clustering.modelfile import load_model
    from ..features.extract import FeatureExtractor, extract_features
    from ..io import NpyFile, OutputSet, sha256_file, versions, write_gpkg_chunks, write_json
    from ..raster.align import absolute, aligned_raster
    from ..raster.tiling import TiledRaster, inspect_raster
    from ..style import PALETTE
    from .cluster import Laps, input_record, select_tiles, tile_frames
    from .predict import ResizedExtractor, check_compatible

    lap = Laps()
    outset = OutputSet(files.values(), overwrite=params.overwrite)
    progress("open", 0, 0, f"loading {params.model}")
    model = load_model(params.model)
    if model.form is not None:
        raise BadInput(f"model {params.model!r} was made with --form (building footprints joined to the CNN "
                       "features), which `change` cannot give for two dates; use a model made without --form.",
                       param="model", code=P.BAD_FORMAT)
    inspect_raster(params.raster_before, param="raster_before")      # a bad file is named as the first date
    try:
        plan = check_compatible(model, params.raster_before, params.resample, params.res_tolerance)
    except BadInput as exc:                # bands or resolution that do not fit the model: the first date's
        raise BadInput(str(exc), param=exc.param or "raster_before", code=exc.code or P.BAD_FORMAT) from None
    check_after(model, params.raster_after)
    t = model.tiling
    with outset, tempfile.TemporaryDirectory(prefix="urbanform-change-") as workdir, \
            TiledRaster(params.raster_before, plan["tile_size"], plan["overlap"], t["edge"], t["bands"]) as before:
        after_path, warped = aligned_raster(absolute(params.raster_after), before.dataset, workdir)
        with TiledRaster(after_path, plan["tile_size"], plan["overlap"], t["edge"], t["bands"]) as after:
            if after.grid.shape != before.grid.shape or after.grid.size != before.grid.size:
                raise BadInput(f"RASTER_AFTER {params.raster_after!r} could not be cut on the first date's tile grid "
                               f"({after.grid.shape} tiles of {after.grid.size} px against {before.grid.shape} of "
                               f"{before.grid.size} px).", param="raster_after", code=P.BAD_FORMAT)
            extractor = FeatureExtractor(model.backbone, "none", params.device, params.precision, sobel=model.sobel,
                                         state_dict=model.network, pool=model.pool, cnn_px=model.cnn_px,
                                         depth_weights=model.depth_weights)
            resize = t["tile_px"] if before.grid.size != t["tile_px"] else None
            lap("open")
            rows, cols, valid_a = select_tiles(before, t["min_valid"], params.extent, params.area, progress,
                                               params.raster_before)
            valid_b = after.valid_fraction()
            both = valid_b[rows, cols] >= t["min_valid"]
            if not both.any():
                raise BadInput(f"RASTER_AFTER {params.raster_after!r} has no valid tile where the first date has "
                               "one: the two images overlap too little (or the second is nodata there).",
                               param="raster_after", code=P.NO_OVERLAP)
            rows, cols = rows[both], cols[both]
            lap("scan")
            n = len(rows)
            source = ResizedExtractor(extractor, resize) if resize else extractor
            feats = []
            for date, tiled in enumerate((before, after)):
                progress("features", date * n, 2 * n, f"date {date + 1}: {model.backbone} on {extractor.device.type}")
                f = NpyFile(Path(workdir) / f"features_{date}.npy", shape=(n, extractor.dim))
                extract_features(tiled, rows, cols, source, f, batch_size=params.batch_size,
                                 progress=lambda d, total, m="", o=date * n: progress("features", o + d, 2 * n, m))
                feats.append(f)
            lap("features")
            progress("cluster", 0, 1, f"assigning both dates to the model's K={model.k} clusters")
            clust_a, dist_a, _ = model.kmeans.assign(feats[0])
            clust_b, dist_b, _ = model.kmeans.assign(feats[1])
            score = change_score(reduced(model, feats[0]), reduced(model, feats[1]))
            moved = changed(clust_a, clust_b)
            matrix = transition_matrix(clust_a, clust_b, model.k)
            progress("cluster", 1, 1)
            lap("cluster")

            progress("plots", 0, 2)
            colors = [PALETTE[i % len(PALETTE)] for i in range(model.k)]
            fig = heatmap_figure(matrix)
            fig.savefig(outset.temp(files["heatmap"]), format="png", bbox_inches="tight")
            fig = alluvial_figure(matrix, colors)
            fig.savefig(outset.temp(files["alluvial"]), format="png", bbox_inches="tight")
            progress("plots", 2, 2)
            progress("write", 0, 3, str(files["gpkg"]))
            g = before.grid
            columns = {"tile_id": (rows * g.n_cols + cols).astype(np.int64), "row": rows.astype(np.int32),
                       "col": cols.astype(np.int32), "clust_a": clust_a.astype(np.int32),
                       "clust_b": clust_b.astype(np.int32), "changed": moved.to_numpy(),
                       "chg_score": score.to_numpy(np.float32), "dist_a": dist_a.astype(np.float32),
                       "dist_b": dist_b.astype(np.float32)}
            write_gpkg_chunks(outset.temp(files["gpkg"]), "tiles", tile_frames(before, rows, cols, columns),
                              before.crs.to_wkt())
            progress("write", 1, 3)
            matrix.to_csv(outset.temp(files["transitions_csv"]))
            outset.temp(files["style"]).write_text(change_qml(float(np.quantile(score, 0.99)) if n else 1.0),
                                                   encoding="utf-8")
            progress("write", 2, 3)
            manifest = {
                "tool": "change",
                "parameters": asdict(params),
                "model": {"path": os.path.abspath(params.model), "sha256": sha256_file(params.model),
                          "method": model.method, "backbone": model.backbone, "k": model.k, "tiling": t},
                "inputs": {"raster_before": input_record(params.raster_before, before,
                                                         sha256_file(params.raster_before)),
                           "raster_after": {"raster": absolute(params.raster_after),
                                            "sha256": sha256_file(params.raster_after), "warped_onto_grid": warped}},
                "tiling": {**plan, "tile_px": g.size, "n_rows": g.n_rows, "n_cols": g.n_cols,
                           "tiles_valid": int(n), "warped": before.warped},
                "change": {"tiles": int(n), "changed": int(moved.sum()), "changed_share": float(moved.mean()),
                           "mean_score": float(score.mean()), "median_score": float(score.median()),
                           "transitions": transition_table(matrix).to_dict(orient="records"),
                           "cluster_sizes_a": np.bincount(clust_a, minlength=model.k).tolist(),
                           "cluster_sizes_b": np.bincount(clust_b, minlength=model.k).tolist()},
                "features": {"device": str(extractor.device), "precision": extractor.precision},
                "outputs": {k: str(v) for k, v in files.items()},
                "versions": versions(),
            }
            manifest["inputs"]["raster"] = manifest["inputs"]["raster_before"]["raster"]
            manifest["timings_s"] = lap.total()
            write_json(outset.temp(files["manifest"]), manifest)
            with committing():
                outset.commit()
            progress("write", 3, 3, f"wrote {files['gpkg']}")
    return manifest
