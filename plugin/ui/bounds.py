"""Spin boxes bounded by the tools' declarations (``engine.contract.tools``), not by numbers in the .ui files.

A declared number's minimum, maximum and step (``multiple_of``) become the spin box's range and step; an open
bound (``open_min``/``open_max``: the bound itself is refused) becomes the nearest value the box can show.
"""
from __future__ import annotations

from ...engine.contract.params import Param


def bound(spin, param: Param, minimum: float | None = None) -> None:
    """Give ``spin`` the range of the declared number ``param`` (``minimum``: a lower special value of the box,
    such as -1 for "automatic", that the declaration does not know)."""
    step = 10.0 ** -spin.decimals() if hasattr(spin, "decimals") else 1
    low = param.minimum + (step if param.open_min else 0) if param.minimum is not None else None
    high = param.maximum - (step if param.open_max else 0) if param.maximum is not None else None
    if minimum is not None:
        low = minimum
    if low is not None:
        spin.setMinimum(low)
    if high is not None:
        spin.setMaximum(high)
    if param.multiple_of:
        spin.setSingleStep(param.multiple_of)
