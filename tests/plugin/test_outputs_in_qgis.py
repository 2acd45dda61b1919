"""The engine's outputs open in QGIS's own GDAL (3.6 here), as an analyst would load them."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from osgeo import gdal
from qgis.core import QgsRasterLayer, QgsVectorLayer

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "resources" / "sample" / "kampala_ug_oam_rgb_z19_epsg3857.tif"


@pytest.fixture(scope="module")
def run_out(tmp_path_factory) -> Path:
    """Cluster the sample with the engine in its own process (QGIS never imports the engine)."""
    out = tmp_path_factory.mktemp("run") / "kampala.gpkg"
    subprocess.run([sys.executable, "-m", "engine", "cluster", str(SAMPLE), "--out", str(out), "--k", "4",
                    "--weights", "none", "--progress", "none", "--cache-dir", str(out.parent / "cache")],
                   cwd=REPO, check=True, capture_output=True, timeout=600)
    return out


def test_tiles_layer_opens_with_its_fields(run_out):
    gdal.PushErrorHandler("CPLQuietErrorHandler")
    gdal.ErrorReset()
    layer = QgsVectorLayer(f"{run_out}|layername=tiles", "tiles", "ogr")
    warning = gdal.GetLastErrorMsg()
    gdal.PopErrorHandler()
    try:
        assert layer.isValid()
        assert warning == "", f"QGIS's GDAL warned: {warning}"
        assert layer.featureCount() == 96
        assert layer.crs().authid() == "EPSG:3857"
        assert [f.name() for f in layer.fields()][1:] == ["tile_id", "row", "col", "cluster", "clust_dist", "pc1",
                                                          "pc2", "valid_frac"]
        assert all(len(f.name()) <= 10 for f in layer.fields())
        clusters = {f["cluster"] for f in layer.getFeatures()}
        assert clusters == {0, 1, 2, 3}
    finally:
        del layer


def test_cluster_raster_opens_as_paletted(run_out):
    layer = QgsRasterLayer(str(run_out.with_name("kampala_clusters.tif")), "clusters")
    try:
        assert layer.isValid()
        assert (layer.width(), layer.height()) == (12, 8)
        assert layer.crs().authid() == "EPSG:3857"
        assert layer.renderer().type() == "paletted"
    finally:
        del layer


def test_a_run_over_several_places_loads_its_tiles_without_a_cluster_raster(urbanform, qgis_new_project, tmp_path):
    """``cluster`` over places far apart writes one tiles layer (EPSG:4326, a place column) and no cluster
    raster: the dock adds the tiles alone, styled with the engine's colours."""
    from osgeo import ogr, osr

    from urbanform.plugin.layers.clusters import add_cluster_outputs

    gpkg = tmp_path / "both.gpkg"
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(gpkg))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(4326)
    layer = ds.CreateLayer("tiles", srs, ogr.wkbPolygon)
    for name, kind in (("cluster", ogr.OFTInteger), ("place", ogr.OFTInteger), ("place_name", ogr.OFTString)):
        layer.CreateField(ogr.FieldDefn(name, kind))
    for i, (x, place) in enumerate(((32.5, 0), (39.2, 1))):
        f = ogr.Feature(layer.GetLayerDefn())
        f.SetField("cluster", i)
        f.SetField("place", place)
        f.SetField("place_name", f"city{place}")
        f.SetGeometry(ogr.CreateGeometryFromWkt(f"POLYGON(({x} 0,{x + .001} 0,{x + .001} .001,{x} .001,{x} 0))"))
        layer.CreateFeature(f)
    ds = None
    group, tiles, raster = add_cluster_outputs({"gpkg": str(gpkg), "tif": str(tmp_path / "both_clusters.tif"),
                                                "manifest": str(tmp_path / "both_manifest.json")}, "both")
    assert raster is None and tiles.isValid() and tiles.featureCount() == 2
    assert [c.value() for c in tiles.renderer().categories()][:2] == [0, 1]
    assert (tmp_path / "both_tiles.qml").is_file()
    del group, tiles
