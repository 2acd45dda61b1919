"""The ``stats`` tool: urban-form statistics joined to a run's tiles, per-cluster profiles, eta-squared.

``run_stats(StatsParams(run=RUN.gpkg, buildings=..., roads=..., population=..., nir_band=...))``
reads the run's tile layer, projects it to a metric CRS (local UTM for
geographic or Web Mercator runs), computes the statistics asked for and
writes, atomically (temporary names, then renames):

- ``RUN.gpkg``: the tile layer with the statistic columns added (bldg_count,
  bldg_area, bldg_cov, bldg_mean, bldg_orien, road_len, road_dist, major_dist,
  ndvi, pop_dens; those asked for), and a ``clusters`` layer: one row per
  cluster, the cluster's tiles dissolved into one (multi)polygon in the run's
  CRS, with ``cluster``, ``tiles`` and per statistic ``<code>_avg``,
  ``<code>_sd``, ``<code>_med``, ``<code>_q`` (scheme in ``engine.profile``;
  all field names <= 10 characters). The profile covers every known statistic
  column of the layer, including ones from earlier runs (e.g. bldg_cov).
- ``RUN_stats.csv``: eta-squared per statistic (stat, eta2, n).
- ``RUN_profile.png`` (quantile-normalised profile, a line per cluster) and
  ``RUN_boxes.png`` (box plots by cluster).
- ``RUN_manifest.json``: updated with a ``statistics`` record (parameters,
  inputs with checksums, columns, eta-squared table, warnings, outputs).

Sweep GeoPackages: ``layer='tiles_64px', label='k5'`` adds the columns to that
layer, writes the layer ``clusters_64px_k5`` and files ``RUN_64px_k5_stats.csv``
etc., and records ``statistics_64px_k5`` in the manifest.

Columns that already exist are recomputed only with ``overwrite=True``.
Problems the user should know but that do not stop the run (a layer that does
not overlap the tiles, a road layer without the class attribute, repaired
geometries) are returned as warnings: progress stage ``warning`` and the
manifest record's ``warnings`` list.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..contract import problems as P
from ..contract.outputs import CLUSTERS_LAYER, LAYER_PREFIX, manifest_path, stats_outputs
from ..contract.params import STATS_INPUTS, output_files
from ..contract.tools import SWEEP
from ..distributed.session import keep_sessions
from ..errors import BadInput
from ..progress import Progress, committing
from . import check_params, check_vector_inputs, locked_outputs, run_layers

STAT_ORDER = ("bldg_count", "bldg_area", "bldg_cov", "bldg_mean", "bldg_orien", "road_len", "road_dist",
              "major_dist", "ndvi", "pop_dens")
BUILDING_COLUMNS = ("bldg_count", "bldg_area", "bldg_cov", "bldg_mean", "bldg_orien")   # as engine.stats
ROAD_COLS = ("road_len", "road_dist", "major_dist")


@dataclass
class StatsParams:
    """Everything that decides a ``stats`` run: the fields and defaults ``contract.tools.STATS_TOOL`` declares."""

    run: str
    buildings: str | None = None
    roads: str | None = None
    population: str | None = None
    nir_band: int | None = None
    red_band: int | None = None          # default 1 when nir_band is given
    ndvi_raster: str | None = None
    road_field: str = "highway"
    major_values: "str | list[str] | None" = None   # "a,b" or a list; default OSM major classes
    layer: str = "tiles"
    label: str = "cluster"
    overwrite: bool = False
    dask: str | None = None              # 'local:N' or 'tcp://host:port': building statistics in partitions
    resume: bool = False                 # with dask: keep the partitions of footprints an interrupted run summed


# the inputs that ask for statistics after a cluster or sweep run (ClusterParams/SweepParams fields)
@dataclass(kw_only=True)
class StatsInputs:
    """The statistics inputs of a cluster or sweep run: given any of them, the ``stats`` tool runs on the
    run's layer afterwards, as ``cluster --buildings …`` does on the command line. Keyword-only, so that a
    parameters class can inherit them after its own positional fields."""

    buildings: str | None = None          # footprints (also: eta-squared of coverage per DeepCluster epoch)
    roads: str | None = None
    road_field: str = "highway"
    major_values: "str | list[str] | None" = None
    population: str | None = None
    nir_band: int | None = None
    red_band: int | None = None
    ndvi_raster: str | None = None


def wants_statistics(params) -> bool:
    """Whether a cluster or sweep run's parameters ask for the statistics (any of ``contract.params.STATS_INPUTS``;
    the contract's rules make an NDVI raster or red band without a near-infrared band a problem)."""
    return any(getattr(params, name, None) is not None and getattr(params, name) != "" for name in STATS_INPUTS)


def statistics_params(params, run: "str | Path") -> StatsParams:
    """The ``stats`` run that follows a cluster or sweep run with these parameters (replacing its own)."""
    from dataclasses import fields

    given = {f.name: getattr(params, f.name) for f in fields(StatsParams)
             if f.name not in ("run", "overwrite", "layer", "label", "resume") and hasattr(params, f.name)}
    resume = bool(getattr(params, "resume", False) and getattr(params, "dask", None))   # (DeepCluster's is not)
    return StatsParams(run=str(run), overwrite=True, resume=resume, **given)


@dataclass
class StatsOutputs:
    gpkg: Path
    manifest: Path
    csv: Path
    profile: Path
    boxes: Path
    clusters_layer: str
    manifest_key: str

    @classmethod
    def for_run(cls, run: "str | Path", layer: str = "tiles", label: str = "cluster") -> "StatsOutputs":
        """The files of the statistics of ``layer``/``label`` (a sweep layer and K: RUN_64px_k5_stats.csv and
        the layer clusters_64px_k5), named as ``contract.tools.STATS_TOOL`` declares."""
        run = Path(run)
        if (layer, label) == ("tiles", "cluster"):
            tag = ""
        else:
            size = layer[len(LAYER_PREFIX):] if layer.startswith(LAYER_PREFIX) else layer
            tag = f"_{size}_{label}"
        files = stats_outputs(run, tag)
        return cls(run, manifest_path(run), files["stats_csv"], files["profile"], files["boxes"],
                   f"{CLUSTERS_LAYER}{tag}", f"statistics{tag}")

    def paths(self) -> list[Path]:
        """The files a statistics run writes (the run's GeoPackage and manifest are rewritten)."""
        return [self.gpkg, self.manifest, self.csv, self.profile, self.boxes]


def _major_values(v) -> tuple[str, ...]:
    from ..stats.measures import MAJOR_ROADS

    if v is None:
        return tuple(MAJOR_ROADS)
    if isinstance(v, str):
        vals = tuple(s.strip() for s in v.split(",") if s.strip())
    else:
        vals = tuple(str(s) for s in v)
    if not vals:
        raise BadInput(f"--major-values {v!r}: give comma-separated attribute values, e.g. primary,secondary.",
                       param="major_values", code=P.BAD_FORMAT)
    return vals


def check_statistics_inputs(params, raster: "str | None" = None) -> None:
    """BadInput (naming the parameter) unless the statistics inputs of ``params`` can serve, from their headers
    only: a road class attribute that is not blank, major values that are not empty, a population raster and
    an NDVI raster that open and read, NIR and red bands within the NDVI raster's bands (``raster``: the one
    the bands are read from without ``ndvi_raster``; None: not known yet, the bands are checked later).

    Cluster and sweep call it right after ``check_vector_inputs``: a bad statistics input stops the run before
    the features are computed and cached, not after. The ``stats`` tool makes the same checks in ``_check``."""
    if getattr(params, "roads", None) and not str(params.road_field or "").strip():
        raise BadInput("--road-field is empty; give the road class attribute (OSM: highway).", param="road_field",
                       code=P.REQUIRED)
    _major_values(getattr(params, "major_values", None))
    if getattr(params, "population", None):
        from ..stats.raster import _open

        _open(params.population, "--population").close()
    if getattr(params, "nir_band", None) is not None:
        from ..stats.raster import _open, check_bands

        source = params.ndvi_raster or raster
        if params.ndvi_raster:
            _open(params.ndvi_raster, "--ndvi-raster").close()
        elif raster:
            from ..raster.tiling import inspect_raster

            inspect_raster(str(raster), "raster")          # a bad RASTER is named as such, not as the bands'
        if source:
            check_bands(source, params.nir_band, params.red_band or 1,
                        "--ndvi-raster" if params.ndvi_raster else "RASTER")


def planned_columns(p: StatsParams) -> list[str]:
    cols: list[str] = []
    if p.buildings:
        cols += BUILDING_COLUMNS
    if p.roads:
        cols += ROAD_COLS
    if p.nir_band is not None:
        cols.append("ndvi")
    if p.population:
        cols.append("pop_dens")
    return cols


def _read_manifest(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BadInput(f"{str(path)!r} cannot be read as a run manifest ({exc}); "
                       "move it away to start a new one.") from None


def _check(p: StatsParams, outputs: StatsOutputs) -> tuple[dict, dict]:
    """The checks before work that need the files (the declared ones are ``check_params``'); returns (layer info,
    old manifest)."""
    import pyogrio

    run = outputs.gpkg
    layers = run_layers(run)          # BadInput naming RUN, in our words, when GDAL cannot open it
    if p.layer not in layers:
        raise BadInput(f"RUN {str(run)!r} has no layer {p.layer!r} (it has {', '.join(layers)}); "
                       "give a tile layer of the run.")
    info = pyogrio.read_info(str(run), layer=p.layer)
    fields = [str(f) for f in info["fields"]]
    if p.label not in fields:
        raise BadInput(f"layer {p.layer!r} of {str(run)!r} has no column {p.label!r}; "
                       "give the cluster label column (cluster, or k2..k12 in a sweep).")
    if not info.get("crs"):
        raise BadInput(f"layer {p.layer!r} of {str(run)!r} has no CRS; the tiles must have one.")
    if p.roads and not str(p.road_field or "").strip():
        raise BadInput("--road-field is empty; give the road class attribute (OSM: highway).", param="road_field",
                       code=P.REQUIRED)
    _major_values(p.major_values)
    manifest = _read_manifest(outputs.manifest)
    if p.nir_band is not None:
        from ..stats.raster import check_bands

        raster = ndvi_raster(p, manifest)
        check_bands(raster, p.nir_band, p.red_band or 1,
                    "--ndvi-raster" if p.ndvi_raster else "the run's raster")
    if p.population:
        from ..stats.raster import _open

        _open(p.population, "--population").close()
    existing = [c for c in planned_columns(p) if c in fields]
    if existing and not p.overwrite:
        raise BadInput(f"layer {p.layer!r} of {str(run)!r} already has {', '.join(existing)}; "
                       "pass --overwrite to compute them again.")
    if not p.overwrite:
        if outputs.clusters_layer in layers:
            raise BadInput(f"{str(run)!r} already has a {outputs.clusters_layer!r} layer; "
                           "pass --overwrite to replace it.")
        for path in (outputs.csv, outputs.profile, outputs.boxes):
            if path.exists():
                raise BadInput(f"output {str(path)!r} already exists; pass --overwrite to replace it.")
    return info, manifest


def ndvi_raster(p: StatsParams, manifest: dict) -> str:
    if p.ndvi_raster:
        return p.ndvi_raster
    raster = (manifest.get("inputs") or {}).get("raster")
    if not raster:
        raise BadInput("--nir-band: the run's manifest does not name its raster; give --ndvi-raster.")
    if not Path(raster).exists():
        raise BadInput(f"--nir-band: the run's raster {raster!r} is gone; give it as --ndvi-raster.")
    return raster


def _building_columns(p: StatsParams, tiles_m, warnings: list, progress, dask: dict) -> dict:
    """The building statistics: here, or with ``p.dask`` partition by partition of the footprints on Dask
    (``engine.distributed.stats``; the footprints are never all in this process; ``dask`` gets the session's
    record for the manifest)."""
    from ..distributed.session import dask_session
    from ..stats.measures import building_stats, read_buildings

    with dask_session(p.dask, progress) as session:
        if session is not None:
            from ..distributed.stats import building_stats_on_dask
            from .cluster import default_cache_dir

            df = building_stats_on_dask(session, str(p.buildings), tiles_m, default_cache_dir().parent / "stats",
                                        progress, "--buildings", warnings, resume=p.resume)
            dask.update(session.record())
            return {c: df[c].to_numpy() for c in df.columns}
    b = read_buildings(p.buildings, tiles_m.crs, "--buildings", warnings=warnings, allow_empty=True)
    df = building_stats(tiles_m, b, name="--buildings", warnings=warnings)
    return {c: df[c].to_numpy() for c in df.columns}


def _road_columns(p: StatsParams, tiles_m, warnings: list) -> dict:
    """road_len, road_dist and (when the layer has ``road_field``) major_dist; else a warning naming --road-field."""
    from ..stats.measures import read_roads, road_stats

    roads = read_roads(p.roads, tiles_m.crs, "--roads", warnings=warnings)
    df = road_stats(tiles_m, roads, p.road_field, _major_values(p.major_values), name="--roads",
                    warnings=warnings)
    return {c: df[c].to_numpy() for c in df.columns}


PLACE_COLUMNS = ("place", "place_name")     # a cluster run over several places (engine.tools.places)


def _places(gdf) -> list:
    """[(place name, row positions)] of a tiles layer of a run over several places (its ``place`` column), each
    measured in its own metric CRS: one UTM zone cannot hold cities far apart. [(None, None)]: one place, the
    whole layer, as always."""
    if PLACE_COLUMNS[0] not in gdf.columns:
        return [(None, None)]
    values = gdf[PLACE_COLUMNS[0]].to_numpy()
    ids = list(dict.fromkeys(values.tolist()))
    if len(ids) < 2:
        return [(None, None)]
    names = gdf[PLACE_COLUMNS[1]].to_numpy() if PLACE_COLUMNS[1] in gdf.columns else values
    out = []
    for i in ids:
        idx = np.flatnonzero(values == i)
        out.append((str(names[idx[0]]), idx))
    return out


def _per_place(places: list, parts_m: list, n: int, compute) -> dict:
    """The columns ``compute(tiles in metres)`` gives, computed place by place and put back in the layer's order."""
    if places[0][1] is None:
        return compute(parts_m[0])
    out: dict[str, np.ndarray] = {}
    for (_, idx), part in zip(places, parts_m, strict=True):
        for name, values in compute(part).items():
            values = np.asarray(values)
            if name not in out:
                out[name] = np.zeros(n, dtype=values.dtype) if values.dtype.kind in "iub" else \
                    np.full(n, np.nan, dtype=np.float64 if values.dtype.kind == "f" else object)
            out[name][idx] = values
    return out


def _dissolve(gdf, labels, ids):
    import shapely

    geoms = np.asarray(gdf.geometry.values)
    lab = np.asarray(labels)
    out = []
    for c in ids:
        out.append(shapely.union_all(geoms[lab == c]))
    return out


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, (np.floating,)):
        return None if not np.isfinite(v) else float(v)
    if isinstance(v, (np.integer,)):
        return int(v)
    return v


def _input_record(path) -> dict | None:
    from ..io import sha256_file

    if not path:
        return None
    return {"path": os.path.abspath(path), "sha256": sha256_file(path)}


def run(params: StatsParams, progress: Progress | None = None) -> dict:
    """Run the ``stats`` tool; returns the updated manifest (also written to disk).

    The declared checks and the vector inputs first, before any work; then the run locks its outputs (the
    run's GeoPackage and manifest included: one writer at a time) and checks the files."""
    check_params("stats", params)
    check_vector_inputs("stats", params)
    if params.dask and params.buildings is not None and not isinstance(params.buildings, (str, os.PathLike)):
        raise BadInput("--dask: the workers read the footprints from their file; give them as a path.",
                       param="buildings")
    progress = progress or Progress("none")
    outputs = StatsOutputs.for_run(params.run, params.layer, params.label)
    with locked_outputs(outputs.paths()), keep_sessions():
        return _run(params, progress, outputs, final=True)


def _run(params: StatsParams, progress, outputs: StatsOutputs, final: bool) -> dict:
    """The statistics, with the outputs locked by the caller; ``final``: the commit is the run's last."""
    import geopandas as gpd
    import pyogrio

    from ..io import OutputSet, versions, write_json
    from ..stats.profile import cluster_profile, eta_table, plot_boxes, plot_profile, profile_columns

    t0 = time.monotonic()
    _, manifest = _check(params, outputs)
    run = outputs.gpkg
    warnings: list[str] = []
    shown = 0

    def report() -> None:      # stage "warning" with done == total: each one is shown (sinks throttle repeats)
        nonlocal shown
        for msg in warnings[shown:]:
            progress("warning", 1, 1, f"warning: {msg}")
        shown = len(warnings)

    def warn(msg: str) -> None:
        warnings.append(msg)
        report()

    progress("open", 0, 1, f"reading {run} layer {params.layer}")
    gdf = pyogrio.read_dataframe(str(run), layer=params.layer)
    if gdf.crs is None:
        raise BadInput(f"layer {params.layer!r} of {str(run)!r} has no CRS; the tiles must have one.")
    from ..stats.measures import to_metric

    places = _places(gdf)                   # a run over several places: each measured in its own metric CRS
    parts_m = [to_metric(gdf.geometry if idx is None else gdf.geometry.iloc[idx]) for _, idx in places]
    progress("open", 1, 1)

    columns: dict[str, np.ndarray] = {}
    dask: dict = {}                         # the Dask session's record, when the buildings ran on one
    if params.buildings:
        progress("buildings", 0, 1, str(params.buildings))
        columns.update(_per_place(places, parts_m, len(gdf),
                                  lambda m: _building_columns(params, m, warnings, progress, dask)))
        report()
        progress("buildings", 1, 1)
    if params.roads:
        progress("roads", 0, 1, str(params.roads))
        columns.update(_per_place(places, parts_m, len(gdf), lambda m: _road_columns(params, m, warnings)))
        report()
        progress("roads", 1, 1)
    if params.nir_band is not None:
        from ..stats.raster import ndvi

        raster = ndvi_raster(params, manifest)
        progress("ndvi", 0, 1, raster)
        v = ndvi(raster, gdf.geometry, int(params.nir_band), int(params.red_band or 1)).to_numpy()
        if not np.isfinite(v).any():
            warn(f"NDVI raster {raster!r} has no valid pixel in any tile of {str(run)!r}: ndvi is empty; "
                 "check the raster's extent and --nir-band/--red-band.")
        columns["ndvi"] = v
        progress("ndvi", 1, 1)
    if params.population:
        from ..stats.raster import pop_dens

        progress("population", 0, 1, str(params.population))
        v = pop_dens(params.population, gdf.geometry).to_numpy()
        if not np.isfinite(v).any():
            warn(f"--population {params.population!r} does not overlap the tiles of {str(run)!r}: pop_dens is "
                 "empty; check that both cover the same place.")
        columns["pop_dens"] = v
        progress("population", 1, 1)

    for name, values in columns.items():
        gdf[name] = np.asarray(values, dtype=np.float64) if name != "bldg_count" else \
            np.asarray(values).astype(np.int64)
    known = [c for c in STAT_ORDER if c in gdf.columns]
    extra = [c for c in columns if c not in known]
    stat_cols = known + extra
    # statistic columns after the run's own columns, in the documented order
    base = [c for c in gdf.columns if c not in stat_cols and c != gdf.geometry.name]
    gdf = gdf[base + stat_cols + [gdf.geometry.name]]

    progress("write", 0, 4, str(run))
    profile = cluster_profile(gdf, stat_cols, params.label)
    eta = eta_table(gdf, stat_cols, params.label)
    ids = profile["cluster"].to_numpy()
    labels = gdf[params.label].to_numpy()
    clusters = gpd.GeoDataFrame(profile.copy(), geometry=_dissolve(gdf, labels, ids), crs=gdf.crs)

    paths = [outputs.gpkg, outputs.manifest, outputs.csv, outputs.profile, outputs.boxes]
    with OutputSet(paths, overwrite=True) as outs:
        tmp = outs.temp(run)
        shutil.copyfile(run, tmp)
        lo = {"SPATIAL_INDEX": "YES"}
        pyogrio.write_dataframe(gdf, str(tmp), layer=params.layer, driver="GPKG", layer_options=lo)
        pyogrio.write_dataframe(clusters, str(tmp), layer=outputs.clusters_layer, driver="GPKG",
                                layer_options=lo)
        progress("write", 1, 4)
        eta.to_csv(outs.temp(outputs.csv), index=False, float_format="%.6g")
        title = f"{run.name}: {params.layer}, {params.label}"
        plot_profile(outs.temp(outputs.profile), profile, title=f"Cluster profiles, {title}")
        progress("write", 2, 4)
        plot_boxes(outs.temp(outputs.boxes), gdf, stat_cols, params.label, title=f"Statistics by cluster, {title}")
        progress("write", 3, 4)
        record = {
            "tool": "stats",
            "parameters": asdict(params),
            "layer": params.layer, "label": params.label, "clusters_layer": outputs.clusters_layer,
            "inputs": {k: _input_record(v) for k, v in (
                ("buildings", params.buildings), ("roads", params.roads), ("population", params.population),
                ("ndvi_raster", ndvi_raster(params, manifest) if params.nir_band is not None else None))
                if v},
            "road_field": params.road_field if params.roads else None,
            "major_values": list(_major_values(params.major_values)) if params.roads else None,
            "metric_crs": ", ".join(dict.fromkeys(m.crs.to_string() for m in parts_m)),
            **({"metric_crs_per_place": {name: m.crs.to_string() for (name, _), m in zip(places, parts_m,
                                                                                        strict=True)}}
               if len(places) > 1 else {}),
            "columns": list(columns),
            "stats": stat_cols,
            "profile_columns": profile_columns(stat_cols),
            "eta_squared": [{k: _clean(v) for k, v in r.items()} for r in eta.to_dict("records")],
            "cluster_sizes": {str(int(c)): int(n) for c, n in zip(profile["cluster"], profile["tiles"], strict=True)},
            "warnings": list(dict.fromkeys(warnings)),
            **({"dask": dask} if dask else {}),
            "outputs": {"gpkg": str(run), "csv": str(outputs.csv), "profile": str(outputs.profile),
                        "boxes": str(outputs.boxes)},
            "versions": versions(),
            "timings_s": {"total": round(time.monotonic() - t0, 3)},
        }
        manifest = dict(manifest)
        manifest[outputs.manifest_key] = record
        write_json(outs.temp(outputs.manifest), manifest)
        with committing(final):
            outs.commit()
    progress("write", 4, 4, f"wrote {run}")
    return manifest


run_stats = run


def run_sweep_stats(params: StatsParams, progress: Progress | None = None) -> dict:
    """Statistics for every tile-size layer of a sweep, and how much of each every K explains.

    Each ``tiles_<size>`` layer gets the statistics columns and, for its
    largest K, the ``clusters_<size>_k<K>`` profile layer and plots (as
    ``run_stats``). ``SWEEP_stats_eta.csv`` has the eta-squared of every
    statistic for every (tile size, K) and ``SWEEP_stats_eta.png`` draws it
    against K: the urban-form side of the sensitivity analysis.
    """
    from dataclasses import replace

    progress = progress or Progress("none")
    gpkg = Path(params.run)
    manifest_file = manifest_path(gpkg)
    sweep = _read_manifest(manifest_file)
    layers = sweep.get("layers")
    if sweep.get("tool") != "sweep" or not layers:
        raise BadInput(f"{str(gpkg)!r} is not a finished sweep (its manifest lists no tile-size layers); "
                       "run `sweep` first, or use `stats` on a cluster run.")
    names = output_files(SWEEP, {**{n: getattr(params, n) for n in STATS_INPUTS}, "out": str(gpkg)}, sizes=[])
    eta_csv, eta_png = names["stats_eta_csv"], names["stats_eta_png"]
    parts = [replace(params, layer=layer, label=f"k{max(ks)}") for layer, ks in layers.items()]
    part_outputs = [StatsOutputs.for_run(part.run, part.layer, part.label) for part in parts]
    with locked_outputs([eta_csv, eta_png, manifest_file] + [f for o in part_outputs for f in o.paths()]), \
            keep_sessions():                     # (one Dask cluster for every layer)
        return _sweep_stats(params, progress, gpkg, manifest_file, layers, parts, part_outputs, eta_csv, eta_png)


def _sweep_stats(params, progress, gpkg, manifest_file, layers, parts, part_outputs, eta_csv, eta_png) -> dict:
    import pandas as pd
    import pyogrio
    from matplotlib.ticker import MaxNLocator

    from ..io import OutputSet, partial_path, promote, remove_partial, write_json
    from ..stats.profile import _figure, eta_table
    from ..style import cluster_color

    outset = OutputSet([eta_csv, eta_png], overwrite=params.overwrite)
    for part, outputs in zip(parts, part_outputs, strict=True):        # every check before any work
        _check(part, outputs)
    rows = []
    with outset:
        for part, outputs in zip(parts, part_outputs, strict=True):
            _run(part, progress, outputs, final=False)
            stats = planned_columns(part)
            table = pyogrio.read_dataframe(str(gpkg), layer=part.layer, read_geometry=False)
            stats = [s for s in stats if s in table.columns]
            for k in layers[part.layer]:
                for r in eta_table(table, stats, f"k{k}").to_dict("records"):
                    rows.append({"tile_size": part.layer[len(LAYER_PREFIX):], "k": int(k), **r})
        eta = pd.DataFrame(rows, columns=["tile_size", "k", "stat", "eta2", "n"])
        eta.to_csv(outset.temp(eta_csv), index=False, float_format="%.6g")
        stats = list(dict.fromkeys(eta.stat))
        fig = _figure(3.2 * min(len(stats), 4), 2.8 * ((len(stats) + 3) // 4))
        for i, stat in enumerate(stats):
            ax = fig.add_subplot((len(stats) + 3) // 4, min(len(stats), 4), i + 1)
            for j, (size, group) in enumerate(eta[eta.stat == stat].groupby("tile_size", sort=False)):
                ax.plot(group.k, group.eta2, marker="o", ms=3, color=cluster_color(j), label=size)
            ax.set_title(stat, fontsize=9)
            ax.set_xlabel("K", fontsize=8)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylim(0, 1)
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=7)
            if i == 0:
                ax.set_ylabel("eta-squared", fontsize=8)
                ax.legend(fontsize=7, title="tile size", title_fontsize=7)
        fig.suptitle("Share of each statistic's variance explained by the clusters", fontsize=10)
        fig.subplots_adjust(hspace=0.5, wspace=0.3)
        fig.savefig(outset.temp(eta_png), format="png")
        manifest = _read_manifest(manifest_file)
        manifest["sweep_statistics"] = {"eta_csv": str(eta_csv), "eta_png": str(eta_png),
                                        "eta_squared": [{k: _clean(v) for k, v in r.items()} for r in rows]}
        tmp = partial_path(manifest_file)
        try:
            write_json(tmp, manifest)
            with committing():
                outset.commit()
                promote(tmp, manifest_file)              # renamed after the outputs it names
        finally:
            remove_partial(tmp)
    progress("write", 1, 1, f"wrote {eta_csv}")
    return manifest
