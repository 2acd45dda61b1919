"""The widgets: the dock as a shell (``dock``), one panel per mode (``buildings_panel``), the engine set-up bar
(``engine_bar``), the plots window (``plots``), marks on invalid widgets (``marks``), the panels' words for the
engine's messages (``wording``) and the statistics input pickers (``stats_inputs``)."""
