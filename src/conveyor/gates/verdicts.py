"""The result of one gate, as stored with a version, shown in reports and written to JUnit.

Verdicts: ``pass``; ``fail`` (the evidence shows the candidate falls short); ``inconclusive``
(a comparison whose interval straddles the bound: too few rows to tell; counts as a failure
unless the gate says ``on_inconclusive: pass``); ``skipped`` (nothing to judge, such as a
comparison with an environment that serves no version yet); ``error`` (the gate could not be
evaluated, which also stops the candidate).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from conveyor.evaluate.values import format_number, jsonable

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
        return jsonable(asdict(self))


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
    """A metric for a sentence, as every other surface shows it (``evaluate/values.py``)."""
    return format_number(value)
