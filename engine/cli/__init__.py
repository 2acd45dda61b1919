"""Urban Form Mapper engine: python -m engine TOOL ... (python -m engine TOOL --help for each tool).

Tools:
  cluster       cluster the tiles of a raster into K groups by CNN features (k-means or DeepCluster)
  predict       assign the tiles of another raster to the clusters of a saved model
  sweep         sensitivity runs over K and tile size: consistent ids, agreement metrics, plots
  stats         building, road, NDVI and population statistics per tile and per cluster of a run
  export        a run's layers as Shapefile, GeoPackage or CSV
  train-seg     train a building segmentation model (U-Net) from footprints
  segment       map every building of a raster with a trained model
  evaluate-seg  IoU, precision, recall, F1 and object F1 of predicted buildings
  probe         check a raster and tiling; tile count and model speed (JSON)
  check         report the Python, torch version and available devices (JSON)
  report        a self-contained HTML report of a run: example tiles, sizes, profiles, plots
  change        two dates on one saved model's clusters: per tile clusters, change score, transitions
  similar       the tiles that look like a few query tiles or places (cosine similarity of CNN features)
  classify      tiles classified from a few labelled places, with spatial cross-validation (or a saved model)

Exit codes: 0 success, 2 bad input (the message says which input and the
fix), 1 any other failure, 130 cancelled. Messages go to stderr; with
``--progress json`` stdout carries only JSON progress lines.

The package: ``parser`` builds argparse from the tool declarations
(``engine.contract.tools``), ``commands`` maps each tool to its params value,
run function and printer (``engine.tools``), ``main`` parses, runs and prints.
"""
from .main import main
from .parser import build_parser

__all__ = ["build_parser", "main"]
