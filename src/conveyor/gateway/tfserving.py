"""TensorFlow Serving's REST predict format over a model's signature.

``POST /v1/models/{model}:predict`` takes the row format (``{"instances": [...]}``: records
keyed by field, or arrays in signature order) or the columnar format (``{"inputs": {field:
[values...]}}``, or one ``[rows, fields]`` list), and an optional ``signature_name``. The
answer follows the request's format as TF Serving's docs specify: ``{"predictions": ...}``
for rows, ``{"outputs": ...}`` for columns; a classifier has two named outputs
(``predictions`` and ``probabilities``), so rows get one object per row and columns one
object of both. Errors are ``{"error": "<message>"}`` (``errors.protocol_error``).

The rows then go through the gateway's one predict path: the same signature check (errors
name the field and row), batching, canary routing and request log as the JSON API.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from conveyor.gateway.errors import HttpError

__all__ = ["SIGNATURE", "TfRequest", "answer", "columns_to_rows", "load_json", "read_request"]

SIGNATURE = "serving_default"  # the one signature a served model has, as TF names its default


def _bad(message: str, *, field: str | None = None, row: int | None = None) -> HttpError:
    return HttpError(400, "invalid_request", message, field=field, row=row)


class TfRequest:
    """A decoded predict request: its rows, and whether it came in the columnar format."""

    __slots__ = ("columnar", "rows")

    def __init__(self, rows: list[Any], columnar: bool) -> None:
        self.rows = rows
        self.columnar = columnar


def load_json(raw: bytes) -> Any:
    """The body as JSON, the NaN and Infinity tokens allowed (TF Serving and MLflow allow them).

    Raises:
        HttpError: 400 when the body is not JSON.
    """
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        # TF Serving's JSON allows the NaN and Infinity tokens (its "JSON conformance" section);
        # Python's own parser reads them, and is only reached for such a body.
        try:
            return json.loads(raw)
        except (ValueError, RecursionError):
            raise _bad(f"The body is not valid JSON: {exc}") from None


def read_request(raw: bytes) -> TfRequest:
    """The rows of a predict request, in either of TF Serving's formats.

    Raises:
        HttpError: 400 naming the key or field that is malformed.
    """
    payload = load_json(raw)
    if type(payload) is not dict:
        raise _bad('The body must be a JSON object: {"instances": [...]} or {"inputs": ...}.')
    unknown = [k for k in payload if k not in ("instances", "inputs", "signature_name")]
    if unknown:
        raise _bad(
            f"The body has the key {unknown[0][:80]!r}; a predict request has instances (rows) "
            "or inputs (columns), and optionally signature_name.",
            field=unknown[0][:200],
        )
    name = payload.get("signature_name", SIGNATURE)
    if name != SIGNATURE:
        shown = name[:80] if isinstance(name, str) else name
        raise _bad(
            f"signature_name is {shown!r}; the model has one signature, {SIGNATURE!r} (or leave "
            "it out).",
            field="signature_name",
        )
    if ("instances" in payload) == ("inputs" in payload):
        raise _bad('Send exactly one of "instances" (rows) and "inputs" (columns).')
    if "instances" in payload:
        rows = payload["instances"]
        if not isinstance(rows, list):
            raise _bad('"instances" must be a list of rows.', field="instances")
        return TfRequest(rows, False)
    return TfRequest(columns_to_rows(payload["inputs"], "inputs"), True)


def columns_to_rows(inputs: Any, key: str) -> list[Any]:
    """Columns (``{field: [values...]}``) as records, or a ``[rows, fields]`` list as is.

    Raises:
        HttpError: 400 naming the field whose column is not a list or has another length.
    """
    if isinstance(inputs, list):
        return inputs
    if not isinstance(inputs, dict) or not inputs:
        raise _bad(
            f'"{key}" must be an object of columns ({{"field": [values, ...]}}) or a list of rows.',
            field=key,
        )
    names = list(inputs)
    length = None
    for field in names:
        column = inputs[field]
        if not isinstance(column, list):
            raise _bad(
                f"The column {field[:80]!r} must be a list of values, one per row.", field=field
            )
        if length is None:
            length = len(column)
        elif len(column) != length:
            raise _bad(
                f"The column {field[:80]!r} has {len(column)} values but {names[0][:80]!r} has "
                f"{length}; every column holds one value per row.",
                field=field,
            )
    columns = [inputs[n] for n in names]
    return [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]


def _plain(value: Any) -> Any:
    tolist = getattr(value, "tolist", None)
    return tolist() if tolist is not None else value


def answer(values: Any, probabilities: Any | None, columnar: bool) -> dict[str, Any]:
    """The response document for a request in the row or the columnar format."""
    values = _plain(values)
    if probabilities is None:
        return {"outputs": values} if columnar else {"predictions": values}
    probabilities = _plain(probabilities)
    if columnar:
        return {"outputs": {"predictions": values, "probabilities": probabilities}}
    return {
        "predictions": [
            {"predictions": v, "probabilities": p}
            for v, p in zip(values, probabilities, strict=True)
        ]
    }
