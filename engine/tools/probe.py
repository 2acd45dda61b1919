"""The probe tool: what a run would do, cheaply (the tile grid, and with --speed the tiles/s)."""
from __future__ import annotations

import time

import numpy as np

from ..contract import defaults


def probe(raster: str, tile_size="64px", overlap="0px", edge="drop", bands=None, speed: bool = False,
          backbone=defaults.DEFAULT_BACKBONE, weights=defaults.DEFAULT_WEIGHTS, device="auto", precision="auto",
          batch_size=None, extent: str | None = None, area: str | None = None) -> dict:
    """What a run would do, cheaply: the tile grid, and with ``speed`` the model's tiles/s here.

    Without ``speed`` torch is never imported, so the answer comes in well under
    a second; the plugin uses it for inline validation and the time estimate.
    ``tiles`` counts the tiles inside ``extent``/``area`` when given (before
    the validity scan, which needs the pixels).
    """
    from ..raster.area import tiles_inside
    from ..raster.tiling import TiledRaster

    with TiledRaster(raster, tile_size, overlap, edge, bands, stretch_samples=1) as tiled:
        g = tiled.grid
        count = int(tiles_inside(tiled, extent, area).sum()) if (extent or area) else len(g)
        out = {"tiles": count, "rows": g.n_rows, "cols": g.n_cols, "tile_px": g.size, "stride_px": g.stride,
               "warped": tiled.warped, "working_crs": tiled.working_crs.to_string(),
               "pixel_size_m": tiled.pixel_size_m}
    if speed:
        from ..features.extract import FeatureExtractor, default_batch_size

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
