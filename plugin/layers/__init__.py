"""Loading and styling each kind of engine output in the QGIS project: tiles, cluster raster, clusters table and
sweep layers (``clusters``), building masks and footprints (``buildings``)."""
