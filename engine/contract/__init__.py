"""What every face of Urban Form Mapper (CLI, plugin, Processing) agrees on, declared once.

Stdlib only: the QGIS plugin imports this package (and nothing else of the
engine), so it must never pull in numpy, torch, rasterio or geopandas.

- ``defaults``: the model choice lists and the defaults that work offline.
- ``limits``: MIN_K/MAX_K and the one parser of K lists.
- ``outputs``: the names of the files and layers a run writes.
- ``problems``: ``Problem(param, code, message)``, why a request cannot run, and the stable codes.
- ``progress``: the JSON progress events, their stages' share of a progress bar, and the exit codes.
"""
