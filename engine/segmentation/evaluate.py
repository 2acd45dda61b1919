"""How good a building map is: pixel and object scores against truth footprints.

``evaluate(pred, truth, area=None)``:

- ``pred`` a mask GeoTIFF (pixels > 0 are buildings; nodata pixels are not
  scored) or a vector file of building polygons; ``truth`` footprints (any
  CRS, reprojected); ``area`` optional polygons limiting where scores count.
- Pixel scores: IoU, accuracy, precision, recall, F1. For a mask they are
  counted in pixels, block by block (truth rasterised on the mask's grid, pixel
  centres); for a vector prediction they are exact areas in m2 (local UTM for
  geographic / Web Mercator data) over ``area`` or, without it, over the
  extent of the raster it was mapped from (OUT_mask.tif next to a ``segment``
  output), else the bounding box of both layers (with a warning).
- Object scores: predicted and true buildings matched one-to-one at
  IoU >= 0.5 (greedy by decreasing IoU), then precision = matched / predicted,
  recall = matched / true, F1. With ``area`` only buildings whose
  representative point lies in it count; for a mask, only true buildings whose
  representative point lies on the raster.

Returns a flat dict (see :func:`evaluate`). Undefined ratios (0/0) are NaN-free: they are reported as 0.0.

Checked before any work (BadInput naming the input and the fix): every file
exists; ``truth``, a vector ``pred`` and ``area`` are vector files with
geometry (a CSV without geometry, a raster, a text file are refused); ``area``
overlaps what is scored (the mask, or the mapped raster / the layers' extent
for a vector prediction). A run that would score nothing - an area over nodata
only or smaller than a pixel, a mask with no valid pixel - is BadInput too,
never a set of all-zero scores.

Warnings about the data (invalid geometries repaired, features of another type
ignored, the scoring extent guessed) go to the ``warnings`` list when one is
given; without it each is written as one line ``warning: ...`` on stderr (no
Python warning with a source line). Either way they are also returned under
the key ``warnings``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ..errors import BadInput

MATCH_IOU = 0.5


def _ratio(a: float, b: float) -> float:
    return float(a) / float(b) if b else 0.0


def pixel_scores(tp: float, fp: float, fn: float, tn: float) -> dict:
    p, r = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    return {"iou": _ratio(tp, tp + fp + fn), "accuracy": _ratio(tp + tn, tp + fp + fn + tn),
            "precision": p, "recall": r, "f1": _ratio(2 * p * r, p + r),
            "tp": float(tp), "fp": float(fp), "fn": float(fn), "tn": float(tn)}


def match_objects(pred, truth, min_iou: float = MATCH_IOU) -> list[tuple[int, int, float]]:
    """One-to-one matches (pred index, truth index, IoU) with IoU >= ``min_iou``, greedy by decreasing IoU."""
    import shapely

    pred = np.asarray(pred, dtype=object)
    truth = np.asarray(truth, dtype=object)
    if len(pred) == 0 or len(truth) == 0:
        return []
    tree = shapely.STRtree(truth)
    pi, ti = tree.query(pred, predicate="intersects")
    if len(pi) == 0:
        return []
    inter = shapely.area(shapely.intersection(pred[pi], truth[ti]))
    union = shapely.area(pred[pi]) + shapely.area(truth[ti]) - inter
    iou = np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
    order = np.argsort(-iou, kind="stable")
    used_p, used_t, out = set(), set(), []
    for k in order:
        if iou[k] < min_iou:
            break
        a, b = int(pi[k]), int(ti[k])
        if a in used_p or b in used_t:
            continue
        used_p.add(a)
        used_t.add(b)
        out.append((a, b, float(iou[k])))
    return out


def object_scores(pred, truth, min_iou: float = MATCH_IOU) -> dict:
    m = len(match_objects(pred, truth, min_iou))
    p, r = _ratio(m, len(pred)), _ratio(m, len(truth))
    return {"obj_precision": p, "obj_recall": r, "obj_f1": _ratio(2 * p * r, p + r),
            "n_pred": int(len(pred)), "n_truth": int(len(truth)), "n_matched": int(m)}


def _is_raster(path: Path) -> bool:
    if path.suffix.lower() in (".tif", ".tiff", ".vrt", ".img"):
        return True
    if path.suffix.lower() in (".gpkg", ".shp", ".geojson", ".json", ".fgb", ".gml", ".kml", ".sqlite"):
        return False
    try:
        import rasterio

        with rasterio.open(path):
            return True
    except Exception:  # noqa: BLE001
        return False


def _check_vector(path, name: str, what: str) -> None:
    """BadInput unless ``path`` (or 'file|layername=x') is a vector file with a geometry layer and a CRS
    (engine.io.vectors.check_vector): before any work, so that a CSV table, a raster or a text file never
    reaches the scoring."""
    from ..io.vectors import check_vector

    check_vector(path, name, what, kind="polygon")


def _no_overlap(name: str, area, what: str) -> BadInput:
    return BadInput(f"{name} {str(area)!r} does not overlap {what}; nothing would be scored. Give polygons "
                    "that cover part of it, or leave --area out.")


def _inside(geoms, region) -> np.ndarray:
    import shapely

    if region is None or len(geoms) == 0:
        return np.ones(len(geoms), bool)
    return shapely.contains_xy(region, shapely.get_coordinates(shapely.point_on_surface(geoms))[:, 0],
                               shapely.get_coordinates(shapely.point_on_surface(geoms))[:, 1]) \
        if len(geoms) else np.zeros(0, bool)


def _read_area(area, crs, warnings=None):
    import shapely

    from ..stats.measures import read_buildings

    if area is None:
        return None
    g = read_buildings(area, crs, name="--area", warnings=warnings, what="the polygon(s) to score within")
    region = shapely.union_all(g.values)
    if region.is_empty:
        raise BadInput(f"--area {str(area)!r} has no polygon area; give the polygon(s) to score within.")
    return region


def _segment_extent(pred: Path, crs, warnings):
    """The extent of the raster a ``segment`` buildings layer came from (its OUT_mask.tif next to it), as
    a polygon in ``crs``; None when there is no such mask. Without it, true footprints beyond the mapped
    raster would count as missed."""
    import geopandas as gpd
    import rasterio
    from shapely.geometry import box

    from ..contract.outputs import segment_outputs

    mask = segment_outputs(pred)["mask"]
    if not mask.is_file():
        from ..stats.measures import _warn

        _warn(f"--pred {str(pred)!r}: scored within the bounding box of the predicted and true buildings; "
              "true buildings beyond the mapped raster count as missed. Give --area to choose.", warnings)
        return None
    with rasterio.open(mask) as ds:
        extent = gpd.GeoSeries([box(*ds.bounds)], crs=ds.crs).to_crs(crs)
    return extent.iloc[0]


def evaluate(pred, truth, area=None, *, block: int = 1024, warnings: "list | None" = None) -> dict:
    """Scores of ``pred`` (mask GeoTIFF or buildings vector) against ``truth`` footprints, optionally within
    ``area``. Keys: iou, accuracy, precision, recall, f1, tp, fp, fn, tn, unit ('px' or 'm2'),
    obj_precision, obj_recall, obj_f1, n_pred, n_truth, n_matched, pred_kind ('mask' or 'vector')."""
    pred = Path(pred)
    if not pred.exists():
        raise BadInput(f"--pred {str(pred)!r}: no such file; give the mask GeoTIFF or the buildings layer.")
    _check_vector(truth, "--truth", "the true building footprints")
    mask = _is_raster(pred)
    if not mask:
        _check_vector(pred, "--pred", "the mask GeoTIFF or the buildings layer written by `segment`")
    if area is not None:
        _check_vector(area, "--area", "the polygon(s) to score within")
    found: list[str] = []
    try:
        out = (_evaluate_mask(pred, truth, area, block, found) if mask
               else _evaluate_vector(pred, truth, area, found))
    finally:
        if warnings is not None:
            warnings.extend(found)
    found = list(dict.fromkeys(found))
    if warnings is None:                 # an error is one line: the data warnings only with the scores
        for msg in found:
            print(f"warning: {msg}", file=sys.stderr, flush=True)
    out["warnings"] = found
    return out


def _evaluate_mask(pred: Path, truth, area, block: int, warnings) -> dict:
    from rasterio.errors import RasterioIOError

    try:
        return _score_mask(pred, truth, area, block, warnings)
    except RasterioIOError:
        raise BadInput(f"--pred {str(pred)!r} cannot be read as a raster (damaged or truncated?); give the mask "
                       "GeoTIFF written by `segment`.") from None


def _score_mask(pred: Path, truth, area, block: int, warnings) -> dict:
    import rasterio
    import rasterio.features
    import shapely
    from affine import Affine
    from rasterio.windows import Window

    from ..stats.measures import read_buildings
    from .polygons import polygons_from_mask

    with rasterio.open(pred) as ds:
        if ds.crs is None:
            raise BadInput(f"--pred {str(pred)!r} has no CRS; give the mask written by `segment`.")
        crs = ds.crs
        tg = read_buildings(truth, crs, name="--truth", warnings=warnings, allow_empty=True,
                            what="the true building footprints")
        truth_geoms = tg.values
        region = _read_area(area, crs, warnings)
        raster_box = shapely.box(*ds.bounds)
        if region is not None and not shapely.intersection(region, raster_box).area > 0:
            raise _no_overlap("--area", area, f"the mask {str(pred)!r}")
        if len(truth_geoms) and not shapely.intersects(shapely.union_all(shapely.envelope(truth_geoms)),
                                                       raster_box):
            raise BadInput(f"--truth {str(truth)!r} does not overlap the mask {str(pred)!r}; "
                           "give footprints of the same place.")
        tree = shapely.STRtree(truth_geoms) if len(truth_geoms) else None
        tp = fp = fn = tn = 0
        for r0 in range(0, ds.height, block):
            for c0 in range(0, ds.width, block):
                w = Window(c0, r0, min(block, ds.width - c0), min(block, ds.height - r0))
                shape = (int(w.height), int(w.width))
                t = ds.transform @ Affine.translation(c0, r0)      # (rasterio's helpers warn about `*`)
                p = ds.read(1, window=w) > 0
                valid = ds.read_masks(1, window=w) > 0
                (xa, xb), (ya, yb) = zip(t @ (0, 0), t @ (shape[1], shape[0]), strict=True)
                box = shapely.box(min(xa, xb), min(ya, yb), max(xa, xb), max(ya, yb))
                tr = np.zeros(shape, bool)
                if tree is not None:
                    idx = tree.query(box, predicate="intersects")
                    if len(idx):
                        tr = rasterio.features.rasterize(((g, 1) for g in truth_geoms[idx]), out_shape=shape,
                                                         transform=t, fill=0, dtype="uint8") > 0
                if region is not None:
                    valid &= rasterio.features.rasterize([(region, 1)], out_shape=shape, transform=t, fill=0,
                                                         dtype="uint8") > 0
                p &= valid
                tr &= valid
                tp += int((p & tr).sum())
                fp += int((p & ~tr).sum())
                fn += int((~p & tr).sum())
                tn += int((valid & ~p & ~tr).sum())
    if tp + fp + fn + tn == 0:
        if region is not None:
            raise BadInput(f"--area {str(area)!r} leaves no pixel of the mask {str(pred)!r} to score (it covers "
                           "only nodata, or no pixel centre). Give polygons over the mapped pixels, or leave "
                           "--area out.")
        raise BadInput(f"--pred {str(pred)!r} has no valid pixel (all nodata); give the mask written by "
                       "`segment`.")
    preds = np.array(list(polygons_from_mask(pred, block)), dtype=object)
    preds = preds[_inside(preds, region)]
    keep = _inside(truth_geoms, raster_box) & _inside(truth_geoms, region)
    out = pixel_scores(tp, fp, fn, tn)
    out.update(unit="px", pred_kind="mask")
    out.update(object_scores(preds, truth_geoms[keep]))
    return out


def _evaluate_vector(pred: Path, truth, area, warnings) -> dict:
    import shapely

    from ..stats.measures import metric_crs, read_buildings

    pg = read_buildings(pred, None, name="--pred", warnings=warnings, allow_empty=True)
    if pg.crs is None:
        raise BadInput(f"--pred {str(pred)!r} has no CRS; set one.")
    tg = read_buildings(truth, pg.crs, name="--truth", warnings=warnings, allow_empty=True,
                        what="the true building footprints")
    both = tg if len(pg) == 0 else pg
    if len(both) == 0:
        raise BadInput("--pred and --truth are both empty; nothing to score.")
    mcrs = metric_crs(both)
    pg, tg = pg.to_crs(mcrs), tg.to_crs(mcrs)
    region = _read_area(area, mcrs, warnings)
    mapped = _segment_extent(pred, mcrs, warnings if region is None else [])
    p_geoms, t_geoms = pg.values, tg.values
    x0, y0, x1, y1 = (pg.total_bounds if len(pg) else tg.total_bounds)
    if len(pg) and len(tg):
        tx0, ty0, tx1, ty1 = tg.total_bounds
        x0, y0, x1, y1 = min(x0, tx0), min(y0, ty0), max(x1, tx1), max(y1, ty1)
    layers_box = shapely.box(x0, y0, x1, y1)
    if region is not None:
        data = mapped if mapped is not None else layers_box
        if not shapely.intersects(region, data) or (data.area > 0 and not shapely.intersection(region, data).area):
            what = (f"the raster {str(pred)!r} was mapped from" if mapped is not None
                    else f"the buildings of --pred {str(pred)!r} or --truth {str(truth)!r}")
            raise _no_overlap("--area", area, what)
    else:
        region = mapped
    extent = region if region is not None else layers_box
    P = shapely.intersection(shapely.union_all(p_geoms), extent) if len(p_geoms) else shapely.Polygon()
    T = shapely.intersection(shapely.union_all(t_geoms), extent) if len(t_geoms) else shapely.Polygon()
    tp = shapely.intersection(P, T).area
    fp, fn = P.area - tp, T.area - tp
    tn = max(extent.area - shapely.union(P, T).area, 0.0)
    out = pixel_scores(tp, fp, fn, tn)
    out.update(unit="m2", pred_kind="vector")
    out.update(object_scores(p_geoms[_inside(p_geoms, region)], t_geoms[_inside(t_geoms, region)]))
    return out
