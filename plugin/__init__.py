"""Everything of Urban Form Mapper that touches QGIS or Qt.

Nothing here imports torch, rasterio, geopandas or scikit-learn: the engine
runs in its own process (see DESIGN.md, "Why a subprocess").
"""
