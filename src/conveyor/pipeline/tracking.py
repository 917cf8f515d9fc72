"""Metrics, params and files a step records about itself.

Calls only append to an in-memory buffer (a metric costs about a microsecond); the worker hands
the buffer back with the step's result and the engine writes it in one transaction, also when
the step fails, so nothing logged before an exception is lost.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conveyor.exceptions import ConveyorError

Number = int | float


@dataclass
class Tracker:
    """The buffer of one running step."""

    step: str
    artifacts_url: str
    metrics: list[tuple[str, float, int, float]] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    artifacts: list[tuple[str, str, int]] = field(default_factory=list)
    _counts: dict[str, int] = field(default_factory=dict)


_active: Tracker | None = None


def _tracker(what: str) -> Tracker:
    if _active is None:
        raise ConveyorError(
            f"conveyor.{what}() was called outside a pipeline step. Call it from a function "
            "that 'conveyor run' executes (a step in conveyor.yaml)."
        )
    return _active


def log_metric(key: str, value: Number, step: int | None = None) -> None:
    """Record a metric value; repeated calls for one key form a series (index 0, 1, ...).

    Args:
        key: metric name, such as ``"roc_auc"`` or ``"loss"``.
        value: a real number (NaN and infinities are kept as they are).
        step: position in the series; defaults to the number of values logged for this key.

    Raises:
        ConveyorError: outside a step, or the value is not a number.
    """
    tracker = _tracker("log_metric")
    if not isinstance(key, str) or not key:
        raise ConveyorError(f"log_metric: the key must be a non-empty string, got {key!r}.")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConveyorError(
            f"log_metric({key!r}, {value!r}): the value must be a number."
        ) from None
    if step is None:
        step = tracker._counts.get(key, 0)
    tracker._counts[key] = step + 1
    tracker.metrics.append((key, number, step, time.time()))


def log_metrics(values: dict[str, Number], step: int | None = None) -> None:
    """Record several metrics at once."""
    for key, value in values.items():
        log_metric(key, value, step)


def log_param(key: str, value: Any) -> None:
    """Record a parameter of the run (JSON-serialisable)."""
    tracker = _tracker("log_param")
    if not isinstance(key, str) or not key:
        raise ConveyorError(f"log_param: the key must be a non-empty string, got {key!r}.")
    tracker.params[key] = _jsonable(key, value)


def log_artifact(path: str | os.PathLike[str], name: str | None = None) -> str:
    """Copy a file into the artifact store now and attach it to the run.

    Returns:
        The artifact's sha256 digest.
    """
    tracker = _tracker("log_artifact")
    from conveyor.store.artifacts import ArtifactStore

    source = Path(path)
    if not source.is_file():
        raise ConveyorError(f"log_artifact: {str(source)!r} is not a file.")
    store = ArtifactStore(tracker.artifacts_url)
    store.open()
    artifact = store.put_file(source)
    tracker.artifacts.append((name or source.name, artifact.digest, artifact.size))
    return artifact.digest


def _jsonable(key: str, value: Any) -> Any:
    import json

    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value
