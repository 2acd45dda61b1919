"""Web map layers as engine input (issue 14): an XYZ layer served from 127.0.0.1 written to a GeoTIFF.

The tile server (http.server in a thread) serves 256 px PNG tiles over a small area of Kampala, each tile one
colour that encodes its (x, y, zoom): red = 16 * (x mod 16) + 8, green = 16 * (y mod 16) + 8, blue = 12 * zoom.
A pixel of the GeoTIFF at a known place then says which web tile it came from, so the georeferencing is checked
without a reference image.
"""
from __future__ import annotations

import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from qgis.core import (QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsCoordinateTransformContext,
                       QgsRasterLayer, QgsRectangle)
from qgis.PyQt.QtCore import QBuffer, QByteArray, QIODevice
from qgis.PyQt.QtGui import QColor, QImage

from .helpers import clean_settings, engine_here, make_dock, set_params, wait_for

__all__ = ["clean_settings", "engine_here", "make_dock"]       # fixtures used here

LON, LAT = 32.5800, 0.3150                   # Kampala
HALF_W, HALF_H = 300.0, 200.0                 # ground metres: a 600 m x 400 m area
ZOOMS = range(16, 20)
R = 6378137.0


def mercator(lon: float, lat: float) -> tuple[float, float]:
    return R * math.radians(lon), R * math.log(math.tan(math.pi / 4 + math.radians(lat) / 2))


def tile_of(x: float, y: float, z: int) -> tuple[int, int]:
    span = 2 * math.pi * R / 2 ** z
    return int((x + math.pi * R) // span), int((math.pi * R - y) // span)


def colour(x: int, y: int, z: int) -> tuple[int, int, int]:
    return 16 * (x % 16) + 8, 16 * (y % 16) + 8, 12 * z


def area_3857(margin: float = 1.0) -> QgsRectangle:
    """The test area in EPSG:3857 (ground metres scaled by 1/cos(lat))."""
    cx, cy = mercator(LON, LAT)
    k = margin / math.cos(math.radians(LAT))
    return QgsRectangle(cx - HALF_W * k, cy - HALF_H * k, cx + HALF_W * k, cy + HALF_H * k)


def png(rgb) -> bytes:
    image = QImage(256, 256, QImage.Format_RGB32)
    image.fill(QColor(*rgb))
    data = QByteArray()
    buffer = QBuffer(data)
    buffer.open(QIODevice.WriteOnly)
    image.save(buffer, "PNG")
    return bytes(data)


@pytest.fixture(scope="module")
def tile_server():
    """http://127.0.0.1:PORT/{z}/{x}/{y}.png for ZOOMS over the area (with a margin); 404 elsewhere."""
    rect = area_3857(2.0)
    tiles = {}
    for z in ZOOMS:
        x0, y0 = tile_of(rect.xMinimum(), rect.yMaximum(), z)
        x1, y1 = tile_of(rect.xMaximum(), rect.yMinimum(), z)
        for x in range(x0, x1 + 1):
            for y in range(y0, y1 + 1):
                tiles[f"/{z}/{x}/{y}.png"] = png(colour(x, y, z))
    requests: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server API
            requests.append(self.path)
            path, _, query = self.path.partition("?")
            if query == "slow":                          # a slow server, to cancel a download while it waits
                time.sleep(0.2)
            body = tiles.get(path)
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "image/png" if body else "text/plain")
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", requests
    server.shutdown()
    server.server_close()


@pytest.fixture
def webmap(urbanform):
    from urbanform.plugin.runner import webmap

    return webmap


def xyz_uri(url: str, query: str = "") -> str:
    return f"type=xyz&url={url}/{{z}}/{{x}}/{{y}}.png{query}&zmax=19&zmin=0"


class XYZ:
    """The XYZ layer of the tile server, made in each test (a fixture's value would outlive the test)."""

    def __init__(self, url: str):
        self.url = url

    def __call__(self, query: str = "") -> QgsRasterLayer:
        layer = QgsRasterLayer(xyz_uri(self.url, query), "tiles", "wms")
        assert layer.isValid()
        return layer


@pytest.fixture
def xyz(tile_server, qgis_new_project):
    return XYZ(tile_server[0])


def make_plan(webmap, layer, resolution=0.6):
    return webmap.plan(layer, area_3857(), QgsCoordinateReferenceSystem("EPSG:3857"), resolution,
                       QgsCoordinateTransformContext())


def test_the_plan_is_in_ground_metres_with_an_estimate(webmap, xyz):
    plan = make_plan(webmap, xyz())
    assert plan.crs_name == "EPSG:3857" and plan.zoom == 18
    assert plan.pixel * math.cos(math.radians(LAT)) == pytest.approx(0.6, rel=2e-3)      # ground metres
    assert abs(plan.width - 1000) <= 2 and abs(plan.height - 667) <= 2
    assert plan.megabytes == pytest.approx(plan.width * plan.height * 3 / 1e6)
    assert 6 <= plan.web_tiles <= 20 and "px at 0.6 m (EPSG:3857)" in plan.text() and "web tiles" in plan.text()
    assert plan.problem() is None
    big = webmap.plan(xyz(), area_3857(80.0), QgsCoordinateReferenceSystem("EPSG:3857"), 0.3)
    assert "smaller extent or a coarser ground resolution" in big.problem()
    with pytest.raises(ValueError, match="at least"):
        make_plan(webmap, xyz(), 0.0)
    assert webmap.is_web_layer(xyz())


def test_an_xyz_layer_is_written_to_a_georeferenced_geotiff(webmap, xyz, tile_server, tmp_path):
    from osgeo import gdal

    _, requests = tile_server
    plan = make_plan(webmap, xyz())
    progress = []
    out = webmap.write_geotiff(plan, tmp_path / "web.tif", on_progress=progress.append)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["web.tif"]          # no temporary file left
    data = gdal.Open(str(out))
    assert (data.RasterXSize, data.RasterYSize, data.RasterCount) == (plan.width, plan.height, 3)
    assert data.GetSpatialRef().GetAuthorityCode(None) == "3857"
    x0, px, _, y0, _, py = data.GetGeoTransform()
    assert (x0, y0) == pytest.approx(plan.extent[0::3]) and px == pytest.approx(plan.pixel) and py == pytest.approx(-px)
    assert data.GetRasterBand(1).GetMaskFlags() & gdal.GMF_PER_DATASET                 # the alpha, as the mask
    structure = data.GetMetadata("IMAGE_STRUCTURE")
    assert structure.get("COMPRESSION") == "DEFLATE"
    assert data.GetRasterBand(1).GetBlockSize() == [256, 256]                           # tiled
    # the estimate: the planned size is the file's; the web tiles fetched at zoom 18 are about the planned number
    fetched = {r for r in requests if r.startswith("/18/")}
    assert len(fetched) <= plan.web_tiles <= 2 * len(fetched) + 4
    assert progress and progress[-1] == 100.0 and progress == sorted(progress)
    # pixels at tile centres are the colours of the web tiles there, at zoom 18
    span = 2 * math.pi * R / 2 ** 18
    checked = 0
    for tx in range(*tile_of(plan.extent[0], 0, 18)[:1], tile_of(plan.extent[2], 0, 18)[0] + 1):
        for ty in range(tile_of(0, plan.extent[3], 18)[1], tile_of(0, plan.extent[1], 18)[1] + 1):
            cx, cy = -math.pi * R + (tx + 0.5) * span, math.pi * R - (ty + 0.5) * span
            col, row = int((cx - x0) / px), int((cy - y0) / py)
            if not (5 <= col < plan.width - 5 and 5 <= row < plan.height - 5):
                continue
            rgb = tuple(int(data.GetRasterBand(b).ReadAsArray(col, row, 1, 1)[0, 0]) for b in (1, 2, 3))
            assert rgb == colour(tx, ty, 18), (tx, ty, rgb)
            checked += 1
    assert checked >= 2
    data = None


def test_a_geographic_extent_and_an_existing_file(webmap, xyz, tmp_path):
    """The extent may be in any CRS; an existing output is kept unless replacing is asked for."""
    to_4326 = QgsCoordinateTransform(QgsCoordinateReferenceSystem("EPSG:3857"),
                                     QgsCoordinateReferenceSystem("EPSG:4326"), QgsCoordinateTransformContext())
    rect = to_4326.transformBoundingBox(area_3857(0.25))
    plan = webmap.plan(xyz(), rect, QgsCoordinateReferenceSystem("EPSG:4326"), 1.2)
    out = tmp_path / "kept.tif"
    out.write_bytes(b"mine")
    with pytest.raises(FileExistsError):
        webmap.write_geotiff(plan, out)
    assert out.read_bytes() == b"mine"
    webmap.write_geotiff(plan, out, overwrite=True)
    assert out.stat().st_size > 1000 and sorted(p.name for p in tmp_path.iterdir()) == ["kept.tif"]


def test_a_geographic_layer_is_written_in_its_utm_zone(webmap, tmp_path):
    """A layer in degrees (as a WMS in EPSG:4326 would be) is written in the local UTM zone at true metres; the
    same path as the web layers' (a provider made from the layer's source), here with a GDAL layer."""
    import numpy as np
    from osgeo import gdal, osr

    source = tmp_path / "degrees.tif"
    data = gdal.GetDriverByName("GTiff").Create(str(source), 200, 200, 3, gdal.GDT_Byte)
    data.SetGeoTransform((32.575, 0.00005, 0, 0.325, 0, -0.00005))          # 0.01 deg square, ~5.5 m pixels
    wgs84 = osr.SpatialReference()
    wgs84.ImportFromEPSG(4326)
    data.SetProjection(wgs84.ExportToWkt())
    for band, (left, right) in enumerate(((200, 0), (0, 0), (0, 200)), start=1):
        values = np.full((200, 200), left, np.uint8)
        values[:, 100:] = right                                             # west red, east blue at 32.580
        data.GetRasterBand(band).WriteArray(values)
    data = None
    layer = QgsRasterLayer(str(source), "degrees", "gdal")
    plan = webmap.plan(layer, layer.extent(), layer.crs(), 2.0)
    del layer
    assert plan.crs_name == "EPSG:32636" and plan.pixel == pytest.approx(2.0, rel=1e-3)
    assert 540 <= plan.width <= 570 and 540 <= plan.height <= 570
    out = webmap.write_geotiff(plan, tmp_path / "utm.tif")
    written = gdal.Open(str(out))
    assert written.GetSpatialRef().GetAuthorityCode(None) == "32636"
    to_utm = QgsCoordinateTransform(QgsCoordinateReferenceSystem("EPSG:4326"), plan.crs_object(),
                                    QgsCoordinateTransformContext())
    x0, px, _, y0, _, py = written.GetGeoTransform()
    for lon, expected in ((32.5775, (200, 0, 0)), (32.5825, (0, 0, 200))):
        point = to_utm.transform(lon, 0.32)
        col, row = int((point.x() - x0) / px), int((point.y() - y0) / py)
        assert tuple(int(written.GetRasterBand(b).ReadAsArray(col, row, 1, 1)[0, 0]) for b in (1, 2, 3)) == expected
    written = None


def test_a_cancel_leaves_no_file(webmap, xyz, tmp_path):
    plan = make_plan(webmap, xyz(), 0.3)
    seen = []
    with pytest.raises(webmap.WriteCancelled):
        webmap.write_geotiff(plan, tmp_path / "cancelled.tif", on_progress=seen.append,
                             is_cancelled=lambda: bool(seen))
    assert list(tmp_path.iterdir()) == []


def test_the_task_writes_in_the_background(webmap, xyz, tmp_path):
    from qgis.core import QgsApplication

    from .helpers import run_task

    task = webmap.WebMapTask(make_plan(webmap, xyz(), 1.2), str(tmp_path / "task.tif"))
    done = []
    task.done.connect(lambda path, error: done.append((path, error)))
    run_task(task)
    assert done == [(str(tmp_path / "task.tif"), "")] and Path(done[0][0]).is_file()
    assert QgsApplication.taskManager().countActiveTasks() == 0


def test_cancelling_the_task_while_tiles_are_awaited_leaves_no_file(webmap, xyz, tmp_path):
    from qgis.core import QgsApplication

    task = webmap.WebMapTask(make_plan(webmap, xyz("?slow"), 0.3), str(tmp_path / "slow.tif"))
    done = []
    task.done.connect(lambda path, error: done.append((path, error)))
    QgsApplication.taskManager().addTask(task)
    assert wait_for(lambda: task.feedback is not None, 30)
    started = time.monotonic()
    task.cancel()
    assert wait_for(lambda: bool(done), 60)
    assert done == [("", "cancelled; no file was written.")] and time.monotonic() - started < 5
    assert list(tmp_path.iterdir()) == []


# -- Processing: a web map layer as an algorithm's raster --------------------------------------------------------
@pytest.fixture
def provider(urbanform, qgis_processing, monkeypatch, tmp_path):
    import sys

    from qgis.core import QgsApplication

    from urbanform.plugin.provider import UrbanFormProvider

    monkeypatch.setenv("URBANFORM_ENGINE_PYTHON", sys.executable)
    monkeypatch.setenv("URBANFORM_CACHE", str(tmp_path / "cache"))
    registry = QgsApplication.processingRegistry()
    assert registry.addProvider(UrbanFormProvider())
    yield registry
    registry.removeProvider("urbanform")


def test_processing_clusters_an_xyz_layer(provider, xyz, tmp_path):
    import processing
    from qgis.core import QgsProcessingFeedback, QgsVectorLayer

    from urbanform.plugin.processing import base, cluster
    from urbanform.plugin.requests import BACKBONES

    algorithm = provider.algorithmById("urbanform:cluster")
    resolution = algorithm.parameterDefinition(base.WEB_RESOLUTION)
    assert resolution.defaultValue() == 0.3 and resolution.flags() & resolution.FlagAdvanced
    assert "Ground resolution for web map layers" in algorithm.shortHelpString()
    rect = area_3857()
    messages = []

    class Feedback(QgsProcessingFeedback):
        def pushInfo(self, info):  # noqa: N802 - QGIS API
            messages.append(info)
            super().pushInfo(info)

    layer = xyz()
    params = {"INPUT": layer, "K": 2, "BACKBONE": BACKBONES.index("resnet18"),
              "WEIGHTS": cluster.WEIGHT_CHOICES.index("none"), base.WEB_RESOLUTION: 2.4,
              base.WEB_EXTENT: f"{rect.xMinimum()},{rect.xMaximum()},{rect.yMinimum()},{rect.yMaximum()} [EPSG:3857]",
              "OUTPUT": str(tmp_path / "web.gpkg")}
    result = processing.run("urbanform:cluster", params, feedback=Feedback())
    written = [m for m in messages if m.startswith("Writing the web map layer")]
    assert written and "px at 2.4 m (EPSG:3857)" in written[0]
    tiles = QgsVectorLayer(f"{result['OUTPUT']}|layername=tiles", "tiles", "ogr")
    assert tiles.isValid() and tiles.featureCount() >= 4
    assert tiles.crs().authid() == "EPSG:3857"
    assert rect.contains(tiles.extent().buffered(-1.0)) or rect.intersects(tiles.extent())
    del tiles
    # too large: refused before any download, naming the fix (the algorithm's step, called as processAlgorithm does:
    # through processing.run, the refusal's frames would outlive the test, holding the layer)
    from qgis.core import QgsProcessingContext, QgsProcessingException

    algorithm = cluster.ClusterAlgorithm()
    algorithm.initAlgorithm()
    huge = {**params, base.WEB_RESOLUTION: 0.05, base.WEB_EXTENT: None}
    try:
        algorithm.local_raster(layer, huge, QgsProcessingContext(), QgsProcessingFeedback())
        raise AssertionError("not refused")
    except QgsProcessingException as exc:
        assert "smaller extent or a coarser ground resolution" in str(exc)
    del layer, params, huge


# -- the dock: a web map layer as the raster, and the Dask scheduler setting ---------------------------------------


def show_area(iface, margin: float = 1.0) -> None:
    canvas = iface.mapCanvas()
    canvas.setDestinationCrs(QgsCoordinateReferenceSystem("EPSG:3857"))
    canvas.setExtent(area_3857(margin))


def test_the_dock_writes_a_web_layer_then_clusters_it(make_dock, xyz, qgis_iface, tmp_path):
    from qgis.core import QgsProject

    layer = xyz()
    QgsProject.instance().addMapLayer(layer)
    show_area(qgis_iface)
    dock = make_dock()
    dock.rasterCombo.setLayer(layer)
    del layer
    assert dock.webResolutionSpin.isVisibleTo(dock) and dock.webResolutionSpin.value() == 0.3
    assert "px at 0.3 m (EPSG:3857)" in dock.webEstimateLabel.text() and "web tiles" in dock.webEstimateLabel.text()
    out = tmp_path / "web.gpkg"
    set_params(dock, out, k=2)
    dock.webResolutionSpin.setValue(2.4)
    assert wait_for(lambda: dock.engine_python() is not None, 60)
    assert dock.request().raster == str(tmp_path / "web_webmap.tif")
    assert dock.runButton.isEnabled(), dock.problemsLabel.text()
    # too large: Run is off, the resolution is marked and the message names the fix
    show_area(qgis_iface, 100.0)
    dock.webResolutionSpin.setValue(0.05)
    assert not dock.runButton.isEnabled() and "coarser ground resolution" in dock.problemsLabel.text()
    assert dock.webResolutionSpin.property("urbanformProblem")
    show_area(qgis_iface)
    dock.webResolutionSpin.setValue(2.4)
    assert dock.runButton.isEnabled(), dock.problemsLabel.text()
    ended, progress = [], []
    dock.runFinished.connect(ended.append)
    dock.progressBar.valueChanged.connect(progress.append)
    assert dock.run()
    assert dock.statusLabel.text().startswith("Writing the web map layer")
    assert wait_for(lambda: bool(ended), 300), dock.statusLabel.text()
    assert ended == [True], dock.statusLabel.text()
    assert (tmp_path / "web_webmap.tif").is_file() and out.is_file() and progress
    names = sorted(x.name() for x in QgsProject.instance().mapLayers().values())
    assert "web tiles" in names, names
    QgsProject.instance().removeAllMapLayers()


def test_the_dask_scheduler_setting(make_dock, urbanform, qgis_processing, qgis_new_project):
    from urbanform.plugin.runner import dask_setting
    from urbanform.plugin.runner.task import EngineTask

    dock = make_dock()
    dock.daskEdit.setText("tcp://scheduler")                         # no port
    assert "Dask scheduler" in dock.problemsLabel.text() and dock.daskEdit.property("urbanformProblem")
    dock.save_settings()
    assert dask_setting.address() is None                              # a bad address is never saved
    dock.daskEdit.setText("local:2")
    assert "Dask scheduler" not in dock.problemsLabel.text() and not dock.daskEdit.property("urbanformProblem")
    dock.save_settings()
    assert dask_setting.address() == "local:2"
    # local runs of tools that take --dask get it; tools without it do not; a given one stays
    argv = lambda args: EngineTask("t", "python", args, server=None).args          # noqa: E731
    assert argv(["cluster", "r.tif", "--out", "o.gpkg"])[-2:] == ["--dask", "local:2"]
    assert "--dask" not in argv(["probe", "r.tif", "--tile-size", "64px"])           # only with --plan
    assert "--dask" not in argv(["export", "r.gpkg", "o.shp"])
    assert argv(["stats", "r.gpkg", "--dask", "local:1"])[-1] == "local:1"
    # Processing: the advanced Dask parameter defaults to the setting
    from urbanform.plugin.processing.cluster import ClusterAlgorithm

    algorithm = ClusterAlgorithm()
    algorithm.initAlgorithm()
    assert algorithm.parameterDefinition("DASK").defaultValue() == "local:2"
    dock.daskEdit.setText("")
    dock.save_settings()
    assert dask_setting.address() is None
    algorithm = ClusterAlgorithm()
    algorithm.initAlgorithm()
    assert not algorithm.parameterDefinition("DASK").defaultValue()
