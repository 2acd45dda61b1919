"""Clustering tile features and what a clustering run draws.

Modules: ``kmeans`` (KMeansTiles), ``deepcluster`` (DeepCluster), ``modelfile``
(the .urbanform model file), ``sweep_metrics`` and ``sweep_plots`` (comparing
runs over K and tile sizes), ``quicklook`` (the PNG preview of a run).
Import the modules; this package imports nothing heavy.
"""
