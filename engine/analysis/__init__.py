"""The analyses on top of tiles and features (issue 15): change between dates, similar places, few-shot
classification, and the HTML report that explains a run.

Pure functions returning named Series and small scikit-learn style estimators; no file is written here but
through the writers the tools hand in (``engine.tools.report``, ``change``, ``similar``, ``classify`` compose
these pieces with the raster, the features and the outputs). Modules:

- ``images``: PNG bytes of arrays and figures, data URIs, map thumbnails of a tile grid;
- ``report``: gallery picks, HTML tables and galleries, the self-contained document;
"""
