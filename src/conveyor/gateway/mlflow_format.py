"""MLflow's scoring-server format: what ``POST /invocations`` takes and answers.

A body holds exactly one of ``dataframe_split`` (``{"columns": [...], "data": [[...]]}``, as
``DataFrame.to_dict(orient="split")`` writes it; ``index`` is ignored), ``dataframe_records``
(a list of records), ``instances`` (rows, or columns as an object) or ``inputs`` (columns, or
rows), and optionally ``params`` (an object; the served models take none, so they are read
and ignored, as MLflow does for a model whose signature has no parameters). The answer is
``{"predictions": [...]}``; an error is ``{"error_code": "BAD_REQUEST", "message": "..."}``
(``errors.protocol_error``).

The rows then go through the gateway's one predict path: the same signature check (errors
name the field and row), batching, canary routing and request log as the JSON API.
"""

from __future__ import annotations

from typing import Any

from conveyor.gateway.errors import HttpError
from conveyor.gateway.tfserving import columns_to_rows, load_json

__all__ = ["FORMATS", "read_request"]

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")


def _bad(message: str, *, field: str | None = None, row: int | None = None) -> HttpError:
    return HttpError(400, "invalid_request", message, field=field, row=row)


def read_request(raw: bytes, content_type: str | None) -> list[Any]:
    """The rows of an ``/invocations`` body: records, or arrays in signature order.

    Raises:
        HttpError: 415 for a body that is not JSON by its content type; 400 naming the key,
            field or row that is malformed.
    """
    if content_type is not None and not content_type.startswith("application/json"):
        raise HttpError(
            415,
            "unsupported_media_type",
            f"Content-Type is {content_type[:80]!r}; /invocations here takes application/json "
            f"with one of {', '.join(FORMATS)}.",
        )
    payload = load_json(raw)
    if type(payload) is not dict:
        raise _bad(f"The body must be a JSON object with one of {', '.join(FORMATS)}.")
    unknown = [k for k in payload if k not in FORMATS and k != "params"]
    if unknown:
        raise _bad(
            f"The body has the key {unknown[0][:80]!r}; send one of {', '.join(FORMATS)} "
            "(and optionally params).",
            field=unknown[0][:200],
        )
    given = [k for k in FORMATS if k in payload]
    if len(given) != 1:
        raise _bad(
            f"Send exactly one of {', '.join(FORMATS)}; the body has "
            f"{', '.join(given) if given else 'none of them'}."
        )
    params = payload.get("params")
    if params is not None and not isinstance(params, dict):
        raise _bad("params must be an object of parameter names and values.", field="params")
    key = given[0]
    data = payload[key]
    if key == "dataframe_split":
        return _split(data)
    if key == "dataframe_records":
        if not isinstance(data, list):
            raise _bad("dataframe_records must be a list of records.", field=key)
        return data
    return columns_to_rows(data, key)


def _split(frame: Any) -> list[Any]:
    if not isinstance(frame, dict) or not isinstance(frame.get("data"), list):
        raise _bad(
            'dataframe_split must be an object with "data" (a list of rows) and "columns".',
            field="dataframe_split",
        )
    unknown = [k for k in frame if k not in ("columns", "data", "index")]
    if unknown:
        raise _bad(
            f"dataframe_split has the key {unknown[0][:80]!r}; it takes columns, data and index.",
            field=unknown[0][:200],
        )
    if "index" in frame and not isinstance(frame["index"], list):
        raise _bad("dataframe_split index must be a list (it is read and ignored).", field="index")
    data = frame["data"]
    columns = frame.get("columns")
    if columns is None:
        return data  # rows in signature order
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise _bad("dataframe_split columns must be a list of field names.", field="columns")
    if len(set(columns)) != len(columns):
        twice = next(c for c in columns if columns.count(c) > 1)
        raise _bad(f"dataframe_split names the column {twice[:80]!r} twice.", field=twice)
    rows = []
    for i, values in enumerate(data):
        if not isinstance(values, list) or len(values) != len(columns):
            raise _bad(
                f"dataframe_split row {i} must be a list of {len(columns)} values, one per column.",
                row=i,
            )
        rows.append(dict(zip(columns, values, strict=True)))
    return rows
