"""How a metric value leaves Python: as text for people, and as JSON for files.

Every surface formats numbers here (the terminal, the model card, the monitoring page, the
pull-request comment, gate summaries), so one AUC reads ``0.8123`` wherever it is shown. It lives
in ``evaluate/``, the lowest layer that computes metrics, so that everything above it (pipeline,
gates, reports, monitor, the CLI) can import it; it has no IO and imports nothing of Conveyor.

Metrics are NaN when they are undefined (a single class, too few rows), and JSON has no NaN:
``jsonable`` turns them into ``null`` rather than writing a file no strict parser reads.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, TypeGuard

__all__ = ["EMPTY", "format_number", "format_percent", "format_signed", "is_number", "jsonable"]

EMPTY = "—"  # a missing value (None, or a NaN stored as null)


def is_number(value: Any) -> TypeGuard[int | float]:
    """True for an int or float that is not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def format_number(value: Any) -> str:
    """A value as people read it: 4 decimals for floats (scientific below 0.001), ints as they are.

    Four decimals, not four significant digits, so a column of metrics lines up and a change in
    the fourth decimal (the size of a gate's margin) is visible. NumPy scalars read as the Python
    numbers they hold; None reads as ``—``, NaN as ``NaN`` and infinities as ``∞``/``-∞``.
    """
    if value is None:
        return EMPTY
    if not isinstance(value, int | float) and callable(getattr(value, "item", None)):
        try:
            value = value.item()  # a NumPy scalar: format the Python number it holds
        except (TypeError, ValueError):
            return str(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "∞" if value > 0 else "-∞"
        if value == 0 or abs(value) >= 1e-3:
            return f"{value:.4f}"
        return f"{value:.3e}"
    return str(value)


def format_signed(value: int | float) -> str:
    """A change with its sign always shown (``+0.0040``), on the same scale as ``format_number``."""
    if isinstance(value, int):
        return f"{value:+d}"
    if value == 0 or abs(value) >= 1e-3:
        return f"{value:+.4f}"
    return f"{value:+.3e}"


def format_percent(share: Any) -> str:
    """A share in [0, 1] as a percentage with one decimal (``0.112`` -> ``11.2%``)."""
    if share is None:
        return EMPTY
    try:
        value = float(share)
    except (TypeError, ValueError):
        return str(share)
    if math.isnan(value):
        return "NaN"
    return f"{100 * value:.1f}%"


def jsonable(value: Any) -> Any:
    """``value`` with NaN and infinities as None and NumPy scalars as Python numbers.

    Mappings become dicts with string keys, tuples become lists, so ``json.dumps(...,
    allow_nan=False)`` accepts the result whenever its leaves are JSON types. A value that is not
    a number, a container or a NumPy scalar (a date, a path) is returned as it is, for the
    caller's ``default=``; a NumPy array that is not one element becomes its string.
    """
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if value is None or isinstance(value, str | int):
        return value
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    item = getattr(value, "item", None)
    if callable(item) and not isinstance(value, bytes):  # NumPy scalars and 0-d arrays
        try:
            return jsonable(item())
        except (TypeError, ValueError):
            return str(value)
    return value
