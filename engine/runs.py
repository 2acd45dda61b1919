"""End-to-end runs: the ``cluster`` tool from a raster path to files on disk.

``run_cluster`` checks every input before spending work, reads the raster
window by window, computes (or reuses cached) CNN features, clusters them and
writes the GeoPackage, the cluster GeoTIFF, a quicklook PNG and the manifest
atomically. The CLI and the plugin both call it (the plugin via the CLI).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .errors import BadInput
from .io import NpyFile
from .progress import Progress


MAX_K = 254        # the cluster GeoTIFF is uint8 with 255 as "no tile"


@dataclass
class ClusterParams:
    """Everything that decides a ``cluster`` run (the manifest records all of it)."""

    raster: str
    out: str
    k: int = 8
    tile_size: str = "64px"
    overlap: str = "0px"
    edge: str = "drop"
    min_valid: float = 0.5
    bands: str | None = None
    backbone: str = "resnet18"
    weights: str = "imagenet"
    device: str = "auto"
    precision: str = "auto"
    batch_size: int | None = None
    seed: int = 0
    pca_dims: str = "auto"
    whiten: bool = False
    overwrite: bool = False
    cache_dir: str | None = None
    use_cache: bool = True
    quicklook: bool = True
    extent: str | None = None
    area: str | None = None


@dataclass
class RunOutputs:
    gpkg: Path
    tif: Path
    manifest: Path
    quicklook: Path | None
    model: Path

    @classmethod
    def for_out(cls, out: "str | Path", quicklook: bool = True) -> "RunOutputs":
        out = Path(out)
        if out.suffix.lower() != ".gpkg":
            raise BadInput(f"--out {str(out)!r} must be a GeoPackage path ending in .gpkg.")
        stem = out.with_suffix("")
        return cls(out, Path(f"{stem}_clusters.tif"), Path(f"{stem}_manifest.json"),
                   Path(f"{stem}_quicklook.png") if quicklook else None, Path(f"{stem}_model.npz"))

    def paths(self) -> list[Path]:
        return [p for p in (self.gpkg, self.tif, self.manifest, self.quicklook, self.model) if p is not None]


def default_cache_dir() -> Path:
    root = os.environ.get("URBANFORM_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "urbanform")
    return Path(root) / "features"


def _check_params(p: ClusterParams) -> None:
    if not 2 <= int(p.k) <= MAX_K:
        raise BadInput(f"--k {p.k}: K must be between 2 and {MAX_K}.")
    if not 0.0 <= float(p.min_valid) <= 1.0:
        raise BadInput(f"--min-valid {p.min_valid}: give a fraction between 0 and 1.")
    if p.pca_dims != "auto":
        try:
            if int(p.pca_dims) < 1:
                raise ValueError
        except ValueError:
            raise BadInput(f"--pca-dims {p.pca_dims!r}: use 'auto' or a positive whole number.") from None
    if p.batch_size is not None and int(p.batch_size) < 1:
        raise BadInput(f"--batch-size {p.batch_size}: use a positive whole number.")
    from .features import backbone_spec

    backbone_spec(p.backbone)


def feature_key(checksum: str, tiled, extractor, params: ClusterParams, rows, cols) -> str:
    """Cache key: the raster's content, the tiles kept and everything that changes their features."""
    g = tiled.grid
    ident = {
        "positions": hashlib.sha256(np.asarray(rows, np.int64).tobytes() + np.asarray(cols, np.int64).tobytes())
        .hexdigest(),
        "raster": checksum, "size": g.size, "stride": g.stride, "edge": g.edge, "bands": tiled.bands,
        "warp": str(tiled.working_crs) if tiled.warped else None,
        "stretch": tiled.stretch.as_list() if tiled.stretch else None,
        "backbone": params.backbone, "weights": _weights_id(extractor.weights_path, params.seed),
        "precision": extractor.precision, "device": extractor.device.type, "v": 2,
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:32]


def _weights_id(path, seed) -> str:
    if path is None:
        return f"random-seed{seed}"
    st = os.stat(path)
    return f"{Path(path).resolve()}:{st.st_size}:{int(st.st_mtime)}"


def _compute_features(tiled, rows, cols, extractor, params, cache_dir: Path, key: str, progress):
    """Features of the valid tiles as an ``NpyFile``, from the cache when possible."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_parts(cache_dir)
    final = cache_dir / f"{key}.npy"
    if params.use_cache and final.exists():
        try:
            feats = NpyFile(final)
        except (OSError, ValueError):
            feats = None
        if feats is not None and feats.shape == (len(rows), extractor.dim):
            progress("features", len(rows), len(rows), "reused cached features")
            return feats, True, final
    from .features import extract_features

    tmp = cache_dir / f".{key}.part-{os.getpid()}.npy"
    try:
        out = NpyFile(tmp, shape=(len(rows), extractor.dim))
        extract_features(tiled, rows, cols, extractor, out, batch_size=params.batch_size,
                         progress=progress.stage("features"))
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()
    return NpyFile(final), False, final


def _remove_stale_parts(folder: Path) -> None:
    """Delete partial feature files left by engine processes that were killed (their pid is gone)."""
    for part in folder.glob(".*.part-*.npy"):
        try:
            pid = int(part.stem.rsplit("-", 1)[1])
            os.kill(pid, 0)
        except ProcessLookupError:
            part.unlink(missing_ok=True)
        except (ValueError, PermissionError, OSError):
            continue


def tile_frames(tiled, rows, cols, columns: dict, chunk: int = 20000):
    """GeoDataFrames of tile polygons in the raster's CRS, ``chunk`` tiles at a time."""
    import geopandas as gpd
    import shapely

    g = tiled.grid
    transformer = None
    if tiled.warped:
        from pyproj import Transformer

        transformer = Transformer.from_crs(tiled.working_crs, tiled.crs, always_xy=True)
    for s in range(0, len(rows), chunk):
        r, c = rows[s: s + chunk], cols[s: s + chunk]
        corners = g.corners(r, c)
        if transformer is not None:
            x, y = transformer.transform(corners[..., 0], corners[..., 1])
            corners = np.stack([x, y], axis=-1)
        polys = shapely.polygons(np.concatenate([corners, corners[:, :1]], axis=1))
        data = {name: values[s: s + chunk] for name, values in columns.items()}
        yield gpd.GeoDataFrame(data, geometry=polys, crs=tiled.crs.to_wkt())


def run_cluster(params: ClusterParams, progress: Progress | None = None) -> dict:
    """Run the ``cluster`` tool; returns the manifest (also written to disk)."""
    from .area import tiles_inside
    from .cluster import KMeansTiles
    from .features import FeatureExtractor
    from .io import OutputSet, sha256_file, versions, write_cluster_tif, write_gpkg_chunks, write_json
    from .style import cluster_rgb
    from .tiling import TiledRaster

    progress = progress or Progress("none")
    timings: dict[str, float] = {}
    t_all = t = time.perf_counter()

    def lap(name):
        nonlocal t
        now = time.perf_counter()
        timings[name] = round(now - t, 3)
        t = now

    _check_params(params)
    outputs = RunOutputs.for_out(params.out, params.quicklook)
    outset = OutputSet(outputs.paths(), overwrite=params.overwrite)
    progress("open", 0, 0, f"opening {params.raster}")
    with outset, TiledRaster(params.raster, params.tile_size, params.overlap, params.edge,
                             params.bands, seed=params.seed) as tiled:
        inside = tiles_inside(tiled, params.extent, params.area)
        if not inside.any():
            raise BadInput("no tile centre lies inside the --extent/--area limit; check that it overlaps the raster "
                           f"{params.raster!r} (the extent is in the raster's CRS).")
        extractor = FeatureExtractor(params.backbone, params.weights, params.device, params.precision,
                                     seed=params.seed)
        lap("open")
        g = tiled.grid
        progress("scan", 0, g.n_rows, f"{len(g)} tiles of {g.size} px")
        valid = tiled.valid_fraction(progress=progress.stage("scan"))
        keep = (valid >= params.min_valid) & inside
        if not keep.any():
            raise BadInput(f"every tile of {params.raster!r} (inside any area limit) has less than --min-valid "
                           f"{params.min_valid} valid pixels (best: {valid[inside].max():.2f}). "
                           "Lower --min-valid or check the nodata value.")
        if params.k > keep.sum():
            raise BadInput(f"--k {params.k} is larger than the number of valid tiles ({int(keep.sum())}). "
                           "Use a smaller K, a smaller tile size or a lower --min-valid.")
        rows, cols = np.nonzero(keep)
        lap("scan")

        checksum = sha256_file(params.raster)
        key = feature_key(checksum, tiled, extractor, params, rows, cols)
        tmpdir = None
        cache_dir = Path(params.cache_dir) if params.cache_dir else default_cache_dir()
        if not params.use_cache:
            tmpdir = tempfile.TemporaryDirectory(prefix="urbanform-")
            cache_dir = Path(tmpdir.name)
        progress("features", 0, len(rows), f"{extractor.spec.name} on {extractor.device.type} ({extractor.precision})")
        feats, cache_hit, _ = _compute_features(tiled, rows, cols, extractor, params, cache_dir, key, progress)
        lap("features")

        progress("cluster", 0, 1, f"k-means, K={params.k}")
        est = KMeansTiles(params.k, params.pca_dims, params.whiten, params.seed).fit(feats)
        _, dist, scores = est.assign(feats)
        progress("cluster", 1, 1, f"{est.n_components_} PCA dims")
        lap("cluster")

        progress("write", 0, 4, str(outputs.gpkg))
        ids = rows * g.n_cols + cols
        columns = {
            "tile_id": ids.astype(np.int64), "row": rows.astype(np.int32), "col": cols.astype(np.int32),
            "cluster": est.labels_.astype(np.int32), "clust_dist": dist.astype(np.float32),
            "pc1": scores[:, 0].astype(np.float32), "pc2": scores[:, 1].astype(np.float32),
            "valid_frac": valid[rows, cols].astype(np.float32),
        }
        write_gpkg_chunks(outset.temp(outputs.gpkg), "tiles", tile_frames(tiled, rows, cols, columns),
                          tiled.crs.to_wkt())
        progress("write", 1, 4)
        grid_labels = np.full(g.shape, -1, dtype=np.int32)
        grid_labels[rows, cols] = est.labels_
        colors = [cluster_rgb(i) for i in range(params.k)]
        write_cluster_tif(outset.temp(outputs.tif), grid_labels, g.cell_transform(), tiled.working_crs, colors)
        progress("write", 2, 4)
        if outputs.quicklook is not None:
            from .quicklook import write_quicklook

            write_quicklook(outset.temp(outputs.quicklook), tiled, grid_labels, params.k,
                            title=f"{Path(params.raster).name}: K={params.k}, {g.size} px tiles")
        progress("write", 3, 4)
        settings = {"tile_px": g.size, "stride_px": g.stride, "edge": g.edge, "bands": tiled.bands,
                    "stretch": tiled.stretch.as_list() if tiled.stretch else None,
                    "working_crs": tiled.working_crs.to_string(), "backbone": params.backbone,
                    "weights": params.weights, "pixel_size_m": tiled.pixel_size_m}
        est.save(outset.temp(outputs.model), extra=settings)
        counts = np.bincount(est.labels_, minlength=params.k)
        lap("write")
        manifest = {
            "tool": "cluster",
            "parameters": asdict(params),
            "inputs": {"raster": os.path.abspath(params.raster), "sha256": checksum,
                       "width": tiled.info.width, "height": tiled.info.height, "bands": tiled.info.count,
                       "dtype": tiled.info.dtype, "crs": tiled.crs.to_string()},
            "tiling": {**settings, "n_rows": g.n_rows, "n_cols": g.n_cols, "tiles_total": len(g),
                       "tiles_valid": int(len(rows)), "warped": tiled.warped},
            "features": {"backbone": params.backbone, "dim": extractor.dim,
                         "weights_file": str(extractor.weights_path) if extractor.weights_path else None,
                         "device": str(extractor.device), "precision": extractor.precision,
                         "cache_key": key, "cache_hit": cache_hit},
            "clustering": {"method": "kmeans", "k": params.k, "pca_dims": est.n_components_,
                           "pca_dims_requested": params.pca_dims, "whiten": params.whiten,
                           "explained_variance": float(est.explained_variance_ratio_.sum()),
                           "inertia": est.inertia_, "cluster_sizes": counts.tolist()},
            "seed": params.seed,
            "outputs": {k: str(v) for k, v in asdict(outputs).items() if v is not None},
            "versions": versions(),
            "timings_s": timings,
        }
        timings["total"] = round(time.perf_counter() - t_all, 3)
        write_json(outset.temp(outputs.manifest), manifest)
        outset.commit()
        progress("write", 4, 4, f"wrote {outputs.gpkg}")
        if tmpdir is not None:
            tmpdir.cleanup()
    return manifest


def probe(raster: str, tile_size="64px", overlap="0px", edge="drop", bands=None, speed: bool = False,
          backbone="resnet18", weights="imagenet", device="auto", precision="auto", batch_size=None,
          extent: str | None = None, area: str | None = None) -> dict:
    """What a run would do, cheaply: the tile grid, and with ``speed`` the model's tiles/s here.

    Without ``speed`` torch is never imported, so the answer comes in well under
    a second; the plugin uses it for inline validation and the time estimate.
    ``tiles`` counts the tiles inside ``extent``/``area`` when given (before
    the validity scan, which needs the pixels).
    """
    from .area import tiles_inside
    from .tiling import TiledRaster

    with TiledRaster(raster, tile_size, overlap, edge, bands, stretch_samples=1) as tiled:
        g = tiled.grid
        count = int(tiles_inside(tiled, extent, area).sum()) if (extent or area) else len(g)
        out = {"tiles": count, "rows": g.n_rows, "cols": g.n_cols, "tile_px": g.size, "stride_px": g.stride,
               "warped": tiled.warped, "working_crs": tiled.working_crs.to_string(),
               "pixel_size_m": tiled.pixel_size_m}
    if speed:
        from .features import FeatureExtractor, default_batch_size

        extractor = FeatureExtractor(backbone, weights, device, precision)
        batch = batch_size or default_batch_size(g.size, extractor.device)
        tiles = np.random.default_rng(0).integers(0, 256, size=(batch, 3, g.size, g.size), dtype=np.uint8)
        extractor(tiles)                                   # warm-up
        t0 = time.perf_counter()
        n = 0
        while n < 2 * batch or time.perf_counter() - t0 < 1.0:
            extractor(tiles)
            n += batch
        out.update(tiles_per_s=n / (time.perf_counter() - t0), device=str(extractor.device),
                   precision=extractor.precision, batch_size=batch)
    return out
