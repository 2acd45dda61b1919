"""Segmentation on Dask: bands of rows run on the workers, stitched and merged by the client.

A band (``partitions.Band``: whole polygonisation blocks of rows) runs the chip
rows that reach it, from the first chip row over its first row, so each of its
rows gets every chip's probabilities in the order one process adds them
(``segmentation.infer.predict_stream``), and is polygonised block by block from
its first row (``segmentation.polygons.BlockPolygonizer``). A band writes into
the store: its mask rows (and probabilities) as GeoTIFFs, its finished
buildings as a GeoPackage, the pieces of buildings that reach its top or bottom
edge (WKB arrays), and, last, ``band-N.json`` with its counts: a band with its
``.json`` is whole (``--resume`` keeps it). The overlap of the chip rows above a
band is run twice (by it and by the band above): about ``chip / band rows`` of
extra inference.

The client then copies the bands' rows into the mask (COG) and probability
GeoTIFFs, appends their buildings to the layer, and joins the edge pieces of all
bands as pieces that meet across a block edge are joined
(``polygons.merge_edges``): the same buildings as one process finds.
"""
from __future__ import annotations

import json
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .partitions import Band, chip_rows_for
from .worker import cached

COPY_ROWS = 512                  # rows copied at a time from a band's GeoTIFFs into the outputs


@dataclass(frozen=True)
class SegmentJob:
    """One segmentation: the raster and the model file, the windows, the mask and polygon settings, where the
    model runs, and the store folder."""

    raster: str
    model: str
    resample: bool
    chip: int
    overlap: int
    threshold: float
    probability: bool
    min_area: float
    simplify: float
    regularize: bool
    block: int
    device: str
    precision: str
    batch: int
    store: str
    threads: "int | None" = None
    tta: bool = False

    @property
    def folder(self) -> Path:
        return Path(self.store)

    def path(self, band: Band, what: str) -> Path:
        """``band-000003.mask.tif``, ``.prob.tif``, ``.gpkg``, ``.edges.npz``, ``.json`` in the store."""
        return self.folder / f"band-{band.index:06d}.{what}"

    def done(self, band: Band) -> bool:
        return self.path(band, "json").is_file()


@dataclass(frozen=True)
class _ReaderSpec:
    raster: str
    model: str
    resample: bool

    def open(self):
        from ..segmentation.infer import Reader, load_model

        return Reader(self.raster, load_model(self.model)[1], self.resample)


@dataclass(frozen=True)
class _RunnerSpec:
    model: str
    device: str
    precision: str
    batch: int
    threads: "int | None"
    tta: bool = False

    def build(self):
        import torch

        from ..segmentation.infer import Runner, load_model
        from .worker import set_torch_threads

        set_torch_threads(self.threads)
        return Runner(load_model(self.model)[0], torch.device(self.device), self.precision, self.batch,
                      tta=self.tta)


def _wkb(polys: list) -> dict:
    import shapely

    blobs = [shapely.to_wkb(p) for p in polys]
    offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
    return {"wkb": np.frombuffer(b"".join(blobs), dtype=np.uint8), "offsets": offsets}


def _from_wkb(path: Path) -> list:
    import shapely

    with np.load(path, allow_pickle=False) as z:
        data, offsets = z["wkb"].tobytes(), z["offsets"]
    return [shapely.from_wkb(data[a:b]) for a, b in zip(offsets[:-1], offsets[1:], strict=True)]


def segment_band(band: Band, job: SegmentJob) -> dict:
    """Run one band on this worker into the store; returns its counts (also in ``band-N.json``)."""
    import rasterio
    from affine import Affine
    from rasterio.windows import Window

    from ..io import atomic_path, write_gpkg_chunks, write_json_atomic
    from ..segmentation.infer import (MASK_NODATA, PROB_NODATA, chip_starts, mask_rows, predict_stream,
                                      segment_env, write_profile)
    from ..segmentation.polygons import BlockPolygonizer, buildings_frame, to_crs_coords

    t0 = time.perf_counter()
    reader_spec = _ReaderSpec(job.raster, job.model, job.resample)
    runner_spec = _RunnerSpec(job.model, job.device, job.precision, job.batch, job.threads, job.tta)
    counts = {"building_px": 0, "valid_px": 0}
    with segment_env(), cached(reader_spec, reader_spec.open) as reader, \
            cached(runner_spec, runner_spec.build) as runner:
        W, H, crs, transform = reader.width, reader.height, reader.ds.crs, reader.ds.transform
        ys = chip_starts(H, job.chip, job.chip - job.overlap)
        poly = BlockPolygonizer(W, H, job.block, start_row=band.row0)
        band_transform = transform @ Affine.translation(0, band.row0)
        rows = band.row1 - band.row0

        def in_crs(polys: list) -> list:
            return list(to_crs_coords(np.array(polys, dtype=object), transform)) if polys else []

        with atomic_path(job.path(band, "mask.tif")) as mask_tmp, \
                (atomic_path(job.path(band, "prob.tif")) if job.probability else nullcontext()) as prob_tmp, \
                atomic_path(job.path(band, "gpkg")) as gpkg_tmp, \
                atomic_path(job.path(band, "edges.npz")) as edges_tmp:
            mdst = rasterio.open(mask_tmp, "w", **write_profile(W, rows, band_transform, crs, "uint8", MASK_NODATA))
            pdst = rasterio.open(prob_tmp, "w", **write_profile(W, rows, band_transform, crs, "float32",
                                                                 PROB_NODATA)) if prob_tmp else None

            def frames():
                for r0, p, valid in predict_stream(reader, runner, job.chip, job.overlap,
                                                   chip_rows_for(band, ys, job.chip)):
                    a, b = max(r0, band.row0), min(r0 + len(p), band.row1)
                    if a >= b:
                        continue                     # rows of the band above, or below this band
                    p, valid = p[a - r0: b - r0], valid[a - r0: b - r0]
                    build, m = mask_rows(p, valid, job.threshold)
                    win = Window(0, a - band.row0, W, b - a)
                    mdst.write(m, 1, window=win)
                    if pdst is not None:
                        pdst.write(np.where(valid, p, PROB_NODATA).astype(np.float32), 1, window=win)
                    counts["building_px"] += int(build.sum())
                    counts["valid_px"] += int(valid.sum())
                    done = poly.add(build)
                    if done:
                        yield buildings_frame(in_crs(done), crs, job.min_area, job.simplify, job.regularize)

            try:
                counts["buildings"] = write_gpkg_chunks(gpkg_tmp, "buildings", (f for f in frames() if len(f)), crs)
            finally:
                mdst.close()
                if pdst is not None:
                    pdst.close()
            with open(edges_tmp, "wb") as fh:
                np.savez(fh, **_wkb(poly.band_edges()))
            if not counts["buildings"]:
                Path(gpkg_tmp).touch()               # (an empty file: the band has no building of its own)
    counts["seconds"] = time.perf_counter() - t0
    write_json_atomic(job.path(band, "json"), counts)           # last: the band is whole
    return counts


def segment_on_dask(session, job: SegmentJob, bands: list[Band], *, width: int, height: int, crs, transform,
                    gpkg: Path, mask: Path, staging: Path, prob: "Path | None", resume: bool, progress) -> dict:
    """Run ``bands`` on the workers (keeping the finished ones with ``resume``), then write the buildings layer to
    ``gpkg``, the mask COG to ``mask`` (through ``staging``) and with ``prob`` the probabilities, as
    ``segmentation.infer.segment_raster`` does; returns the same counts."""
    import shutil

    from ..segmentation.infer import chip_starts, remove_staging, to_cog, write_buildings
    from .features import check_visible

    t0 = time.perf_counter()
    if not resume and job.folder.exists():
        shutil.rmtree(job.folder)
    job.folder.mkdir(parents=True, exist_ok=True)
    check_visible(session, job.folder, None)
    ys = chip_starts(height, job.chip, job.chip - job.overlap)

    def own_rows(band: Band) -> int:                 # the chip rows whose rows end up in the band
        return sum(1 for y in ys if band.row0 <= y < band.row1)

    todo = [b for b in bands if not (resume and job.done(b))]
    done = sum(own_rows(b) for b in bands if b not in todo)
    kept = f"; {len(bands) - len(todo)} kept from the interrupted run" if resume else ""
    progress("segment", done, len(ys), f"{len(bands)} bands on {session.n_workers} workers{kept}")
    finished = len(bands) - len(todo)

    def on_done(band, _):
        nonlocal done, finished
        done += own_rows(band)
        finished += 1
        progress("segment", done, len(ys), f"{finished} of {len(bands)} bands")

    session.run(segment_band, todo, job, name="segment", on_done=on_done)
    session.runs.append({"stage": "segment", "bands": len(bands), "band_rows": bands[0].row1 - bands[0].row0,
                         "kept": len(bands) - len(todo)})
    t_inf = time.perf_counter() - t0
    counts = [json.loads(job.path(b, "json").read_text(encoding="utf-8")) for b in bands]
    progress("write", 0, 1, "stitching the bands")
    try:
        _stitch(job, bands, "mask.tif", staging, width, height, crs, transform, "uint8")
        if prob is not None:
            _stitch(job, bands, "prob.tif", prob, width, height, crs, transform, "float32")
        n_buildings = write_buildings(gpkg, _frames(job, bands, counts, crs, transform), crs)
        progress("write", 0, 1, "mask COG")
        to_cog(staging, mask)
    finally:
        remove_staging(staging)
    shutil.rmtree(job.folder, ignore_errors=True)
    return {"n_buildings": int(n_buildings), "building_px": sum(c["building_px"] for c in counts),
            "valid_px": sum(c["valid_px"] for c in counts), "inference_s": t_inf}


def _stitch(job: SegmentJob, bands: list[Band], what: str, dst: Path, width: int, height: int, crs, transform,
            dtype: str) -> None:
    """The bands' GeoTIFFs ``what`` copied, rows in order, into one GeoTIFF ``dst``."""
    import rasterio
    from rasterio.windows import Window

    from ..segmentation.infer import MASK_NODATA, PROB_NODATA, write_profile

    nodata = MASK_NODATA if dtype == "uint8" else PROB_NODATA
    with rasterio.open(dst, "w", **write_profile(width, height, transform, crs, dtype, nodata)) as out:
        for band in bands:
            with rasterio.open(job.path(band, what)) as src:
                for r in range(0, src.height, COPY_ROWS):
                    win = Window(0, r, width, min(COPY_ROWS, src.height - r))
                    out.write(src.read(1, window=win), 1, window=Window(0, band.row0 + r, width, win.height))


def _frames(job: SegmentJob, bands: list[Band], counts: list[dict], crs, transform):
    """The bands' own buildings in order, then the buildings made of their edge pieces."""
    import pyogrio

    from ..segmentation.polygons import buildings_frame, merge_edges, to_crs_coords

    for band, c in zip(bands, counts, strict=True):
        if c["buildings"]:
            yield pyogrio.read_dataframe(str(job.path(band, "gpkg")), layer="buildings")
    edges = [p for band in bands for p in _from_wkb(job.path(band, "edges.npz"))]
    merged = merge_edges(edges)
    if merged:
        polys = list(to_crs_coords(np.array(merged, dtype=object), transform))
        yield buildings_frame(polys, crs, job.min_area, job.simplify, job.regularize)
