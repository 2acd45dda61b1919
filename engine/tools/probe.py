"""The probe tool: what a run would do, cheaply (the tile grid, and with ``speed`` the tiles/s)."""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..contract import defaults
from ..contract import problems as P
from ..errors import BadInput
from . import check_params, study_params


@dataclass
class ProbeParams:
    """A ``probe``: the fields and defaults ``contract.tools.PROBE`` declares."""

    raster: str
    tile_size: str = "64px"
    overlap: str = "0px"
    edge: str = "drop"
    bands: str | None = None
    backbone: str = defaults.DEFAULT_BACKBONE
    weights: str = defaults.DEFAULT_WEIGHTS
    device: str = "auto"
    precision: str = "auto"
    batch_size: int | None = None
    extent: str | None = None
    area: str | None = None
    speed: bool = False
    plan: bool = False
    dask: str | None = None


def run(params: ProbeParams, progress=None) -> dict:  # noqa: ARG001 - every tool's signature
    """What a run would do, cheaply: the tile grid, and with ``speed`` the model's tiles/s here.

    Without ``speed`` torch is never imported, so the answer comes in well under
    a second; the plugin uses it for inline validation and the time estimate.
    ``tiles`` counts the tiles inside ``extent``/``area`` when given (before
    the validity scan, which needs the pixels).

    With ``plan``: what a ``cluster --dask`` run of this raster would cost (``engine.distributed.plan``): one
    partition of its tiles is timed here, or on a worker of ``dask``, and the tile count, feature store size,
    memory per worker and the time for each of ``contract.tools.PLAN_WORKERS`` workers are estimated from it.
    """
    from ..raster.area import tiles_inside
    from ..raster.tiling import TiledRaster

    check_params("probe", params)
    params = study_params("probe", params)
    p = params
    with TiledRaster(p.raster, p.tile_size, p.overlap, p.edge, p.bands, stretch_samples=1) as tiled:
        g = tiled.grid
        count = int(tiles_inside(tiled, p.extent, p.area).sum()) if (p.extent or p.area) else len(g)
        if count == 0 and (p.extent or p.area):
            _refuse_off_raster(tiled, p)
        out = {"tiles": count, "rows": g.n_rows, "cols": g.n_cols, "tile_px": g.size, "stride_px": g.stride,
               "warped": tiled.warped, "working_crs": tiled.working_crs.to_string(),
               "pixel_size_m": tiled.pixel_size_m}
    if p.plan:
        out["plan"] = _plan(p, tiled, count)
    if p.speed:
        from ..features.extract import FeatureExtractor, default_batch_size

        extractor = FeatureExtractor(p.backbone, p.weights, p.device, p.precision, **_DEFAULT_RECIPE)
        batch = p.batch_size or default_batch_size(max(g.size, defaults.DEFAULT_CNN_PX), extractor.device)
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


# the speed and plan are those of cluster's default feature recipe (--pool, --cnn-px)
_DEFAULT_RECIPE = {"pool": defaults.DEFAULT_POOL, "cnn_px": defaults.DEFAULT_CNN_PX}


def _plan(p: ProbeParams, tiled, count: int) -> dict:
    """``engine.distributed.plan``'s estimate, from a partition timed here or on a worker of ``p.dask``."""
    from ..contract.tools import PLAN_WORKERS
    from ..distributed.partitions import partition_tiles
    from ..distributed.plan import estimate, sample_positions, time_partition
    from ..distributed.session import dask_session
    from ..distributed.worker import ExtractorSpec, RasterSpec, describe_device
    from ..features.extract import default_batch_size

    spec = ExtractorSpec(p.backbone, p.weights, p.device, p.precision, **_DEFAULT_RECIPE)
    raster = RasterSpec(tiled.path, str(tiled.tile_size), str(tiled.overlap_len), tiled.edge, tuple(tiled.bands))
    g = tiled.grid
    with dask_session(p.dask) as session:
        call = session.call if session is not None else (lambda f, *a: f(*a))
        import torch

        device = torch.device(call(describe_device, p.device, p.precision)["device"])
        batch = int(p.batch_size or default_batch_size(max(g.size, defaults.DEFAULT_CNN_PX), device))
        rows, cols = sample_positions(g.n_rows, g.n_cols, partition_tiles(batch))
        timed = call(time_partition, raster, spec, rows, cols, batch)
        where = f"a worker of {session.address}" if session is not None else "this process"
    return {**estimate(count, timed, batch, PLAN_WORKERS), "timed_on": where}


def _refuse_off_raster(tiled, p: ProbeParams) -> None:
    """BadInput naming --extent or --area (the one that holds no tile centre on its own) as ``cluster`` refuses
    a limit off the raster: a run with it would have no tile, so the probe answers exit 2, not ``tiles: 0``."""
    from ..raster.area import tiles_inside

    param = "extent" if p.extent and not tiles_inside(tiled, p.extent, None).any() else (
        "area" if p.area else "extent")
    raise BadInput(f"no tile centre lies inside the --{param} limit; check that it overlaps the raster "
                   f"{p.raster!r} (the extent is in the raster's CRS).", param=param, code=P.NO_OVERLAP)
