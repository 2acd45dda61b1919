"""Processing algorithms of the ``urbanform`` provider, one module per algorithm.

To add an algorithm for a new engine tool:

1. write ``plugin/processing/TOOL.py`` with a subclass of
   :class:`~.base.EngineAlgorithm`: declare its parameters in
   ``initAlgorithm``, turn them into an engine request in ``processAlgorithm``
   and hand its argv to ``self.run_engine_command`` (progress, cancel and
   errors are handled there);
2. list ``"TOOL.ClassName"`` in ``plugin/provider.py``'s ``ALGORITHMS``.

Algorithms that do not need the engine (``export``) subclass
QgsProcessingAlgorithm directly and use :class:`~.base.UrbanFormAlgorithm`'s
group and ``createInstance``.

Nothing here imports torch, rasterio or the ``engine`` package: the engine runs
in its own Python, through :func:`plugin.engine_process.run_engine`.
"""
