"""Urban Form Mapper engine: raster -> tiles -> CNN features -> clusters -> files.

Pure Python (numpy, rasterio, torch, scikit-learn, geopandas); it never imports
QGIS or Qt. Run it as ``python -m engine --help``. Importing this package is
cheap: heavy libraries are imported by the modules that need them.
"""

__version__ = "0.2.0"
