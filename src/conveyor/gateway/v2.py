"""The Open Inference Protocol (KServe v2, as Triton speaks it) over a model's signature.

Inputs come as one tensor per signature field (shape ``[n]`` or ``[n, 1]``) or, for an
all-numeric signature, one ``[n, fields]`` tensor. Tensors arrive as JSON ``data`` or in the
binary-data extension (``Inference-Header-Content-Length``), which ``tritonclient`` uses by
default. As Triton and KServe do, JSON ``data`` nested deeper than 100 lists and FP16 in JSON
(JSON has no half-precision number; send it as binary data) are refused. Outputs are
``predictions`` (labels or values) and, for classifiers, ``probabilities`` (``[n, classes]``),
as JSON or binary as the client asks; asking for one twice is refused.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import orjson

from conveyor.gateway.errors import HttpError
from conveyor.gateway.runtime import Prediction, Served

__all__ = ["decode_request", "encode_response", "model_metadata"]

_NUMPY = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}
_NUMERIC = {k for k in _NUMPY if k != "BOOL"}
_FIELD_TYPE = {"number": "FP64", "integer": "INT64", "boolean": "BOOL"}
MAX_DEPTH = 100  # nested lists in a JSON tensor's data, as Triton allows


def _bad(message: str, *, field: str | None = None, row: int | None = None) -> HttpError:
    return HttpError(400, "invalid_request", message, field=field, row=row)


def model_metadata(served: Served, platform: str) -> dict[str, Any]:
    """``GET /v2/models/{name}``: the tensors a client sends and gets."""
    inputs = [
        {"name": f["name"], "datatype": _input_type(f), "shape": [-1, 1]}
        for f in served.signature["inputs"]
    ]
    outputs = [{"name": "predictions", "datatype": _label_type(served), "shape": [-1]}]
    if served.task == "classification":
        outputs.append(
            {"name": "probabilities", "datatype": "FP64", "shape": [-1, len(served.classes)]}
        )
    return {
        "name": served.model,
        "versions": [str(served.version)],
        "platform": platform,
        "inputs": inputs,
        "outputs": outputs,
    }


def _input_type(field: dict[str, Any]) -> str:
    """The tensor type for a field; a nullable integer travels as FP64, NaN meaning null."""
    if field["type"] == "integer" and field.get("nullable"):
        return "FP64"
    return _FIELD_TYPE.get(field["type"], "BYTES")


def _label_type(served: Served) -> str:
    if served.task == "regression":
        return "FP64"
    if served.classes and all(isinstance(c, bool) for c in served.classes):
        return "BOOL"
    if served.classes and all(isinstance(c, int) for c in served.classes):
        return "INT64"
    return "BYTES"


def decode_request(
    body: bytes, header_length: str | None, served: Served, max_rows: int
) -> tuple[list[list[Any]], dict[str, Any], dict[str, bool]]:
    """The rows an infer request carries (signature order), its JSON header, and the outputs
    it asks for (name: binary or not), checked before anything is predicted.

    Raises:
        HttpError: 400 naming the tensor for a malformed request.
    """
    if header_length is not None:
        try:
            split = int(header_length)
        except ValueError:
            raise _bad(
                f"Inference-Header-Content-Length must be an integer, got {header_length!r}."
            ) from None
        if not 0 <= split <= len(body):
            raise _bad(
                f"Inference-Header-Content-Length is {split} but the body has {len(body)} bytes."
            )
        head, binary = body[:split], memoryview(body)[split:]
    else:
        head, binary = body, memoryview(b"")
    try:
        request = orjson.loads(head)
    except orjson.JSONDecodeError as exc:
        raise _bad(f"The request is not valid JSON: {exc}") from None
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
        raise _bad('The request needs "inputs": a list of tensors.')
    tensors: dict[str, np.ndarray] = {}
    offset = 0
    for i, spec in enumerate(request["inputs"]):
        name, array, used = _tensor(spec, i, binary, offset)
        offset += used
        if name in tensors:
            raise _bad(f"The input tensor {name!r} is sent twice.", field=name)
        tensors[name] = array
    if offset != len(binary):
        raise _bad(f"{len(binary) - offset} bytes of binary data are not claimed by any input.")
    wanted = _wanted_outputs(request, served)
    columns = _columns(tensors, served, max_rows)
    return [list(row) for row in zip(*columns, strict=True)], request, wanted


def _output_names(served: Served) -> list[str]:
    return ["predictions", "probabilities"] if served.task == "classification" else ["predictions"]


def _wanted_outputs(request: dict[str, Any], served: Served) -> dict[str, bool]:
    """The outputs a request asks for, each with whether it travels as binary data."""
    params = request.get("parameters")
    binary_default = isinstance(params, dict) and bool(params.get("binary_data_output", False))
    known = _output_names(served)
    asked = request.get("outputs")
    if not isinstance(asked, list) or not asked:
        return {name: binary_default for name in known}
    wanted: dict[str, bool] = {}
    for spec in asked:
        name = spec.get("name") if isinstance(spec, dict) else None
        if not isinstance(name, str) or name not in known:
            raise _bad(
                f"The output {name!r} does not exist; outputs: {', '.join(known)}.",
                field=name if isinstance(name, str) else None,
            )
        if name in wanted:
            raise _bad(f"The output {name!r} is asked for twice.", field=name)
        p = spec.get("parameters") or {}
        wanted[name] = (
            bool(p.get("binary_data", binary_default)) if isinstance(p, dict) else (binary_default)
        )
    return wanted


def _tensor(spec: Any, i: int, binary: memoryview, offset: int) -> tuple[str, np.ndarray, int]:
    if not isinstance(spec, dict):
        raise _bad(f"inputs[{i}] must be an object with name, shape, datatype and data.")
    name, shape, dtype = spec.get("name"), spec.get("shape"), spec.get("datatype")
    if not isinstance(name, str) or not name:
        raise _bad(f"inputs[{i}] has no name.")
    if (
        not isinstance(shape, list)
        or not shape
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
    ):
        raise _bad(f"The input {name!r} needs a shape of non-negative integers.", field=name)
    if not isinstance(dtype, str) or (dtype != "BYTES" and dtype not in _NUMPY):
        raise _bad(
            f"The input {name!r} has the datatype {dtype!r}; use BOOL, INTn, UINTn, FPn or BYTES.",
            field=name,
        )
    count = math.prod(shape)
    params = spec.get("parameters") or {}
    size = params.get("binary_data_size") if isinstance(params, dict) else None
    if size is not None:
        if not isinstance(size, int) or size < 0 or offset + size > len(binary):
            raise _bad(f"The input {name!r} claims binary data the body does not have.", field=name)
        raw = binary[offset : offset + size]
        array = _from_binary(raw, dtype, count, name)
        return name, array, size
    if "data" not in spec:
        raise _bad(f"The input {name!r} has neither data nor binary_data_size.", field=name)
    if dtype == "FP16":
        raise _bad(
            f"The input {name!r} is FP16 in JSON, which has no half-precision numbers; send it "
            "as binary data (binary_data_size) or as FP32.",
            field=name,
        )
    array = _from_json(spec["data"], dtype, count, name)
    return name, array, 0


def _from_binary(raw: memoryview, dtype: str, count: int, name: str) -> np.ndarray:
    if dtype == "BYTES":
        out, pos, data = [], 0, bytes(raw)
        while pos < len(data):
            if pos + 4 > len(data):
                raise _bad(f"The BYTES input {name!r} ends inside a length prefix.", field=name)
            n = int.from_bytes(data[pos : pos + 4], "little")
            out.append(data[pos + 4 : pos + 4 + n])
            pos += 4 + n
        if len(out) != count or pos != len(data):
            raise _bad(
                f"The BYTES input {name!r} holds {len(out)} values, not {count}.", field=name
            )
        return np.array([_text(v, name, i) for i, v in enumerate(out)], dtype=object)
    item = np.dtype(_NUMPY[dtype])
    if len(raw) != count * item.itemsize:
        raise _bad(
            f"The input {name!r} has {len(raw)} bytes; {count} {dtype} values take "
            f"{count * item.itemsize}.",
            field=name,
        )
    return np.frombuffer(raw, dtype=item.newbyteorder("<")).copy()


def _from_json(data: Any, dtype: str, count: int, name: str) -> np.ndarray:
    flat = _flatten(data, name)
    if len(flat) != count:
        raise _bad(
            f"The input {name!r} has {len(flat)} values; its shape says {count}.", field=name
        )
    if dtype == "BYTES":
        return np.array([_text(v, name, i) for i, v in enumerate(flat)], dtype=object)
    # An INTn/UINTn tensor takes integers only: NumPy would quietly truncate 1.5 to 1.
    want = bool if dtype == "BOOL" else (float, int) if dtype.startswith("FP") else int
    for i, v in enumerate(flat):
        if not isinstance(v, want) or (dtype != "BOOL" and isinstance(v, bool)):
            raise _bad(
                f"The input {name!r} value {i} is {v!r}, not a {dtype} value.", field=name, row=i
            )
    try:
        return np.array(flat, dtype=_NUMPY[dtype])
    except (OverflowError, ValueError):
        raise _bad(f"The input {name!r} has values out of range for {dtype}.", field=name) from None


def _flatten(data: Any, name: str) -> list[Any]:
    if not isinstance(data, list):
        raise _bad(f"The input {name!r} data must be an array.", field=name)
    if not any(isinstance(v, list) for v in data):
        return data
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for v in stack[-1]:
            if isinstance(v, list):
                if len(stack) >= MAX_DEPTH:
                    raise _bad(
                        f"The input {name!r} data is nested deeper than {MAX_DEPTH} lists; send "
                        "it flat, in row-major order.",
                        field=name,
                    )
                stack.append(iter(v))
                break
            out.append(v)
        else:
            stack.pop()
    return out


def _text(value: Any, name: str, i: int) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode()
        except UnicodeDecodeError:
            raise _bad(f"The input {name!r} value {i} is not UTF-8.", field=name, row=i) from None
    raise _bad(f"The BYTES input {name!r} value {i} is not a string.", field=name, row=i)


def _columns(tensors: dict[str, np.ndarray], served: Served, max_rows: int) -> list[list[Any]]:
    names = served.names
    if len(tensors) == 1 and len(names) > 1:
        ((tname, array),) = tensors.items()
        if array.dtype == object or array.size % len(names):
            raise _bad(
                f"One input tensor ({tname!r}) must hold {len(names)} numbers per row; "
                f"or send one tensor per field: {', '.join(names)}.",
                field=tname,
            )
        matrix = array.reshape(-1, len(names))
        _check_rows(matrix.shape[0], max_rows)
        return [matrix[:, j].tolist() for j in range(len(names))]
    extra = [t for t in tensors if t not in names]
    if extra:
        raise _bad(
            f"The input {extra[0]!r} is not in the model's signature; the inputs are "
            f"{', '.join(names)}.",
            field=extra[0],
        )
    missing = [n for n in names if n not in tensors]
    if missing:
        raise _bad(f"The input {missing[0]!r} is missing.", field=missing[0])
    rows = tensors[names[0]].size
    for n in names[1:]:
        if tensors[n].size != rows:
            raise _bad(
                f"The input {n!r} holds {tensors[n].size} values but {names[0]!r} holds {rows}; "
                "every input tensor must hold one value per row.",
                field=n,
            )
    _check_rows(rows, max_rows)
    return [tensors[n].reshape(-1).tolist() for n in names]


def _check_rows(n: int, max_rows: int) -> None:
    if n == 0:
        raise _bad("The input tensors hold no rows.")
    if n > max_rows:
        raise HttpError(
            413, "too_many_rows", f"Got {n} rows; at most {max_rows} per request.", row=max_rows
        )


def encode_response(
    served: Served,
    prediction: Prediction,
    request: dict[str, Any],
    request_id: str,
    wanted: dict[str, bool],
) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The infer response body and its extra headers (binary or JSON outputs as asked)."""
    values = np.asarray(prediction.values)
    outputs: list[tuple[str, np.ndarray, str]] = [("predictions", values, _label_type(served))]
    if prediction.probabilities is not None:
        outputs.append(("probabilities", np.asarray(prediction.probabilities), "FP64"))
    body: dict[str, Any] = {
        "model_name": served.model,
        "model_version": str(served.version),
        "id": request.get("id") if isinstance(request.get("id"), str) else request_id,
        "outputs": [],
    }
    chunks: list[bytes] = []
    for name, array, dtype in outputs:
        if name not in wanted:
            continue
        spec: dict[str, Any] = {"name": name, "datatype": dtype, "shape": list(array.shape)}
        if wanted[name]:
            raw = _to_binary(array, dtype)
            spec["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            spec["data"] = (
                [str(v) for v in array.reshape(-1)]
                if dtype == "BYTES"
                else (array.reshape(-1).tolist())
            )
        body["outputs"].append(spec)
    head = orjson.dumps(body)
    if not chunks:
        return head, [(b"content-type", b"application/json")]
    headers = [
        (b"content-type", b"application/octet-stream"),
        (b"inference-header-content-length", str(len(head)).encode()),
    ]
    return head + b"".join(chunks), headers


def _to_binary(array: np.ndarray, dtype: str) -> bytes:
    if dtype == "BYTES":
        parts = []
        for v in array.reshape(-1):
            data = str(v).encode()
            parts.append(len(data).to_bytes(4, "little") + data)
        return b"".join(parts)
    return np.ascontiguousarray(array, dtype=np.dtype(_NUMPY[dtype]).newbyteorder("<")).tobytes()
