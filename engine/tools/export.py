"""The ``export`` tool: a run's GeoPackage layers as Shapefiles, GeoPackages or CSV tables.

``run(ExportParams(run=RUN.gpkg, format='shp'|'gpkg'|'csv', out=OUT_DIR))`` (or
``run_export(RUN.gpkg, fmt, OUT_DIR)``) writes one file per layer, named
``<RUN stem>_<layer>.<ext>`` (``contract.outputs.export_path``: e.g.
``city_tiles.shp``, ``city_clusters.shp``):

- ``shp``: Shapefile with ``.shp/.shx/.dbf``, the CRS in ``.prj`` and the
  encoding in ``.cpg`` (UTF-8). Field names are kept exactly; a layer with a
  field name longer than 10 characters (bytes) is refused before anything is
  written, naming the layer and the field (the engine's own layers never
  have one).
- ``gpkg``: one GeoPackage (1.3) per layer, the layer name kept.
- ``csv``: attributes only, no geometry, UTF-8, header row.

Files are written under temporary names next to their final ones
(``engine.io.OutputSet``) and renamed into place only when every layer has
been written; existing files (any Shapefile
part included) are replaced only with ``overwrite=True``. OUT_DIR is created
when its parent exists.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..contract import problems as P
from ..contract.outputs import export_path
from ..contract.tools import EXPORT_FORMATS
from ..errors import BadInput
from ..progress import committing
from . import check_params, locked_outputs, run_layers

SHP_PARTS = (".shp", ".shx", ".dbf", ".prj", ".cpg")
MAX_SHP_FIELD = 10


NOT_DATA = ("layer_styles",)


@dataclass
class ExportParams:
    """An ``export`` run: the fields and defaults ``contract.tools.EXPORT`` declares."""

    run: str
    format: str = EXPORT_FORMATS[0]
    out: "str | None" = None            # the output folder (required: a None is refused by the checks)
    overwrite: bool = False


def _layers(run: Path) -> list[str]:
    layers = run_layers(run)          # BadInput naming RUN, in our words, when GDAL cannot open it
    # QGIS keeps the styles it saves in the GeoPackage in a 'layer_styles' table: metadata, not a run layer
    return [name for name in layers if name not in NOT_DATA]


def output_files(run: "str | Path", fmt: str, out_dir: "str | Path", layers: list[str]) -> dict[str, list[Path]]:
    """Layer -> every file the export writes for it (the main file first)."""
    out = {}
    for layer in layers:
        main = export_path(run, layer, fmt, out_dir)
        out[layer] = [main.with_suffix(s) for s in SHP_PARTS] if fmt == "shp" else [main]
    return out


def _check_shp_fields(run: Path, layers: list[str]) -> None:
    import pyogrio

    for layer in layers:
        fields = [str(f) for f in pyogrio.read_info(str(run), layer=layer)["fields"]]
        long = [f for f in fields if len(f.encode("utf-8")) > MAX_SHP_FIELD]
        if long:
            raise BadInput(f"layer {layer!r} of {str(run)!r} has field names longer than {MAX_SHP_FIELD} "
                           f"characters ({', '.join(long)}), which a Shapefile cannot hold unchanged; export "
                           "it with --format gpkg or csv, or rename the fields.")


def run(params: ExportParams, progress=None) -> dict:
    """Export every layer of ``params.run``; returns the manifest: ``outputs`` maps each layer to its main file.

    The files are locked (one writer per output) before the run looks whether they exist."""
    check_params("export", params)
    t0 = time.monotonic()
    progress = progress or (lambda *a, **k: None)
    run, out_dir, fmt = Path(params.run), Path(params.out), params.format
    layers = _layers(run)
    if not layers:
        raise BadInput(f"RUN {str(run)!r} has no layers to export.", param="run")
    files = output_files(run, fmt, out_dir, layers)
    if fmt == "shp":
        _check_shp_fields(run, layers)
    made = not out_dir.exists()
    out_dir.mkdir(exist_ok=True)              # the lock files go next to the outputs
    try:
        with locked_outputs([p for ps in files.values() for p in ps]):
            return _export(params, run, out_dir, fmt, layers, files, progress, t0)
    except BaseException:
        if made:
            with contextlib.suppress(OSError):
                out_dir.rmdir()               # only when empty: a failed export leaves no folder of its own
        raise


def _export(params: ExportParams, run: Path, out_dir: Path, fmt: str, layers: list[str], files: dict, progress,
            t0: float) -> dict:
    import pyogrio

    from ..io import GPKG_OPTIONS, OutputSet

    if not params.overwrite:
        taken = [str(p) for ps in files.values() for p in ps if p.exists()]
        if taken:
            raise BadInput(f"{', '.join(taken)} already exist; choose another --out, or pass --overwrite to "
                           "replace them.", param="out", code=P.EXISTS)
    with OutputSet([p for ps in files.values() for p in ps], overwrite=True) as outs:
        temps = {p: outs.temp(p) for ps in files.values() for p in ps}     # a Shapefile's parts share one stem
        for i, layer in enumerate(layers):
            progress("export", i, len(layers), layer)
            target = temps[files[layer][0]]
            if fmt == "csv":
                df = pyogrio.read_dataframe(str(run), layer=layer, read_geometry=False)
                df.to_csv(target, index=False, encoding="utf-8")
            else:
                gdf = pyogrio.read_dataframe(str(run), layer=layer)
                if fmt == "shp":
                    pyogrio.write_dataframe(gdf, str(target), driver="ESRI Shapefile", encoding="UTF-8")
                    cpg = target.with_suffix(".cpg")
                    if not cpg.exists():
                        cpg.write_text("UTF-8\n", encoding="ascii")
                else:
                    pyogrio.write_dataframe(gdf, str(target), layer=layer, driver="GPKG",
                                            dataset_options=GPKG_OPTIONS, layer_options={"SPATIAL_INDEX": "YES"})
        # a part not written (e.g. .prj of a layer without CRS) removes a stale one of an older export
        with committing():
            outs.commit(missing_ok=True)
        progress("export", len(layers), len(layers), f"wrote {len(layers)} layers to {out_dir}")
    return {"tool": "export", "parameters": asdict(params), "layers": layers,
            "outputs": {layer: str(paths[0]) for layer, paths in files.items()},
            "timings_s": {"total": round(time.monotonic() - t0, 3)}}


def run_export(run_gpkg: "str | Path", fmt: str, out_dir: "str | Path", overwrite: bool = False,
               progress=None) -> dict[str, Path]:
    """``run(ExportParams(...))`` for a quick call from Python; returns layer -> the main file written."""
    manifest = run(ExportParams(str(run_gpkg), fmt, str(out_dir), overwrite), progress)
    return {layer: Path(path) for layer, path in manifest["outputs"].items()}
