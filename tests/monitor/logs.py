"""Writing request-log and feedback rows straight into a project's prediction log, as a gateway
would.

Tests that need thousands of logged requests, a bad row, or a time in the past write them here;
``test_gateway_window`` checks the same reading against rows a real gateway wrote.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from conveyor.actions.models import open_registry
from conveyor.gateway.logtables import write_feedback, write_requests
from conveyor.store.predictionlog.query import log_of

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
    """Write the rows to the project's prediction log as the gateway's writer does: one file
    per model, environment, day and version, inputs typed by that version's signature."""
    with open_registry(config) as registry:
        files = log_of(registry.store)
        groups: dict[tuple[Any, ...], list[tuple[Any, ...]]] = {}
        for e in logged:
            entry = (
                e["request_id"],
                e["at"].timestamp(),
                e["model"],
                e["version"],
                e["environment"],
                e["role"],
                e["status"],
                e["latency_ms"],
                e["rows"],
                e["inputs"],
                e["outputs"],
                e["gateway"],
            )
            key = (e["model"], e["environment"], e["at"].date(), e["version"])
            groups.setdefault(key, []).append(entry)

        def signature(model: str, version: int) -> dict[str, Any] | None:
            try:
                return registry.version(model, version).signature
            except Exception:
                return None

        for entries in groups.values():
            write_requests(files, entries, signature, "test")
        if labels:
            write_feedback(
                files,
                [(f["request_id"], f["labels"]) for f in labels],
                [f["actor"] for f in labels],
                "test",
                at=[f["at"].timestamp() for f in labels],
            )


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
