"""One ``cluster`` model fitted on several places (cities) far apart: the run behind ``cluster A.tif B.tif``.

``engine.raster.study.place_groups`` splits the scenes into places (groups of scenes within ``PLACE_GAP_M`` of
each other). One place is today's run (one raster or one study VRT), untouched. Several places:

- each place is its own raster: the scene itself, or the study VRT of its scenes (in that place's own UTM zone
  when their CRSs differ), exactly what ``predict MODEL <the place's scenes>`` opens;
- each place is tiled with the same ``--tile-size`` (``64px``: pixels of the place's own grid; ``20m``: ground
  metres), its valid tiles selected, its features computed and cached as a single-place run would;
- the places must have about one ground resolution (within ``predict``'s default ``--res-tolerance``): a CNN's
  features depend on scale, and ``predict`` on a place must see tiles the model knows;
- PCA and k-means are fitted on the features of all places together (one model, one set of clusters), every
  tile is assigned, and the tiles of all places go to ONE layer ``tiles`` with the columns ``place`` (0, 1, ...
  in the order of the places' first scenes) and ``place_name`` (the first scene's file name without suffix);
  ``tile_id`` is unique across the layer (each place's ids start after the previous place's grid);
- the layer is in the places' CRS when they share one, else in EPSG:4326 (one layer cannot hold two UTM zones
  honestly); the statistics (``stats``) measure each place in its own metric CRS;
- the cluster GeoTIFF and the quicklook hold one grid each, so a run over several places writes neither (a
  warning says so; a stale one of an older run is removed with --overwrite): ``predict MODEL <place>`` writes
  both for a place, with the labels of this run;
- the model file records the tiling settings (of the first place, the same text for all) and the places, so
  that ``predict`` on each place gives the labels this run gave its tiles.

Refused before any work: DeepCluster, ``--form`` and ``--dask`` (k-means on CNN features in one process only, for
now), ``--extent`` (in which place's CRS?), ``--resume``, places of different band counts or data types, places
of different resolutions.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import BadInput
from ..progress import Progress, committing

OUTPUT_CRS = "EPSG:4326"          # the tiles layer of places in different CRSs


@dataclass(frozen=True)
class Place:
    """One place of a run: its scenes (in the order given) and the raster the run opens for it."""

    index: int
    name: str
    scenes: tuple
    raster: str

    def record(self) -> dict:
        return {"place": self.index, "name": self.name, "scenes": [os.path.abspath(s) for s in self.scenes],
                "raster": os.path.abspath(self.raster)}


def places_of(params, cache_dir) -> "list[Place] | None":
    """The places of ``params.raster`` when it names scenes in several places, else None (one raster, or one
    place: the run is a plain or study run). BadInput naming ``raster`` for scenes that cannot serve."""
    from ..raster.study import is_study, open_study, place_groups

    if not is_study(params.raster):
        return None
    groups = place_groups(params.raster, "raster")
    if len(groups) < 2:
        return None
    refuse_options(params, [Path(g[0]).stem for g in groups])      # before a study VRT is written
    places, names = [], set()
    for i, group in enumerate(groups):
        raster = group[0] if len(group) == 1 else open_study(group, "raster", cache_dir).path
        name = Path(group[0]).stem
        if name in names:
            name = f"{name}_{i}"
        names.add(name)
        places.append(Place(i, name, tuple(group), raster))
    return places


def check_places(params, places: "list[Place]") -> dict:
    """BadInput before any work for what a run over several places does not do (options, resolutions that
    differ); returns each place's ground pixel size (metres)."""
    from ..contract import problems as P
    from ..contract.tools import PREDICT
    from ..raster.tiling import ground_pixel_size

    refuse_options(params, [p.name for p in places])
    tolerance = PREDICT.param("res_tolerance").default
    sizes = {p.name: ground_pixel_size(p.raster) for p in places}
    first = places[0].name
    for name, size in sizes.items():
        if abs(size / sizes[first] - 1.0) > tolerance:
            raise BadInput(f"raster: place {name!r} has {size:.3g} m pixels but {first!r} has {sizes[first]:.3g} m "
                           f"(more than {tolerance:.0%} apart); one model needs tiles that show the ground at one "
                           "scale. Resample the scenes to one resolution (gdalwarp -tr), or fit the model on one "
                           "place and `predict --resample` the others.", param="raster", code=P.BAD_FORMAT)
    return sizes


def refuse_options(params, names: list) -> None:
    """BadInput for the options a run over several places does not take (before any work)."""
    from ..contract import problems as P

    where = f"the scenes make {len(names)} places far apart ({', '.join(names)})"
    if params.method != "kmeans":
        raise BadInput(f"--method {params.method}: {where}; a run over several places fits k-means only, for now. "
                       "Use --method kmeans, or run DeepCluster on one place and `predict` the others with its "
                       "model.", param="method", code=P.BAD_CHOICE)
    if getattr(params, "form", None):
        raise BadInput(f"--form: {where}; a run over several places joins no footprint morphometrics, for now. "
                       "Leave out --form, or run each place with --form on its own.", param="form",
                       code=P.BAD_CHOICE)
    if params.dask:
        raise BadInput(f"--dask: {where}; a run over several places runs in one process, for now. Leave out "
                       "--dask, or run each place on Dask with `predict`.", param="dask", code=P.BAD_FORMAT)
    if params.extent:
        raise BadInput(f"--extent: {where}, each in its own CRS, so one extent cannot limit them; give --area "
                       "(a vector file in any CRS) instead.", param="extent", code=P.BAD_FORMAT)
    if params.resume:
        raise BadInput(f"--resume: {where}; a k-means run over places has nothing to resume: leave it out.",
                       param="resume", code=P.BAD_FORMAT)


def run_places(params, places: "list[Place]", progress: Progress, outputs, final: bool = True,
               committed: "list | None" = None) -> dict:
    """The k-means run over ``places``, with the outputs locked by the caller (``cluster.run``)."""
    import contextlib

    from ..clustering.kmeans import KMeansTiles
    from ..clustering.modelfile import save_model
    from ..io import NpyFile, OutputSet, sha256_file, versions, write_json
    from ..io import write_gpkg_chunks
    from ..raster.tiling import TiledRaster
    from .cluster import (Laps, _compute_features, building_coverage, building_evaluation, default_cache_dir,
                          feature_extractor, feature_key, feature_recipe, input_record, select_tiles, tile_frames,
                          tiling_settings)

    lap = Laps()
    sizes_m = check_places(params, places)
    written = [outputs.gpkg, outputs.manifest, outputs.model]
    skipped = [p for p in (outputs.tif, outputs.quicklook) if p is not None]
    outset = OutputSet(written + skipped, overwrite=params.overwrite)
    warnings = [f"{len(places)} places: no {', '.join(p.name for p in skipped)} (one grid each); "
                f"`predict {outputs.model.name} <a place's scenes>` writes them for a place, with this run's labels"]
    progress("warning", 1, 1, f"warning: {warnings[0]}")
    progress("open", 0, 0, f"opening {len(places)} places")
    with outset, contextlib.ExitStack() as stack, tempfile.TemporaryDirectory(prefix="urbanform-") as workdir:
        tiled_all = [stack.enter_context(TiledRaster(p.raster, params.tile_size, params.overlap, params.edge,
                                                     params.bands, seed=params.seed)) for p in places]
        extractor = feature_extractor(params)
        lap("open")
        tile_px = {p.name: t.grid.size for p, t in zip(places, tiled_all, strict=True)}
        if len(set(tile_px.values())) > 1:
            warnings.append(f"--tile-size {params.tile_size} is {tile_px} px in the places (their resolutions "
                            "differ a little): `predict` resizes the tiles of a place to the first place's pixels, "
                            "so its labels may differ from this run's; give the tile size in px to keep them equal")
            progress("warning", 1, 1, f"warning: {warnings[-1]}")
        places, tiled_all, insides = _inside_area(places, tiled_all, params.area, warnings, progress)
        picks, coverages, layer_warnings = [], [], []
        for p, tiled, inside in zip(places, tiled_all, insides, strict=True):
            progress("scan", 0, 0, f"place {p.name}")
            rows, cols, valid = select_tiles(tiled, params.min_valid, None, params.area, progress, p.raster, inside)
            picks.append((rows, cols, valid))
            if params.buildings:
                coverages.append(_coverage(p, tiled, rows, cols, params.buildings, layer_warnings, building_coverage))
        if coverages and all(c is None for c in coverages):
            raise BadInput(f"--buildings {params.buildings!r}: no footprint overlaps the tiles of any place; "
                           "check that the layer covers the places.", param="buildings")
        if coverages:
            coverages = [np.zeros(len(r), np.float32) if c is None else c
                         for c, (r, _, _) in zip(coverages, picks, strict=True)]
        for w in layer_warnings:
            progress("warning", 1, 1, w)
        n_total = sum(len(r) for r, _, _ in picks)
        if params.k > n_total:
            from ..contract.problems import OUT_OF_RANGE

            raise BadInput(f"--k {params.k} is larger than the number of valid tiles of all places ({n_total}). "
                           "Use a smaller K, a smaller tile size or a lower --min-valid.", param="k",
                           code=OUT_OF_RANGE)
        lap("scan")

        cache_dir = Path(params.cache_dir) if params.cache_dir else default_cache_dir()
        if not params.use_cache:
            cache_dir = Path(workdir) / "cache"
        all_feats = NpyFile(Path(workdir) / "places.npy", shape=(n_total, extractor.dim))
        records, start = [], 0
        for p, tiled, (rows, cols, valid) in zip(places, tiled_all, picks, strict=True):
            checksum = sha256_file(p.raster)
            key = feature_key(checksum, tiled, extractor, params, rows, cols)
            progress("features", 0, len(rows), f"place {p.name}: {extractor.spec.name} on "
                                               f"{extractor.device.type} ({extractor.precision})")
            feats, hit, _ = _compute_features(tiled, rows, cols, extractor, params, cache_dir, key, progress)
            for s in range(0, len(rows), 4096):
                all_feats[start + s: start + min(s + 4096, len(rows))] = np.asarray(feats[s: s + 4096])
            records.append({**p.record(), **input_record(p.raster, tiled, checksum), "raster": p.raster,
                            "tiles_valid": int(len(rows)), "tiles_total": len(tiled.grid),
                            "n_rows": tiled.grid.n_rows, "n_cols": tiled.grid.n_cols, "tile_px": tiled.grid.size,
                            "ground_pixel_m": sizes_m[p.name], "cache_key": key, "cache_hit": hit})
            start += len(rows)
        lap("features")
        progress("cluster", 0, 1, f"k-means, K={params.k}, on {n_total} tiles of {len(places)} places")
        km = KMeansTiles(params.k, params.pca_dims, params.whiten, params.seed)
        labels, dist, scores = km.fit_assign(all_feats)
        progress("cluster", 1, 1, f"{km.n_components_} PCA dims")
        lap("cluster")

        crss = {t.crs.to_string() for t in tiled_all}
        out_crs = crss.pop() if len(crss) == 1 else OUTPUT_CRS
        progress("write", 0, 4, str(outputs.gpkg))
        write_gpkg_chunks(outset.temp(outputs.gpkg), "tiles",
                          _frames(places, tiled_all, picks, labels, dist, scores, coverages, out_crs, tile_frames),
                          _wkt(out_crs))
        progress("write", 2, 4)
        settings = tiling_settings(tiled_all[0], params)
        counts = np.bincount(labels, minlength=params.k)
        clustering = {"method": "kmeans", "k": params.k, "pca_dims": km.n_components_,
                      "pca_dims_requested": params.pca_dims, "whiten": params.whiten,
                      "explained_variance": float(km.explained_variance_ratio_.sum()), "inertia": km.inertia_,
                      "cluster_sizes": counts.tolist(),
                      "cluster_sizes_per_place": {p.name: np.bincount(labels[a:b], minlength=params.k).tolist()
                                                  for p, (a, b) in zip(places, _spans(picks), strict=True)}}
        place_records = [{k: r[k] for k in ("place", "name", "scenes", "raster", "crs", "tile_px",
                                            "ground_pixel_m")} for r in records]
        scenes = [s for p in places for s in map(os.path.abspath, p.scenes)]
        recipe = {**feature_recipe(params), "form": None}         # how predict makes the same features
        save_model(outset.temp(outputs.model), km, extractor.model.state_dict(), backbone=params.backbone,
                   sobel=params.sobel, tiling=settings, method="kmeans",
                   extra={"features": recipe, "clustering": clustering, "weights": params.weights, "seed": params.seed,
                          "raster": [r["raster"] for r in records], "scenes": scenes, "places": place_records})
        lap("write")
        manifest = {
            "tool": "cluster",
            "parameters": asdict(params),
            "inputs": {"places": records, "scenes": scenes, "crs": out_crs},
            "places": place_records,
            "output_crs": out_crs,
            "tiling": {**settings, "backbone": params.backbone, "weights": params.weights,
                       "tiles_total": sum(r["tiles_total"] for r in records), "tiles_valid": n_total},
            "features": {"backbone": params.backbone, "dim": extractor.dim, "sobel": params.sobel, **recipe,
                         "form_file": None, "form_source": None,
                         "weights_file": str(extractor.weights_path) if extractor.weights_path else None,
                         "device": str(extractor.device), "precision": extractor.precision,
                         "cache_keys": [r["cache_key"] for r in records],
                         "cache_hit": all(r["cache_hit"] for r in records)},
            "clustering": clustering,
            "seed": params.seed,
            "warnings": warnings,
            "outputs": {"gpkg": str(outputs.gpkg), "manifest": str(outputs.manifest), "model": str(outputs.model)},
            "versions": versions(),
        }
        if coverages:
            coverage = np.concatenate(coverages)
            manifest["evaluation"] = building_evaluation(params.buildings, labels, coverage, layer_warnings)
        manifest["timings_s"] = lap.total()
        write_json(outset.temp(outputs.manifest), manifest)
        with committing(final):
            outset.commit(missing_ok=True)           # (removes a stale cluster GeoTIFF or quicklook: --overwrite)
            if committed is not None:
                committed.append(True)
        progress("write", 4, 4, f"wrote {outputs.gpkg}")
    return manifest


def _coverage(place, tiled, rows, cols, buildings, warnings: list, building_coverage):
    """The footprint share of the place's tiles, or None (with a warning) where no footprint overlaps them: a
    layer of one city is no error in a run over several."""
    coverage = building_coverage(tiled, rows, cols, buildings, warnings, missing_ok=True)
    if coverage is None:
        warnings.append(f"--buildings {buildings!r}: no footprint overlaps the tiles of place {place.name!r}; "
                        "its building coverage is 0")
    return coverage


def _inside_area(places: list, tiled_all: list, area, warnings: list, progress) -> tuple[list, list, list]:
    """(places, their tiled rasters, their tiles inside ``area``) of the places with a tile centre inside
    ``area``: an area drawn around some of the places leaves the others out, with a warning, rather than
    stopping the run; BadInput (``area``) when it covers no place. Without an area: all, masks None."""
    if not area:
        return places, tiled_all, [None] * len(places)
    from ..raster.area import tiles_inside

    insides = [tiles_inside(t, None, area) for t in tiled_all]
    keep = [bool(m.any()) for m in insides]
    if not any(keep):
        raise BadInput(f"--area {str(area)!r}: no tile centre of any place lies inside it ("
                       f"{', '.join(p.name for p in places)}); check that it overlaps the places.", param="area")
    out = [p.name for p, ok in zip(places, keep, strict=True) if not ok]
    if out:
        warnings.append(f"--area: no tile of {', '.join(out)} lies inside it; left out of the run")
        progress("warning", 1, 1, f"warning: {warnings[-1]}")
    kept = [i for i, ok in enumerate(keep) if ok]
    return [places[i] for i in kept], [tiled_all[i] for i in kept], [insides[i] for i in kept]


def _spans(picks) -> list[tuple[int, int]]:
    out, start = [], 0
    for rows, _, _ in picks:
        out.append((start, start + len(rows)))
        start += len(rows)
    return out


def _wkt(crs: str) -> str:
    from rasterio.crs import CRS

    return CRS.from_user_input(crs).to_wkt()


def _frames(places, tiled_all, picks, labels, dist, scores, coverages, out_crs: str, tile_frames):
    """The tile GeoDataFrames of every place in ``out_crs``, with the place columns; tile ids unique across the
    places (each place's start after the previous place's grid)."""
    offset = 0
    for i, (p, tiled, (rows, cols, valid), (a, b)) in enumerate(zip(places, tiled_all, picks, _spans(picks),
                                                                    strict=True)):
        g = tiled.grid
        n = len(rows)
        columns = {
            "tile_id": (offset + rows * g.n_cols + cols).astype(np.int64), "row": rows.astype(np.int32),
            "col": cols.astype(np.int32), "cluster": labels[a:b].astype(np.int32),
            "clust_dist": dist[a:b].astype(np.float32), "pc1": scores[a:b, 0].astype(np.float32),
            "pc2": scores[a:b, 1].astype(np.float32), "valid_frac": valid[rows, cols].astype(np.float32),
            "place": np.full(n, p.index, np.int32), "place_name": np.full(n, p.name, object),
        }
        if coverages:
            columns["bldg_cov"] = coverages[i].astype(np.float32)
        for frame in tile_frames(tiled, rows, cols, columns):
            yield frame.to_crs(out_crs)
        offset += len(g)
