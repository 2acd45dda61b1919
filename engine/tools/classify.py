"""The ``classify`` tool: tiles classified from a few labelled places, or by a saved classifier.

Training (``--labels`` and ``--field``):

1. the checks before any work: the declared ones, the labels file, its class field (present; not a measurement
   with many values; at least ``MIN_LABELS`` labels per class), then, once the raster is cut, every label on a
   valid tile (``engine.analysis.classify``);
2. the features of every valid tile (``tile_features``: the cache ``cluster`` fills);
3. spatial cross-validation of the labelled tiles (held-out blocks, a one-tile buffer), then the classifier
   fitted on all labelled tiles gives every tile its class and a probability per class; with ``--finetune``
   each fold first tunes the CNN's last block on its own training tiles (``engine.analysis.finetune``), and
   the CNN tuned on all labelled tiles describes every tile (its weights go in the classifier file);
4. OUT.gpkg ('tiles' and 'classes'), the class GeoTIFF, the cross-validation scores and confusion matrix (CSV,
   PNG), the classifier file and the manifest, committed together.

Applying (``--model``): the saved classifier's tiling, bands and CNN cut and describe the raster, and step 3
is its prediction only.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass

import numpy as np

from ..contract import defaults
from ..contract import problems as P
from ..contract.params import output_files
from ..contract.tools import CLASSIFIERS, CLASSIFY
from ..errors import BadInput
from ..progress import Progress, committing
from . import check_params, check_vector_inputs, locked_outputs, param_values, study_params


@dataclass
class ClassifyParams:
    """A ``classify`` run: the fields and defaults ``contract.tools.CLASSIFY`` declares."""

    raster: str
    out: str
    labels: str | None = None
    field: str | None = None
    model: str | None = None
    classifier: str = CLASSIFIERS[0]
    folds: int = 5
    block: int | None = None
    finetune: bool = False
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


def read_labels(params: ClassifyParams):
    """(labels GeoDataFrame, class of each label as text): BadInput naming --labels or --field."""
    from ..analysis.classify import class_values
    from ..io.vectors import read_vector

    labels = read_vector(params.labels, "--labels", "labelled points or polygons")
    if params.field not in labels.columns:
        fields = [c for c in labels.columns if c != labels.geometry.name]
        raise BadInput(f"--field {params.field!r} is not a field of --labels {params.labels!r} (it has "
                       f"{', '.join(fields) or 'no fields'}).", param="field", code=P.BAD_FORMAT)
    labels = labels[labels[params.field].notna() & labels.geometry.notna() & ~labels.geometry.is_empty]
    classes = class_values(labels[params.field], params.field)
    return labels.loc[classes.index], classes


def run(params: ClassifyParams, progress: Progress | None = None) -> dict:
    """Run the ``classify`` tool; returns the manifest (also written to disk)."""
    check_params("classify", params)
    check_vector_inputs("classify", params)
    params = study_params("classify", params)
    labels = read_labels(params) if params.labels else None
    progress = progress or Progress("none")
    files = output_files(CLASSIFY, param_values(params))
    with locked_outputs(files.values()):
        return _run(params, progress, files, labels)


def _on_tiles(params, tiled, rows, cols, labels) -> tuple[np.ndarray, np.ndarray, list]:
    """Positions of the labelled tiles and their classes; BadInput when a label lies on no valid tile."""
    import shapely

    from ..analysis.classify import label_tiles
    from .cluster import tile_polygons

    frame, classes = labels
    geoms = shapely.make_valid(frame.to_crs(tiled.working_crs).geometry.to_numpy())
    positions, names, missed = label_tiles(tile_polygons(tiled, rows, cols), geoms, classes.to_numpy())
    if len(missed):
        first = frame.index[missed[0]]
        raise BadInput(f"--labels {params.labels!r}: {len(missed)} of {len(frame)} labels lie on no valid tile of "
                       f"the raster {params.raster!r} (off the raster, on nodata or outside --extent/--area; the "
                       f"first is feature {first}); move or remove them.", param="labels", code=P.NO_OVERLAP)
    return positions, names, sorted(set(classes))


def _run(params: ClassifyParams, progress, files: dict, labels) -> dict:
    import pandas as pd

    from ..analysis.classify import (TileClassifier, auto_block, class_report, confusion, confusion_figure,
                                     cross_validate, load_classifier, save_classifier)
    from ..io import OutputSet, versions, write_cluster_tif, write_gpkg_chunks, write_json
    from ..raster.tiling import TiledRaster
    from ..style import cluster_rgb
    from .cluster import Laps, input_record, tile_frames
    from .tile_features import select, tile_features

    lap = Laps()
    outset = OutputSet(files.values(), overwrite=params.overwrite)
    progress("open", 0, 0, f"opening {params.raster}")
    saved = None
    tiling = {k: getattr(params, k) for k in ("tile_size", "overlap", "edge", "bands")}
    if params.model:
        saved = load_classifier(params.model)
        tiling = {k: saved[2]["tiling"][k] for k in ("tile_size", "overlap", "edge", "bands")}
    with outset, TiledRaster(params.raster, tiling["tile_size"], tiling["overlap"], tiling["edge"], tiling["bands"],
                             seed=params.seed) as tiled, tempfile.TemporaryDirectory(prefix="urbanform-") as workdir:
        from ..features.extract import FeatureExtractor

        if saved is not None:
            meta = saved[2]
            extractor = FeatureExtractor(meta["backbone"], "none", params.device, params.precision,
                                         state_dict=saved[3])
            feature_params = _with(params, backbone=meta["backbone"], weights=f"classifier:{params.model}")
        else:
            extractor = FeatureExtractor(params.backbone, params.weights, params.device, params.precision,
                                         seed=params.seed)
            feature_params = params
        lap("open")
        g = tiled.grid
        rows, cols, valid = select(params, tiled, progress)
        record: dict = {}
        if saved is None:
            labelled, label_names, names = _on_tiles(params, tiled, rows, cols, labels)
        lap("scan")
        tuner = None
        if saved is None and params.finetune:
            # every fold tunes its own CNN on its training blocks; then the CNN tuned on all labels describes
            # every tile (not cached: the features are this run's own)
            from ..analysis.finetune import LastBlockTuner, tuned_features

            y = np.array([names.index(n) for n in label_names], dtype=np.int64)
            block = params.block or auto_block(g.n_rows, g.n_cols, params.folds)
            buffer = int(np.ceil(g.size / g.stride))
            progress("validate", 0, params.folds, f"spatial cross-validation, the last CNN block tuned in each of "
                                                  f"{params.folds} folds of {block} x {block} tile blocks")
            oof = cross_validate(None, y, rows[labelled], cols[labelled], params.classifier, block, params.folds,
                                 params.seed, buffer,
                                 features=tuned_features(tiled, rows[labelled], cols[labelled], y, extractor,
                                                         params.seed),
                                 progress=lambda i, n: progress("validate", i, n, f"fold {i} of {n}"))
            lap("validate")
            progress("tune", 0, 1, f"tuning the last CNN block on {len(y)} labelled tiles")
            tuner = LastBlockTuner(extractor, seed=params.seed).fit(
                tiled, rows[labelled], cols[labelled], y, progress=lambda i, n: progress("tune", i, n))
            extractor = tuner.extractor()
            lap("tune")
            feature_params = _with(params, use_cache=False)
        tf = tile_features(feature_params, tiled, extractor, workdir, progress, (rows, cols, valid))
        lap("features")
        if saved is None:
            X = np.asarray(tf.feats[labelled])
            y = np.array([names.index(n) for n in label_names], dtype=np.int64)
            block = params.block or auto_block(g.n_rows, g.n_cols, params.folds)
            buffer = int(np.ceil(g.size / g.stride))                # overlapping tiles: a wider ring of neighbours
            if tuner is None:
                progress("validate", 0, 1, f"spatial cross-validation: {params.folds} folds of {block} x {block} "
                                           "tile blocks")
                oof = cross_validate(X, y, rows[labelled], cols[labelled], params.classifier, block, params.folds,
                                     params.seed, buffer)
            report = class_report(y, oof.to_numpy(), names)
            matrix = confusion(y, oof.to_numpy(), names)
            if tuner is None:
                progress("validate", 1, 1, f"accuracy {report.loc['all', 'recall']:.3f}")
                lap("validate")
            model = TileClassifier(params.classifier, params.seed).fit(X, y)
            record = {"labels": int(len(y)), "labels_per_class": {n: int((y == i).sum()) for i, n in
                                                                   enumerate(names)},
                      "block_tiles": int(block), "buffer_tiles": buffer, "folds": params.folds,
                      "accuracy": float(report.loc["all", "recall"]),
                      "per_class": report.drop(index="all").reset_index().to_dict(orient="records"),
                      "unpredicted": int((oof.to_numpy() < 0).sum()), "finetune": bool(params.finetune)}
            if tuner is not None:
                from ..analysis.finetune import CROPS_PER_TILE

                record["tuning"] = {"epochs": tuner.epochs, "crops_per_tile": CROPS_PER_TILE,
                                    "losses": [round(v, 4) for v in tuner.losses_]}
        else:
            model, names, meta, _ = saved
            record = {"model": os.path.abspath(params.model), "trained_on": meta.get("raster"),
                      "finetune": bool(meta.get("finetune", False))}
        progress("classify", 0, 1, f"{model.classifier} on {len(rows)} tiles")
        k = len(names)
        proba = np.concatenate([model.predict_proba(tf.feats[s: s + 8192], k) for s in range(0, len(rows), 8192)]) \
            if len(rows) else np.zeros((0, k), np.float32)
        cls = proba.argmax(axis=1)
        progress("classify", 1, 1)
        lap("classify")

        progress("write", 0, 3, str(files["gpkg"]))
        columns = {"tile_id": tf.tile_ids, "row": rows.astype(np.int32), "col": cols.astype(np.int32),
                   "class_id": cls.astype(np.int32), "class": np.array(names, dtype=object)[cls],
                   "prob": proba.max(axis=1).astype(np.float32),
                   **{f"p_{i}": proba[:, i] for i in range(k)}}
        gpkg = outset.temp(files["gpkg"])
        write_gpkg_chunks(gpkg, "tiles", tile_frames(tiled, rows, cols, columns), tiled.crs.to_wkt())
        classes = pd.DataFrame({"class_id": np.arange(k, dtype=np.int32), "class": names,
                                "tiles": np.bincount(cls, minlength=k)})
        if saved is None:
            classes["labels"] = [int((y == i).sum()) for i in range(k)]
            classes["precision"] = report["precision"].to_numpy()[:k]
            classes["recall"] = report["recall"].to_numpy()[:k]
        import pyogrio

        pyogrio.write_dataframe(classes, str(gpkg), layer="classes", driver="GPKG", append=True)
        grid = np.full(g.shape, -1, dtype=np.int32)
        grid[rows, cols] = cls
        write_cluster_tif(outset.temp(files["tif"]), grid, g.cell_transform(), tiled.working_crs,
                          [cluster_rgb(i) for i in range(k)])
        progress("write", 1, 3)
        if saved is None:
            report.to_csv(outset.temp(files["cv_csv"]))
            matrix.to_csv(outset.temp(files["confusion_csv"]))
            confusion_figure(matrix, f"Spatial cross-validation: accuracy {record['accuracy']:.2f} "
                                     f"({len(y)} labelled tiles)").savefig(outset.temp(files["confusion_png"]),
                                                                           format="png", bbox_inches="tight")
            save_classifier(outset.temp(files["classifier"]), model, names, extractor.model.state_dict(),
                            {"backbone": params.backbone, "weights": params.weights, "raster":
                             os.path.abspath(params.raster), "tiling": {**tiling, "tile_px": g.size},
                             "finetune": bool(params.finetune)})
        progress("write", 2, 3)
        manifest = {
            "tool": "classify",
            "parameters": asdict(params),
            "inputs": input_record(params.raster, tiled, tf.checksum),
            "tiling": {**tiling, "bands": tiled.bands, "tile_px": g.size, "n_rows": g.n_rows, "n_cols": g.n_cols,
                       "tiles_valid": int(len(rows)), "warped": tiled.warped},
            "features": tf.record(),
            "classes": names,
            "class_sizes": np.bincount(cls, minlength=k).tolist(),
            "classify": {"classifier": model.classifier, **record},
            "outputs": {key: str(v) for key, v in files.items()},
            "versions": versions(),
        }
        manifest["timings_s"] = lap.total()
        write_json(outset.temp(files["manifest"]), manifest)
        with committing():
            outset.commit()
        progress("write", 3, 3, f"wrote {files['gpkg']}")
    return manifest


def _with(params, **changes):
    from dataclasses import replace

    return replace(params, **changes)
