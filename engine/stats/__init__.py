"""Statistics of urban form per tile and per cluster.

Modules: ``measures`` (building and road statistics, metric CRS, eta-squared),
``raster`` (population density and NDVI from rasters), ``profile`` (cluster
profiles and their plots). Import the modules; this package imports nothing heavy.
"""
