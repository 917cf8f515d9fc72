"""Writing request-log and feedback rows straight into a project's store, as a gateway would.

Tests that need thousands of logged requests, a bad row, or a time in the past write them here;
``test_gateway_window`` checks the same reading against rows a real gateway wrote.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert

from conveyor.actions.models import open_registry
from conveyor.store import models as m

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def entry(
    request_id: str,
    inputs: Any,
    predictions: Sequence[Any] | None = None,
    *,
    model: str = "num",
    version: int = 1,
    environment: str = "production",
    role: str = "serve",
    status: int = 200,
    latency_ms: float = 2.0,
    ago: float = 10.0,
    raw_inputs: str | None = None,
) -> dict[str, Any]:
    """One request_log row; ``inputs`` is the list of rows sent (or ``raw_inputs``, as is)."""
    rows = len(inputs) if isinstance(inputs, list) else 1
    outputs = json.dumps({"predictions": list(predictions)}) if predictions is not None else ""
    return {
        "request_id": request_id,
        "at": NOW - timedelta(seconds=ago),
        "model": model,
        "version": version,
        "environment": environment,
        "role": role,
        "status": status,
        "latency_ms": latency_ms,
        "rows": rows,
        "inputs": raw_inputs if raw_inputs is not None else json.dumps(inputs),
        "outputs": outputs,
        "gateway": "test",
    }


def feedback(request_id: str, labels: Sequence[Any], *, ago: float = 0.0) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "at": NOW - timedelta(seconds=ago),
        "labels": json.dumps(list(labels)),
        "actor": "test",
    }


def write(config: Any, logged: list[dict[str, Any]], labels: list[dict[str, Any]] = ()) -> None:
    """Insert the rows in one transaction each, as the gateway's writer does."""
    with open_registry(config) as registry, registry.store.engine.begin() as conn:
        if logged:
            conn.execute(insert(m.RequestLog), logged)
        if labels:
            conn.execute(insert(m.Feedback), list(labels))


@contextmanager
def registry_of(config: Any) -> Iterator[Any]:
    with open_registry(config) as registry:
        yield registry


def served_rows(frame: Any) -> list[list[Any]]:
    """A frame's rows as the JSON arrays a caller sends (NaN as null)."""
    return [[None if v != v else v for v in row] for row in frame.to_numpy().tolist()]


def records(frame: Any) -> list[dict[str, Any]]:
    """A frame's rows as JSON records (NaN as null, NumPy scalars as Python values)."""
    out = []
    for row in frame.to_dict(orient="records"):
        out.append(
            {
                k: (
                    None if isinstance(v, float) and v != v else getattr(v, "item", lambda v=v: v)()
                )
                for k, v in row.items()
            }
        )
    return out
