"""Urban Form Mapper engine: raster -> tiles -> CNN features -> clusters -> files.

Pure Python (numpy, rasterio, torch, scikit-learn, geopandas); it never imports
QGIS or Qt. Run it as ``python -m engine --help``. Importing this package is
cheap: heavy libraries are imported by the modules that need them.
"""

import os

__version__ = "0.2.0"

# OpenMP threads that wait passively: with the default (spinning) wait a 2-thread torch run slows 4-10x whenever
# another process takes one of two cores (measured by tests/bench/bench_dask.py: 4,096 tiles in 2.7 s idle, 11-30 s
# under load, 2.6-2.8 s with PASSIVE). Set before torch is imported anywhere in the engine; a user's own setting
# wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
