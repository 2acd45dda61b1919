"""Running the engine: its Python environment and set-up (``engine_env``, ``engine_setup``, ``setup_task``),
the subprocess (``engine_process``), the QgsTask around it (``task``) and the dock's dry-run probe (``probe``).

No widgets here (tests/plugin/test_layout.py checks); ``engine_setup`` is plain Python, runnable without QGIS.
"""
