"""Web map layers (XYZ tiles, WMS, WMTS) as engine input: written to a local GeoTIFF first (issue 14).

The engine reads files; a web map layer is a URL. Before a run, the dock and the Processing algorithms write the
layer over an extent at a ground resolution the user picks, with one shared pair of functions:

- :func:`plan`: what the download will be (main thread, no network): the output CRS (the layer's when it is
  projected, else the local UTM zone), the pixel size in that CRS for the ground resolution at the extent's
  latitude (Web Mercator's scale factor corrected), the size in pixels and megabytes, the web tiles to fetch
  roughly, and a refusal above :data:`MAX_MEGAPIXELS` or :data:`MAX_WEB_TILES` naming the fix;
- :func:`write_geotiff`: the download itself (a worker thread): ``QgsRasterFileWriter`` over a ``QgsRasterPipe``
  of a provider made in that thread, progress and cancel through a ``QgsRasterBlockFeedback``, RGB bands with
  the alpha kept as the GeoTIFF's mask, tiled and compressed, written under a temporary name and renamed; a
  failure or a cancel leaves no file, and an existing file is never replaced unless asked;
- :class:`WebMapTask`: :func:`write_geotiff` as a QgsTask (the dock); Processing calls it on its own thread.

No widgets here (plugin/runner/).
"""
from __future__ import annotations

import math
import os
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from qgis.core import (QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsCoordinateTransformContext,
                       QgsDistanceArea, QgsPointXY, QgsProviderRegistry, QgsRasterBlockFeedback,
                       QgsRasterFileWriter, QgsRasterLayer, QgsRasterPipe, QgsRasterProjector, QgsRectangle,
                       QgsTask)
from qgis.PyQt.QtCore import pyqtSignal

WEB_PROVIDERS = ("wms",)            # QGIS's provider of XYZ tiles, WMS and WMTS layers
DEFAULT_RESOLUTION_M = 0.3          # the method's imagery (Metzler et al., 0.3 m)
MIN_RESOLUTION_M = 0.05
MAX_MEGAPIXELS = 400                # 20 000 x 20 000 px, 1.2 GB of RGB: beyond it, a smaller extent or coarser pixels
MAX_WEB_TILES = 20000               # tile servers throttle (and their usage policies forbid) bulk downloads
WEB_TILE_PX = 256
MERCATOR_RES0 = 2 * math.pi * 6378137.0 / WEB_TILE_PX        # metres per pixel of zoom 0 in EPSG:3857
CREATE_OPTIONS = ["TILED=YES", "COMPRESS=DEFLATE", "PREDICTOR=2", "BIGTIFF=IF_SAFER"]
BLOCK_PX = 1024                     # the writer's block: one request per block for WMS, its tiles for XYZ


def is_web_layer(layer) -> bool:
    """A web map layer (XYZ, WMS, WMTS) that :func:`write_geotiff` can write to a file."""
    return isinstance(layer, QgsRasterLayer) and layer.providerType() in WEB_PROVIDERS


@dataclass(frozen=True)
class WebPlan:
    """What writing a web layer will do: the grid of the GeoTIFF and the rough cost of fetching it."""

    source: str                     # the layer's data source (its URL and options)
    provider: str
    layer_crs: str                  # WKT of the layer's CRS
    crs: str                        # WKT of the GeoTIFF's CRS
    crs_name: str                   # 'EPSG:3857'
    extent: tuple                   # (xmin, ymin, xmax, ymax) in ``crs``, on the pixel grid
    pixel: float                    # pixel size in ``crs`` units
    resolution_m: float             # the ground resolution asked for
    width: int
    height: int
    web_tiles: int | None           # web tiles (XYZ) or requests (WMS) to fetch, roughly; None: not known
    zoom: int | None                # the XYZ zoom level the tiles come from (None: not XYZ)

    @property
    def megabytes(self) -> float:
        """The RGB pixels, uncompressed (the compressed file is smaller)."""
        return self.width * self.height * 3 / 1e6

    @property
    def megapixels(self) -> float:
        return self.width * self.height / 1e6

    def text(self) -> str:
        """'1000 x 667 px at 0.6 m (EPSG:3857) · about 2.0 MB · about 12 web tiles (zoom 18)'."""
        tiles = ""
        if self.web_tiles is not None:
            tiles = f" · about {self.web_tiles} web {'tiles' if self.zoom is not None else 'requests'}" + \
                (f" (zoom {self.zoom})" if self.zoom is not None else "")
        return (f"{self.width} x {self.height} px at {self.resolution_m:g} m ({self.crs_name}) · about "
                f"{self.megabytes:.1f} MB{tiles}")

    def problem(self) -> str | None:
        """Why this download is refused (too large), with the fix; None when it may go ahead."""
        if self.width < 1 or self.height < 1:
            return "The extent is empty at this resolution; choose a larger extent or a finer ground resolution."
        if self.megapixels > MAX_MEGAPIXELS:
            return (f"The web map layer would make a {self.width} x {self.height} px GeoTIFF ({self.megapixels:.0f} "
                    f"megapixels, more than {MAX_MEGAPIXELS}); choose a smaller extent or a coarser ground "
                    f"resolution than {self.resolution_m:g} m.")
        if self.web_tiles is not None and self.web_tiles > MAX_WEB_TILES:
            return (f"The web map layer would need about {self.web_tiles} web tiles (more than {MAX_WEB_TILES}); "
                    f"choose a smaller extent or a coarser ground resolution than {self.resolution_m:g} m.")
        return None

    def crs_object(self) -> QgsCoordinateReferenceSystem:
        return QgsCoordinateReferenceSystem.fromWkt(self.crs)


def utm_crs(lon: float, lat: float) -> QgsCoordinateReferenceSystem:
    """The WGS 84 / UTM zone of a longitude and latitude."""
    zone = min(60, max(1, int((lon + 180) // 6) + 1))
    return QgsCoordinateReferenceSystem(f"EPSG:{32600 + zone if lat >= 0 else 32700 + zone}")


def units_per_metre(crs: QgsCoordinateReferenceSystem, x: float, y: float,
                    context: QgsCoordinateTransformContext) -> float:
    """Map units of ``crs`` per metre on the ground at (x, y), east-west (1/cos(lat) in Web Mercator)."""
    distance = QgsDistanceArea()
    distance.setSourceCrs(crs, context)
    distance.setEllipsoid(crs.ellipsoidAcronym() or "EPSG:7030")
    step = 10.0
    ground = distance.measureLine(QgsPointXY(x - step / 2, y), QgsPointXY(x + step / 2, y))
    ground = distance.convertLengthMeasurement(ground, 0)              # QgsUnitTypes.DistanceMeters
    return step / ground if ground > 0 else 1.0


def _xyz_zooms(source: str) -> tuple[int, int] | None:
    """(zmin, zmax) of an XYZ source ('type=xyz&url=...&zmin=0&zmax=19'); None for WMS and WMTS."""
    fields = urllib.parse.parse_qs(source)
    if fields.get("type", [""])[0] != "xyz":
        return None
    return int(fields.get("zmin", ["0"])[0]), int(fields.get("zmax", ["18"])[0])


def plan(layer: QgsRasterLayer, extent: QgsRectangle, extent_crs: QgsCoordinateReferenceSystem,
         resolution_m: float, context: QgsCoordinateTransformContext | None = None) -> WebPlan:
    """The GeoTIFF :func:`write_geotiff` would write for ``layer`` over ``extent`` (in ``extent_crs``, clipped to the
    layer's extent) at ``resolution_m`` metres on the ground. Main thread, no network. Raises ValueError for an
    extent that does not overlap the layer or cannot be transformed."""
    context = context or QgsCoordinateTransformContext()
    layer_crs = layer.crs()
    if not layer_crs.isValid():
        raise ValueError(f"The web map layer {layer.name()!r} has no valid CRS.")
    if not resolution_m or resolution_m < MIN_RESOLUTION_M:
        raise ValueError(f"The ground resolution must be at least {MIN_RESOLUTION_M:g} m.")
    rect = QgsRectangle(extent)
    if extent_crs.isValid() and extent_crs != layer_crs:
        rect = QgsCoordinateTransform(extent_crs, layer_crs, context).transformBoundingBox(rect)
    rect = rect.intersect(layer.extent()) if not layer.extent().isEmpty() else rect
    if rect.isEmpty():
        raise ValueError(f"The extent does not overlap the web map layer {layer.name()!r}; zoom to an area it "
                         "covers or choose another extent.")
    crs = layer_crs
    if layer_crs.isGeographic():
        centre = QgsCoordinateTransform(layer_crs, QgsCoordinateReferenceSystem("EPSG:4326"), context) \
            .transform(rect.center())
        crs = utm_crs(centre.x(), centre.y())
        rect = QgsCoordinateTransform(layer_crs, crs, context).transformBoundingBox(rect)
    centre = rect.center()
    pixel = resolution_m * units_per_metre(crs, centre.x(), centre.y(), context)
    xmin, ymax = math.floor(rect.xMinimum() / pixel) * pixel, math.ceil(rect.yMaximum() / pixel) * pixel
    width = max(0, math.ceil((rect.xMaximum() - xmin) / pixel - 1e-9))
    height = max(0, math.ceil((ymax - rect.yMinimum()) / pixel - 1e-9))
    grid = (xmin, ymax - height * pixel, xmin + width * pixel, ymax)
    zooms, zoom, tiles = _xyz_zooms(layer.source()), None, None
    if zooms is not None and crs.authid() == "EPSG:3857":
        zmin, zmax = zooms
        zoom = min(zmax, max(zmin, round(math.log2(MERCATOR_RES0 / pixel))))
        span = WEB_TILE_PX * MERCATOR_RES0 / 2 ** zoom
        tiles = (math.floor(grid[2] / span) - math.floor(grid[0] / span) + 1) * \
            (math.floor(grid[3] / span) - math.floor(grid[1] / span) + 1)
    elif zooms is None:
        tiles = math.ceil(width / BLOCK_PX) * math.ceil(height / BLOCK_PX)
    return WebPlan(layer.source(), layer.providerType(), layer_crs.toWkt(), crs.toWkt(), crs.authid() or
                   crs.description(), grid, pixel, float(resolution_m), width, height, tiles, zoom)


class WriteCancelled(Exception):
    """The user cancelled the download; nothing was written."""


def write_geotiff(plan_: WebPlan, path: str | Path, overwrite: bool = False,
                  on_progress: Callable[[float], None] | None = None,
                  is_cancelled: Callable[[], bool] | None = None,
                  context: QgsCoordinateTransformContext | None = None,
                  feedback: QgsRasterBlockFeedback | None = None) -> Path:
    """Write the planned GeoTIFF to ``path`` (any thread but the UI's: it fetches from the network).

    RGB bands with the alpha as the file's mask, tiled and DEFLATE-compressed, written under a temporary name in
    the same folder and renamed when complete. ``on_progress(percent)``; ``is_cancelled()`` polled (a cancel
    raises :class:`WriteCancelled` and leaves no file; ``feedback``: the block feedback to use, which another
    thread may cancel at once, even while a tile is awaited). An existing ``path`` raises FileExistsError unless
    ``overwrite``. Other failures raise RuntimeError with the writer's words.
    """
    from osgeo import gdal

    path = Path(path)
    problem = plan_.problem()
    if problem:
        raise ValueError(problem)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; choose another file or allow replacing it.")
    path.parent.mkdir(parents=True, exist_ok=True)
    context = context or QgsCoordinateTransformContext()
    provider = QgsProviderRegistry.instance().createProvider(plan_.provider, plan_.source)
    if provider is None or not provider.isValid():
        raise RuntimeError(f"The web map layer ({plan_.source}) cannot be opened.")
    feedback = feedback if feedback is not None else QgsRasterBlockFeedback()
    polled = is_cancelled or (lambda: False)

    def cancelled() -> bool:
        return polled() or feedback.isCanceled()


    def progressed(value: float) -> None:
        if cancelled():
            feedback.cancel()
        if on_progress is not None:
            on_progress(min(99.0, 0.95 * float(value)))     # the last 5 %: RGB and mask, compressed

    feedback.progressChanged.connect(progressed)
    fd, rgba = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".rgba.tif", dir=str(path.parent))
    os.close(fd)
    part = path.with_name(f".{path.stem}-{os.getpid()}.part.tif")
    pipe = QgsRasterPipe()
    try:
        if not pipe.set(provider):
            raise RuntimeError("The web map layer cannot be read through a raster pipe.")
        target = plan_.crs_object()
        source_crs = QgsCoordinateReferenceSystem.fromWkt(plan_.layer_crs)
        if target != source_crs:
            projector = QgsRasterProjector()
            projector.setCrs(source_crs, target, context)
            pipe.insert(2, projector)
        writer = QgsRasterFileWriter(rgba)
        writer.setOutputFormat("GTiff")
        writer.setCreateOptions(["TILED=YES", "BIGTIFF=IF_SAFER"])
        writer.setMaxTileWidth(BLOCK_PX)
        writer.setMaxTileHeight(BLOCK_PX)
        if cancelled():
            raise WriteCancelled()
        error = writer.writeRaster(pipe, plan_.width, plan_.height, QgsRectangle(*plan_.extent), target, context,
                                   feedback)
        if cancelled() or feedback.isCanceled() or error == QgsRasterFileWriter.WriteCanceled:
            raise WriteCancelled()
        if error != QgsRasterFileWriter.NoError:
            raise RuntimeError(f"Writing the web map layer failed (QgsRasterFileWriter error {int(error)}).")
        source = gdal.Open(rgba)
        if source is None:
            raise RuntimeError("The downloaded web map layer cannot be read back.")
        bands = source.RasterCount
        options = gdal.TranslateOptions(format="GTiff", bandList=[1, 2, 3] if bands >= 3 else list(range(1, bands + 1)),
                                        maskBand=4 if bands >= 4 else None, creationOptions=CREATE_OPTIONS,
                                        callback=lambda done, *_: 0 if cancelled() else 1)
        previous = gdal.GetThreadLocalConfigOption("GDAL_TIFF_INTERNAL_MASK", None)
        gdal.SetThreadLocalConfigOption("GDAL_TIFF_INTERNAL_MASK", "YES")        # the mask inside the file
        try:
            result = gdal.Translate(str(part), source, options=options)
        finally:
            gdal.SetThreadLocalConfigOption("GDAL_TIFF_INTERNAL_MASK", previous)
        source = None
        if result is None:
            if cancelled():
                raise WriteCancelled()
            raise RuntimeError(f"Writing {path.name} failed: {gdal.GetLastErrorMsg()}")
        result.SetMetadataItem("URBANFORM_WEB_SOURCE", plan_.source)
        result.SetMetadataItem("URBANFORM_GROUND_RESOLUTION_M", f"{plan_.resolution_m:g}")
        result = None                                               # flushed and closed
        if cancelled():
            raise WriteCancelled()
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} appeared meanwhile; it was kept.")
        os.replace(part, path)
        if on_progress is not None:
            on_progress(100.0)
        return path
    finally:
        for leftover in (Path(rgba), part, part.with_name(part.name + ".msk")):
            try:
                leftover.unlink()
            except FileNotFoundError:
                pass


class WebMapTask(QgsTask):
    """:func:`write_geotiff` in the background; ``done(path or '', message)`` on the main thread."""

    done = pyqtSignal(str, str)
    statusChanged = pyqtSignal(str)

    def __init__(self, plan_: WebPlan, path: str, overwrite: bool = False, description: str = ""):
        super().__init__(description or f"Urban Form Mapper: write the web map layer to {Path(path).name}",
                         QgsTask.CanCancel)
        self.plan = plan_
        self.path = str(path)
        self.overwrite = overwrite
        self.error = ""
        self.written: str = ""
        self.feedback: QgsRasterBlockFeedback | None = None

    def cancel(self) -> None:             # main thread: stop a tile being awaited too, not only between blocks
        feedback = self.feedback
        if feedback is not None:
            feedback.cancel()
        super().cancel()

    def run(self) -> bool:                # worker thread: no GUI
        try:
            self.statusChanged.emit(f"Writing the web map layer: {self.plan.text()}")
            self.feedback = QgsRasterBlockFeedback()
            self.written = str(write_geotiff(self.plan, self.path, self.overwrite, self.setProgress, self.isCanceled,
                                             feedback=self.feedback))
            return True
        except WriteCancelled:
            self.error = "cancelled; no file was written."
        except Exception as exc:  # noqa: BLE001 - becomes a message, never a crash
            self.error = str(exc) or type(exc).__name__
        return False

    def finished(self, ok: bool) -> None:            # main thread
        if not ok and not self.error:
            self.error = "cancelled; no file was written."
        self.done.emit(self.written if ok else "", "" if ok else self.error)
