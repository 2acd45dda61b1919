"""Building segmentation: U-Net training from footprints, streamed inference, polygons, evaluation.

Modules: ``unet`` (the network), ``modelfile`` (save/load), ``labels`` (footprints
rasterised on the raster grid), ``train`` (run_train), ``infer`` (run_segment),
``polygons``, ``evaluate``. Import the modules; this package imports nothing heavy.
"""
