"""Assign the tiles of another raster to the clusters of a saved model (the ``predict`` tool).

Another city or another date goes into the same clusters only if its tiles
look like the model's tiles: same bands, and about the same ground size per
pixel (a CNN's features depend on scale). ``predict`` refuses a raster that
differs, with the numbers; ``--resample`` instead cuts tiles of the model's
ground size and resizes them to the model's pixel size. Values are stretched
with the new raster's own 2-98 % range, as the model's raster was with its
own, so a brighter date is not a different place.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import BadInput
from ..progress import Progress, committing
from . import check_params, check_vector_inputs, locked_outputs


@dataclass
class PredictParams:
    """A ``predict`` run: the fields and defaults ``contract.tools.PREDICT`` declares."""

    model: str
    raster: str
    out: str
    resample: bool = False
    res_tolerance: float = 0.1           # accepted difference in ground pixel size (10 %)
    device: str = "auto"
    precision: str = "auto"
    batch_size: int | None = None
    extent: str | None = None
    area: str | None = None
    quicklook: bool = True
    overwrite: bool = False


def check_compatible(model, raster: str, resample: bool, tolerance: float) -> dict:
    """Band count and resolution checks; returns how to tile (size text, resize px or None)."""
    from ..raster.tiling import ground_pixel_size, inspect_raster

    info = inspect_raster(raster)
    t = model.tiling
    if info.count != t["n_bands"]:
        raise BadInput(
            f"raster {raster!r} has {info.count} band(s) but the model was made for {t['n_bands']}-band imagery "
            f"(bands {t['bands']} used); its features would mean something else. Use a raster of the same "
            "kind of sensor, or cluster this raster afresh with `cluster`.")
    model_res = t.get("ground_pixel_m")
    here = ground_pixel_size(raster)
    ratio = here / model_res if model_res else 1.0
    plan = {"tile_size": t["tile_size"], "overlap": t["overlap"], "resize_px": None,
            "ground_pixel_m": here, "model_ground_pixel_m": model_res, "resolution_ratio": ratio}
    if abs(ratio - 1.0) > tolerance:
        if not resample:
            raise BadInput(
                f"raster {raster!r} has {here:.3g} m pixels but the model was made on {model_res:.3g} m pixels "
                f"({ratio:.2f}x, tolerance {tolerance:.0%}); tiles would show the ground at another scale. "
                "Add --resample to cut tiles of the model's ground size and resize them, or raise "
                "--res-tolerance.")
        ground = t["tile_px"] * model_res
        overlap = (t["tile_px"] - t["stride_px"]) * model_res
        plan.update(tile_size=f"{ground:.6g}m", overlap=f"{overlap:.6g}m", resize_px=t["tile_px"])
    return plan


class ResizedExtractor:
    """A FeatureExtractor seen through a resize of every tile to ``px`` (for --resample)."""

    def __init__(self, extractor, px: int):
        self.extractor, self.px = extractor, int(px)
        self.device, self.dim = extractor.device, extractor.dim

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        x = torch.from_numpy(np.ascontiguousarray(tiles)).float()
        x = F.interpolate(x, size=(self.px, self.px), mode="bilinear", antialias=True, align_corners=False)
        return self.extractor(x.round().clamp(0, 255).to(torch.uint8).numpy())


def run(params: PredictParams, progress: Progress | None = None) -> dict:
    """Run the ``predict`` tool; returns the manifest (also written to disk).

    The declared checks and the --area file first; then the outputs are locked (one writer per output)
    before the run looks whether they exist."""
    from .cluster import RunOutputs

    check_params("predict", params)
    check_vector_inputs("predict", params)
    progress = progress or Progress("none")
    outputs = RunOutputs.for_out(params.out, params.quicklook, model=False)
    with locked_outputs(outputs.paths()):
        return _run(params, progress, outputs)


def _run(params: PredictParams, progress, outputs) -> dict:
    from ..clustering.modelfile import load_model
    from ..features.extract import FeatureExtractor, extract_features
    from ..io import NpyFile, OutputSet, sha256_file, versions, write_json
    from ..raster.tiling import TiledRaster
    from .cluster import Laps, input_record, select_tiles, write_tile_outputs

    lap = Laps()
    outset = OutputSet(outputs.paths(), overwrite=params.overwrite)
    progress("open", 0, 0, f"loading {params.model}")
    model = load_model(params.model)
    plan = check_compatible(model, params.raster, params.resample, params.res_tolerance)
    t = model.tiling
    import tempfile

    with outset, TiledRaster(params.raster, plan["tile_size"], plan["overlap"], t["edge"], t["bands"]) as tiled, \
            tempfile.TemporaryDirectory(prefix="urbanform-") as workdir:
        extractor = FeatureExtractor(model.backbone, "none", params.device, params.precision, sobel=model.sobel,
                                     state_dict=model.network)
        if tiled.grid.size != t["tile_px"]:      # metre tiles on another resolution: back to the model's pixels
            plan["resize_px"] = t["tile_px"]
        lap("open")
        rows, cols, valid = select_tiles(tiled, t["min_valid"], params.extent, params.area, progress,
                                         params.raster)
        lap("scan")
        progress("features", 0, len(rows), f"{model.backbone} on {extractor.device.type} ({extractor.precision})")
        feats = NpyFile(Path(workdir) / "features.npy", shape=(len(rows), extractor.dim))
        source = ResizedExtractor(extractor, plan["resize_px"]) if plan["resize_px"] else extractor
        extract_features(tiled, rows, cols, source, feats, batch_size=params.batch_size,
                         progress=progress.stage("features"))
        lap("features")
        progress("cluster", 0, 1, f"assigning to the model's K={model.k} clusters")
        labels, dist, scores = model.kmeans.assign(feats)
        progress("cluster", 1, 1)
        lap("cluster")
        title = f"{Path(params.raster).name}: predicted with {Path(params.model).name}, K={model.k}"
        write_tile_outputs(outset, outputs, tiled, rows, cols, valid, labels, dist, scores, model.k, title, progress)
        checksum = sha256_file(params.raster)
        manifest = {
            "tool": "predict",
            "parameters": asdict(params),
            "model": {"path": os.path.abspath(params.model), "sha256": sha256_file(params.model),
                      "method": model.method, "backbone": model.backbone, "k": model.k, "tiling": t,
                      "trained_on": model.meta.get("raster")},
            "inputs": input_record(params.raster, tiled, checksum),
            "tiling": {**{k: v for k, v in plan.items()}, "tile_px": tiled.grid.size,
                       "tiles_valid": int(len(rows)), "warped": tiled.warped,
                       "stretch": tiled.stretch.as_list() if tiled.stretch else None},
            "clustering": {"method": model.method, "k": model.k,
                           "cluster_sizes": np.bincount(labels, minlength=model.k).tolist(),
                           "mean_distance": float(dist.mean())},
            "features": {"device": str(extractor.device), "precision": extractor.precision},
            "outputs": {k: str(v) for k, v in asdict(outputs).items() if v is not None},
            "versions": versions(),
        }
        manifest["timings_s"] = lap.total()
        write_json(outset.temp(outputs.manifest), manifest)
        with committing():
            outset.commit()
        progress("write", 4, 4, f"wrote {outputs.gpkg}")
    return manifest


run_predict = run
