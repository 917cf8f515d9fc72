"""The result of one gate, as stored with a version, shown in reports and written to JUnit.

Verdicts: ``pass``; ``fail`` (the evidence shows the candidate falls short); ``inconclusive``
(a comparison whose interval straddles the bound: too few rows to tell; counts as a failure
unless the gate says ``on_inconclusive: pass``); ``skipped`` (nothing to judge, such as a
comparison with an environment that serves no version yet); ``error`` (the gate could not be
evaluated, which also stops the candidate).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

BLOCKING = ("fail", "error")


@dataclass
class GateResult:
    name: str
    kind: str
    verdict: str
    summary: str
    evidence: dict[str, Any] = field(default_factory=dict)
    duration_s: float = 0.0
    blocks: bool = False  # whether this verdict stops the candidate

    def to_dict(self) -> dict[str, Any]:
        return _json_safe(asdict(self))


def blocking(result: GateResult, on_inconclusive: str = "fail") -> bool:
    """Whether ``result`` stops the candidate."""
    if result.verdict == "inconclusive":
        return on_inconclusive != "pass"
    return result.verdict in BLOCKING


@contextmanager
def timed(sink: Callable[[float], None]) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        sink(time.perf_counter() - start)


def fmt(value: Any) -> str:
    """A metric for a sentence: 4 decimals, or 'n/a' for a missing/NaN value."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str | bytes):  # numpy scalars
        try:
            return _json_safe(value.item())
        except (TypeError, ValueError):
            return str(value)
    return value
