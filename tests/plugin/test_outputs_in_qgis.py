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
