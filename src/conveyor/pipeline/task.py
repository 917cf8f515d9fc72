"""What the engine hands an executor, and what comes back: plain picklable data.

Keeping these free of live objects (sessions, stores) is what lets one contract serve a local
process pool and a Ray cluster alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class InputSpec:
    """One argument of a step, already resolved to stored bytes.

    ``kind`` is ``"output"`` (another step's value: ``outputs`` maps output name → descriptor;
    ``select`` picks one, or None for the whole) or ``"source"`` (a data snapshot: ``files`` are
    absolute paths, or ``data_digest`` a materialised SQL result).
    """

    ref: str
    kind: str
    outputs: dict[str, dict] = field(default_factory=dict)
    select: str | None = None
    files: tuple[str, ...] = ()
    format: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    data_digest: str | None = None


@dataclass(frozen=True)
class StepTask:
    name: str
    run: str | None  # "module:function"
    cmd: str | None
    root: str
    artifacts_url: str
    log_path: str
    inputs: tuple[tuple[str | None, InputSpec], ...] = ()
    params: dict[str, Any] = field(default_factory=dict)
    outs: tuple[str, ...] = ()
    metrics_file: str | None = None
    # model.trusted_types: the exact names a model input may need (a skops file's own types,
    # the class of a custom Python model), as conveyor.yaml gives them
    trusted_types: tuple[str, ...] = ()


@dataclass
class StepResult:
    name: str
    ok: bool
    started_at: float
    finished_at: float
    outputs: dict[str, dict] = field(default_factory=dict)
    metrics: list[tuple[str, float, int, float]] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    artifacts: list[tuple[str, str, int]] = field(default_factory=list)
    error: str | None = None
    traceback: str | None = None

    @property
    def duration_s(self) -> float:
        return self.finished_at - self.started_at
