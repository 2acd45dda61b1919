"""QGIS entry point of Urban Form Mapper.

QGIS calls ``classFactory`` when the plugin is enabled. The import happens
here, lazily, so that loading the plugin list never pulls in the plugin's
modules, and the plugin itself never imports torch, rasterio or geopandas:
heavy work runs in the engine, in a separate process.
"""


def classFactory(iface):  # noqa: N802 - name required by QGIS
    from .plugin.main import UrbanFormPlugin

    return UrbanFormPlugin(iface)
