"""What the dock's Buildings and Analyses panels share: the raster and device the dock has chosen, whether the
panel's engine run is going, and why Run is disabled (from the panel's own ``problems_and_widgets``)."""
from __future__ import annotations

from ...engine.contract.problems import Problem


class DockPanel:
    """Mixin for a panel of the dock (``self.dock``) that runs one engine task at a time (``self.task``)."""

    def raster(self) -> str:
        """The chosen raster layer's file ('' when it is not a local file)."""
        from .dock import raster_path

        return raster_path(self.dock.rasterCombo.currentLayer())

    def device(self) -> str:
        return self.dock.deviceCombo.currentData() or "auto"

    def is_running(self) -> bool:
        return self.task is not None

    def problems(self) -> list[Problem]:
        """Why Run is disabled (empty when it can run). An existing output is no reason: Run asks."""
        return [problem for problem, _widget in self.problems_and_widgets()]
