"""The error shapes the gateway answers with: its own JSON API's, and each protocol's it speaks.

The JSON API (``/v1/models/{model}/predict`` and the rest of ``conveyor``'s routes)::

    {"error": {"status": 422, "code": "invalid_input", "message": "...",
               "field": "amount", "row": 3, "request_id": "..."}}

``field`` and ``row`` are null when the problem is not in a row. Clients can rely on this
shape for every 4xx and 5xx of those endpoints.

A protocol's routes answer as that protocol's spec and its real clients expect, since those
clients parse the body themselves (``tritonclient`` prints ``error`` as a string; MLflow's
client reads ``error_code`` and ``message``):

- ``v2`` (Open Inference Protocol): ``{"error": "<message>", "details": {...}}``, the details
  being the JSON API's error object (extra keys are allowed by the spec and ignored by clients);
- ``mlflow`` (MLflow's scoring server): ``{"error_code": "BAD_REQUEST", "message": "..."}``;
- ``tfserving`` (TensorFlow Serving's REST API): ``{"error": "<message>"}``.

A request the JSON API answers with 422 (rows that do not fit the signature) is a 400 in MLflow
and TensorFlow Serving, whose clients know only 400 for a bad request.
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["HttpError", "error_body", "protocol_error"]

# MLflow's error codes (its protos' ErrorCode names) by HTTP status.
_MLFLOW_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "RESOURCE_DOES_NOT_EXIST",
    405: "BAD_REQUEST",
    413: "BAD_REQUEST",
    500: "INTERNAL_ERROR",
    503: "TEMPORARILY_UNAVAILABLE",
}


class HttpError(Exception):
    """An answer other than success, raised anywhere below the ASGI app and rendered once."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        row: int | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
        protocol: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.row = row
        self.headers = headers or []
        self.protocol = protocol  # whose error shape; None: the route's (found on the way out)


def _detail(
    status: int, code: str, message: str, request_id: str, field: str | None, row: int | None
) -> dict[str, Any]:
    return {
        "status": status,
        "code": code,
        "message": message,
        "field": field,
        "row": row,
        "request_id": request_id,
    }


def error_body(
    status: int,
    code: str,
    message: str,
    request_id: str,
    *,
    field: str | None = None,
    row: int | None = None,
) -> bytes:
    """The JSON API's pinned error document, as bytes."""
    return orjson.dumps({"error": _detail(status, code, message, request_id, field, row)})


def protocol_error(
    protocol: str,
    status: int,
    code: str,
    message: str,
    request_id: str,
    *,
    field: str | None = None,
    row: int | None = None,
) -> tuple[int, bytes]:
    """The status and body of an error in ``protocol``'s shape (see the module docstring).

    Args:
        protocol: one of ``routes.PROTOCOLS``; ``conveyor`` is the JSON API's own shape.
        status: the HTTP status the JSON API would answer with.
        code: the gateway's error code (``invalid_input``, ``model_not_found``, ...).
        message: one or two sentences naming what was wrong and the fix.
        request_id: the request's id (also in the ``x-request-id`` header).
        field: the field or tensor at fault, if any.
        row: the row at fault, if any.
    """
    if protocol == "v2":
        detail = _detail(status, code, message, request_id, field, row)
        return status, orjson.dumps({"error": message, "details": detail})
    if protocol == "tfserving":
        status = 400 if status == 422 else status
        return status, orjson.dumps({"error": message})
    if protocol == "mlflow":
        status = 400 if status == 422 else status
        error_code = _MLFLOW_CODES.get(status, "BAD_REQUEST" if status < 500 else "INTERNAL_ERROR")
        return status, orjson.dumps({"error_code": error_code, "message": message})
    return status, error_body(status, code, message, request_id, field=field, row=row)
