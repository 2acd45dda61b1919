"""What every face of Urban Form Mapper (CLI, plugin, Processing) agrees on, declared once.

Stdlib only: the QGIS plugin imports this package (and nothing else of the
engine), so it must never pull in numpy, torch, rasterio or geopandas.

- ``defaults``: the model choice lists and the defaults that work offline.
"""
