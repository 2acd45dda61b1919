"""Processing algorithms of the ``urbanform`` provider, one module per algorithm.

To add an algorithm for a new engine tool (declared in ``engine/contract/tools.py``):

1. write ``plugin/processing/TOOL.py`` with a subclass of
   :class:`~.base.EngineAlgorithm`: set ``TOOL`` (the tool's name) and ``PARAMS``
   (the declared parameters it exposes; ``OPTIONS`` says how a layer is taken),
   add them in ``initAlgorithm`` with ``self.add_params(...)`` next to QGIS's own
   parameters (an extent, a tile size unit, a weights choice: ``params``), build
   the tool's request in ``processAlgorithm`` (``self.param_value`` reads a
   declared parameter), raise ``self.problems_error(request.problems())`` and
   hand its argv to ``self.run_engine_command`` (progress, cancel and errors are
   handled there); write the help from the declarations (``params.bullets``,
   ``params.output_name``);
2. list ``"TOOL.ClassName"`` in ``plugin/provider.py``'s ``ALGORITHMS``.

tests/plugin/test_contract_drift.py checks that every exposed parameter has the
declared bounds, default, choices and flags.

Algorithms that do not need the engine (``export``) subclass
QgsProcessingAlgorithm directly and use :class:`~.base.UrbanFormAlgorithm`'s
group and ``createInstance``.

Nothing here imports torch, rasterio or the ``engine`` package beyond
``engine.contract``: the engine runs in its own Python, or on the engine
server, through :func:`plugin.runner.dispatch.run_engine`.
"""
