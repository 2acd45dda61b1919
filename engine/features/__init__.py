"""CNN features of tiles: backbones and weights, devices and precision, batching and extraction.

Modules: ``backbones`` (the registry, offline weights, build_backbone),
``extract`` (device/precision choice, FeatureExtractor, tile batches,
extract_features), ``streams`` (several batches at once on CPU), ``runtime`` (glibc malloc tuning
and thread count at start-up).
Import the modules; this package imports nothing heavy (torch comes with them).
"""
