"""The one JSON error shape every gateway endpoint answers with.

    {"error": {"status": 422, "code": "invalid_input", "message": "...",
               "field": "amount", "row": 3, "request_id": "..."}}

``field`` and ``row`` are null when the problem is not in a row. Clients can rely on this
shape for every 4xx and 5xx, whatever the endpoint.
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["HttpError", "error_body"]


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
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.row = row
        self.headers = headers or []


def error_body(
    status: int,
    code: str,
    message: str,
    request_id: str,
    *,
    field: str | None = None,
    row: int | None = None,
) -> bytes:
    """The pinned error document, as bytes."""
    error: dict[str, Any] = {
        "status": status,
        "code": code,
        "message": message,
        "field": field,
        "row": row,
        "request_id": request_id,
    }
    return orjson.dumps({"error": error})
