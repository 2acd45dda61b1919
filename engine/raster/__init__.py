"""Rasters as tiles: tiling value types, windowed reading, CRS and ground pixel size, areas of interest.

Modules: ``tiling`` (Length, TileGrid, TiledRaster, inspect_raster, ground size
and working CRS), ``area`` (extent/area parsing, tiles inside an area).
Import the modules; this package imports nothing heavy.
"""
