"""The gateway's OpenAPI 3.1 document, built from the route table and the served signatures.

Every endpoint comes from ``gateway/routes.py`` (the table the dispatcher routes by), so the
document lists all of them. Each served model gets its own paths with its fields spelled out
(types, nullability, known categories, the environments and versions it can be asked for), so
generated clients, the docs page and fuzzers (schemathesis) all see the real contract rather
than "any JSON".
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from conveyor.gateway import swagger
from conveyor.gateway.routes import CALLER_ROLES, ROUTES, Route

__all__ = ["ModelDoc", "docs_body", "docs_page", "openapi_document"]

_ERROR_OBJECT = {
    "type": "object",
    "required": ["status", "code", "message", "field", "row", "request_id"],
    "properties": {
        "status": {"type": "integer"},
        "code": {"type": "string"},
        "message": {"type": "string"},
        "field": {"type": ["string", "null"]},
        "row": {"type": ["integer", "null"]},
        "request_id": {"type": "string"},
    },
}
_ERROR = {"type": "object", "required": ["error"], "properties": {"error": _ERROR_OBJECT}}
_LABEL = {"type": ["string", "number", "boolean"]}
_LABELS = {
    "type": "object",
    "required": ["request_id"],
    "additionalProperties": False,
    "properties": {
        "request_id": {"type": "string", "minLength": 1, "maxLength": 40},
        "label": _LABEL,
        "labels": {"type": "array", "minItems": 1, "items": _LABEL},
    },
    "oneOf": [{"required": ["label"]}, {"required": ["labels"]}],
}
_FEEDBACK = {
    "oneOf": [
        _LABELS,
        {
            "type": "object",
            "required": ["feedback"],
            "additionalProperties": False,
            "properties": {
                "feedback": {"type": "array", "minItems": 1, "maxItems": 10_000, "items": _LABELS}
            },
        },
    ]
}
_VERSION_OR_NULL = {"type": ["integer", "null"]}
_MODEL = {
    "type": "object",
    "required": ["name", "environments", "signature"],
    "properties": {
        "name": {"type": "string"},
        "environments": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": ["version", "runtime"],
                "properties": {"version": {"type": "integer"}, "runtime": {"type": "string"}},
            },
        },
        "signature": {"type": ["object", "null"]},
    },
}
_TENSOR_SPEC = {
    "type": "object",
    "required": ["name", "datatype", "shape"],
    "properties": {
        "name": {"type": "string"},
        "datatype": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}},
    },
}
_DATATYPES = [
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BYTES",
]
# What the gateway itself checks of a v2 request; the tensors' names, sizes and values are
# checked against the model's signature (GET /v2/models/{model} lists them).
_V2_INFER = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "inputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "shape", "datatype"],
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "shape": {
                        "type": "array",
                        "minItems": 1,
                        "items": {"type": "integer", "minimum": 0},
                    },
                    "datatype": {"enum": _DATATYPES},
                    "parameters": {"type": "object"},
                    "data": {},
                },
            },
        },
        "outputs": {"type": "array"},
        "parameters": {"type": "object"},
    },
}
_MESSAGE = {"type": "string"}
# Each protocol's own error shape (errors.protocol_error).
_PROTOCOL_ERRORS: dict[str, dict[str, Any]] = {
    "v2": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": _MESSAGE, "details": _ERROR_OBJECT},
    },
    "mlflow": {
        "type": "object",
        "required": ["error_code", "message"],
        "properties": {"error_code": {"type": "string"}, "message": _MESSAGE},
    },
    "tfserving": {"type": "object", "required": ["error"], "properties": {"error": _MESSAGE}},
}
_ERROR_SCHEMA = {
    "conveyor": "Error",
    "v2": "V2Error",
    "mlflow": "MlflowError",
    "tfserving": "TfError",
}
_ROWS = {"type": "array", "description": "Records keyed by field, or arrays in signature order."}
_COLUMNS = {
    "oneOf": [
        {"type": "object", "additionalProperties": {"type": "array"}, "minProperties": 1},
        _ROWS,
    ],
    "description": "Columns keyed by field (one value per row), or rows.",
}
_SCHEMAS: dict[str, Any] = {
    "Error": _ERROR,
    "V2Error": _PROTOCOL_ERRORS["v2"],
    "MlflowError": _PROTOCOL_ERRORS["mlflow"],
    "TfError": _PROTOCOL_ERRORS["tfserving"],
    "MlflowScoringBody": {
        "type": "object",
        "properties": {
            "dataframe_split": {
                "type": "object",
                "required": ["data"],
                "additionalProperties": False,
                "properties": {
                    "columns": {"type": "array", "items": {"type": "string"}},
                    "data": {"type": "array", "items": {"type": "array"}},
                    "index": {"type": "array"},
                },
            },
            "dataframe_records": {"type": "array", "items": {"type": "object"}},
            "instances": _COLUMNS,
            "inputs": _COLUMNS,
            "params": {"type": "object"},
        },
        "additionalProperties": False,
        "oneOf": [
            {"required": ["dataframe_split"]},
            {"required": ["dataframe_records"]},
            {"required": ["instances"]},
            {"required": ["inputs"]},
        ],
    },
    "MlflowPredictions": {
        "type": "object",
        "required": ["predictions"],
        "properties": {"predictions": {"type": "array"}},
    },
    "TfPredictBody": {
        "type": "object",
        "properties": {
            "signature_name": {"const": "serving_default"},
            "instances": _ROWS,
            "inputs": _COLUMNS,
        },
        "additionalProperties": False,
        "oneOf": [{"required": ["instances"]}, {"required": ["inputs"]}],
    },
    "TfPredictions": {
        "type": "object",
        "description": "predictions for a request of rows (instances), outputs for columns "
        "(inputs); a classifier's two outputs as an object per row, or one object of both.",
        "properties": {"predictions": {"type": "array"}, "outputs": {}},
    },
    "Feedback": _FEEDBACK,
    "Stored": {
        "type": "object",
        "required": ["stored"],
        "properties": {"stored": {"type": "integer"}},
    },
    "Health": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"const": "ok"}},
    },
    "Ready": {
        "type": "object",
        "required": ["ready", "routes"],
        "properties": {
            "ready": {"const": True},
            "routes": {"type": "object", "additionalProperties": {"type": "integer"}},
        },
    },
    "Model": _MODEL,
    "ModelList": {
        "type": "object",
        "required": ["models"],
        "properties": {"models": {"type": "array", "items": _MODEL}},
    },
    "Versions": {
        "type": "object",
        "required": ["name", "loaded", "environments"],
        "properties": {
            "name": {"type": "string"},
            "loaded": {"type": "array", "items": {"type": "integer"}},
            "environments": {
                "type": "object",
                "additionalProperties": {
                    "type": "object",
                    "required": ["stable", "canary", "weight", "shadow"],
                    "properties": {
                        "stable": {"type": "integer"},
                        "canary": _VERSION_OR_NULL,
                        "weight": {"type": "number"},
                        "shadow": _VERSION_OR_NULL,
                    },
                },
            },
        },
    },
    "Status": {
        "type": "object",
        "required": ["gateway", "routes", "desired", "failed", "inflight"],
        "properties": {
            "gateway": {"type": "string"},
            "routes": {"type": "object"},
            "desired": {"type": "object"},
            "failed": {"type": "object"},
            "inflight": {"type": "integer"},
            "request_log": {"type": ["object", "null"]},
            "watcher": {"type": ["object", "null"]},
        },
    },
    "Reloading": {
        "type": "object",
        "required": ["reloading"],
        "properties": {"reloading": {"const": True}},
    },
    "OpenAPI": {
        "type": "object",
        "required": ["openapi", "info", "paths"],
        "properties": {"openapi": {"type": "string"}},
    },
    "V2Server": {
        "type": "object",
        "required": ["name", "version", "extensions"],
        "properties": {
            "name": {"type": "string"},
            "version": {"type": "string"},
            "extensions": {"type": "array", "items": {"type": "string"}},
        },
    },
    "V2Live": {
        "type": "object",
        "required": ["live"],
        "properties": {"live": {"const": True}},
    },
    "V2Ready": {
        "type": "object",
        "required": ["ready"],
        "properties": {"ready": {"const": True}},
    },
    "V2ModelReady": {
        "type": "object",
        "required": ["name", "ready"],
        "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}},
    },
    "V2Metadata": {
        "type": "object",
        "required": ["name", "versions", "platform", "inputs", "outputs"],
        "properties": {
            "name": {"type": "string"},
            "versions": {"type": "array", "items": {"type": "string"}},
            "platform": {"type": "string"},
            "inputs": {"type": "array", "items": _TENSOR_SPEC},
            "outputs": {"type": "array", "items": _TENSOR_SPEC},
        },
    },
    "V2InferRequest": _V2_INFER,
    "V2InferResponse": {
        "type": "object",
        "required": ["model_name", "model_version", "outputs"],
        "properties": {
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "id": {"type": "string"},
            "outputs": {"type": "array", "items": _TENSOR_SPEC},
        },
    },
}
_ERROR_TEXT = {
    400: "Malformed request (not JSON, wrong shape, a bad parameter).",
    401: "Missing or wrong bearer token.",
    403: "This needs the admin token and the gateway has none configured.",
    404: "No such model, environment or version.",
    405: "Method not allowed.",
    413: "Body or row count over the limit.",
    415: "Unsupported content type.",
    422: "Rows do not fit the model's signature; field and row say where.",
    500: "Prediction failed inside the model.",
    503: "Overloaded (Retry-After) or the model is not loaded yet.",
}
_PLAIN = {"text/plain", "text/html", "application/octet-stream"}
# The predict routes a caller may pin (?version=) or mark (X-Conveyor-Role) with the token.
_PREDICTS = ("_predict", "_tf_predict", "_mlflow_invocations")


@dataclass(frozen=True)
class ModelDoc:
    """What the document says about one served model."""

    signature: dict[str, Any]
    environments: list[str]
    loaded: list[int] = field(default_factory=list)  # versions a request may pin (?version=)
    served: list[int] = field(default_factory=list)  # versions an environment serves (v2 paths)


def _errors(codes: tuple[int, ...], protocol: str = "conveyor") -> dict[str, Any]:
    ref = {"$ref": "#/components/schemas/" + _ERROR_SCHEMA[protocol]}
    return {
        str(c): {"description": _ERROR_TEXT[c], "content": {"application/json": {"schema": ref}}}
        for c in codes
    }


def _field_schema(field: dict[str, Any]) -> dict[str, Any]:
    kind = field["type"]
    if kind in ("number", "integer"):
        schema: dict[str, Any] = {"type": kind}
    elif kind == "boolean":
        schema = {"type": "boolean"}
    elif kind == "datetime":
        schema = {"type": "string", "format": "date-time"}
    else:
        schema = {"type": "string"}
        if field.get("categories"):
            schema["examples"] = list(field["categories"])[:10]
    if field.get("nullable"):
        schema = {"anyOf": [schema, {"type": "null"}]}
    return schema


def _predict_schemas(name: str, signature: dict[str, Any], max_rows: int) -> dict[str, Any]:
    fields = signature["inputs"]
    record = {
        "type": "object",
        "required": [f["name"] for f in fields],
        "additionalProperties": False,
        "properties": {f["name"]: _field_schema(f) for f in fields},
    }
    array = {
        "type": "array",
        "prefixItems": [_field_schema(f) for f in fields],
        "minItems": len(fields),
        "maxItems": len(fields),
        "description": "Values in signature order: " + ", ".join(f["name"] for f in fields),
    }
    output = signature.get("output", {})
    response: dict[str, Any] = {
        "type": "object",
        "required": ["model", "version", "environment", "request_id", "predictions"],
        "properties": {
            "model": {"type": "string", "const": name},
            "version": {"type": "integer"},
            "environment": {"type": "string"},
            "request_id": {"type": "string"},
            "predictions": {"type": "array"},
            "probabilities": {
                "type": ["array", "null"],
                "items": {"type": "array", "items": {"type": "number"}},
            },
        },
    }
    if output.get("classes") is not None:
        response["properties"]["classes"] = {"type": "array"}
    # One request is all records or all arrays: the gateway reads the first row to decide.
    rows = [
        {"type": "array", "minItems": 1, "maxItems": max_rows, "items": item}
        for item in (record, array)
    ]
    request = {
        "type": "object",
        "required": ["instances"],
        "additionalProperties": False,
        "properties": {"instances": {"oneOf": rows}},
    }
    return {"request": request, "response": response}


def _env_parameters(envs: list[str] | None) -> list[dict[str, Any]]:
    schema: dict[str, Any] = {"type": "string"}
    if envs:
        schema["enum"] = sorted(envs)
    return [
        {"name": "env", "in": "query", "required": False, "schema": schema},
        {
            "name": "x-conveyor-env",
            "in": "header",
            "required": False,
            "schema": schema,
            "description": "The environment to ask (as ?env=, which wins).",
        },
    ]


def _pin_parameters(loaded: list[int] | None) -> list[dict[str, Any]]:
    version: dict[str, Any] = {"type": "integer", "minimum": 1}
    if loaded:
        version = {"type": "integer", "enum": sorted(loaded)}
    token = " Needs the admin token (Authorization: Bearer ...)."
    return [
        {
            "name": "version",
            "in": "query",
            "required": False,
            "schema": version,
            "description": "Pin a loaded version; logged as 'pinned', not as the "
            "environment's traffic." + token,
        },
        {
            "name": "x-conveyor-role",
            "in": "header",
            "required": False,
            "schema": {"type": "string", "enum": list(CALLER_ROLES)},
            "description": "Mark a smoke or test request: logged under that role, never "
            "counted by a release's analysis or the monitor." + token,
        },
        {
            "name": "x-conveyor-key",
            "in": "header",
            "required": False,
            "schema": {"type": "string"},
            "description": "The caller's key for a sticky canary (the same key, the same version).",
        },
    ]


def _operation(
    route: Route, model: str | None, doc: ModelDoc | None, schema_key: str
) -> dict[str, Any]:
    name = model if model is not None else "a model"
    path = route.path if model is None else route.path.replace("{model}", model)
    parameters: list[dict[str, Any]] = []
    if model is None and route.per_model:
        parameters.append(
            {"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}
        )
    if "{file}" in route.path:
        parameters.append(
            {
                "name": "file",
                "in": "path",
                "required": True,
                "schema": {"type": "string", "enum": sorted(swagger.FILES)},
            }
        )
    if route.handler == "_tf_predict" and "{version}" in route.path:
        loaded = doc.loaded if doc is not None else []
        pinned: dict[str, Any] = {"type": "integer", "minimum": 1}
        if loaded:
            pinned = {"type": "integer", "enum": sorted(loaded)}
        parameters.append({"name": "version", "in": "path", "required": True, "schema": pinned})
    elif "{version}" in route.path:
        served = doc.served if doc is not None else []
        version: dict[str, Any] = {"type": "integer", "minimum": 1}
        if served:
            version = {"type": "integer", "enum": sorted(served)}
        parameters.append({"name": "version", "in": "path", "required": True, "schema": version})
    elif (
        (route.per_model and route.path.startswith("/v2/"))
        or route.handler in _PREDICTS
        or route.handler == "_mlflow_ping"
    ):
        parameters.extend(_env_parameters(doc.environments if doc is not None else None))
    if route.handler in ("_mlflow_invocations", "_mlflow_ping"):
        parameters.append(
            {
                "name": "model",
                "in": "query",
                "required": False,
                "schema": {"type": "string"},
                "description": "The model to ask; needed only when the gateway serves several "
                "and the project names none (model: in conveyor.yaml).",
            }
        )
    if route.handler in _PREDICTS:
        parameters.extend(_pin_parameters(doc.loaded if doc is not None else None))
    operation: dict[str, Any] = {
        "summary": route.summary.replace("{model}", name),
        "operationId": "_".join(
            [route.method.lower(), *filter(None, path.strip("/").replace(".", "_").split("/"))]
        )
        .replace("{", "")
        .replace("}", ""),
    }
    if parameters:
        operation["parameters"] = parameters
    if route.auth:
        operation["security"] = [{"bearer": []}]
    elif route.handler in _PREDICTS:
        operation["security"] = [{}, {"bearer": []}]  # the token only to pin or mark a role
    if route.request is not None:
        ref = {"$ref": "#/components/schemas/" + route.request.replace("{Model}", schema_key)}
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": ref}},
        }
    if route.handler == "_docs_static":
        content: dict[str, Any] = {
            media.split(";")[0]: {"schema": {"type": "string"}} for media in swagger.FILES.values()
        }
    elif route.media in _PLAIN:
        content = {route.media: {"schema": {"type": "string"}}}
    else:
        response = route.response.replace("{Model}", schema_key) if route.response else None
        schema = {"$ref": f"#/components/schemas/{response}"} if response else {"type": "object"}
        content = {route.media: {"schema": schema}}
        if route.response == "V2InferResponse":  # binary outputs: the JSON header, then bytes
            content["application/octet-stream"] = {"schema": {"type": "string"}}
    ok = {
        "description": "Answered.",
        "headers": {"x-request-id": {"schema": {"type": "string"}}},
        "content": content,
    }
    operation["responses"] = {"200": ok, **_errors(route.errors, route.protocol)}
    return operation


def openapi_document(
    models: Mapping[str, ModelDoc],
    *,
    max_rows: int,
    routes: tuple[Route, ...] = ROUTES,
    title: str = "Conveyor gateway",
) -> dict[str, Any]:
    """The document for every route of ``routes``, the model routes once per served model.

    Args:
        models: the served models by name (their signatures, environments and versions).
        max_rows: the gateway's row limit per request.
        routes: the route table (the gateway's own by default).
        title: the document's title.
    """
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = dict(_SCHEMAS)
    for name, doc in sorted(models.items()):
        parts = _predict_schemas(name, doc.signature, max_rows)
        key = _schema_key(name)
        schemas[f"{key}Request"] = parts["request"]
        schemas[f"{key}Response"] = parts["response"]
    for route in routes:
        if route.per_model and models:
            for name, doc in sorted(models.items()):
                path = route.path.replace("{model}", name)
                op = _operation(route, name, doc, _schema_key(name))
                paths.setdefault(path, {})[route.method.lower()] = op
        else:
            op = _operation(route, None, None, "Model")
            paths.setdefault(route.path, {})[route.method.lower()] = op
    if not models:  # the predict routes' generic schemas, when nothing is served yet
        schemas["ModelRequest"] = {"type": "object", "required": ["instances"]}
        schemas["ModelResponse"] = {"type": "object"}
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": "1"},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _schema_key(name: str) -> str:
    return "".join(part.capitalize() for part in name.replace("_", "-").split("-")) or "Model"


def docs_page(document: dict[str, Any]) -> str:
    """The ``/docs`` page: Swagger UI over ``/openapi.json`` when its files are installed, with
    the plain list of endpoints and fields inside (shown without JavaScript); else that list."""
    body = docs_body(document)
    title = document["info"]["title"]
    if swagger.available():
        return swagger.page(title, body)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto}"
        "td{padding:.2rem .6rem;border-bottom:1px solid #ddd}</style></head><body>"
        + body
        + "</body></html>"
    )


def docs_body(document: dict[str, Any]) -> str:
    """The endpoints and each model's fields as plain HTML (no page around them)."""
    rows = []
    for path, ops in document["paths"].items():
        for method, op in ops.items():
            token = "admin token" if {"bearer": []} in op.get("security", [{}]) else ""
            if op.get("security") == [{}, {"bearer": []}]:
                token = "token to pin"
            rows.append(
                f"<tr><td><code>{method.upper()}</code></td><td><code>{html.escape(path)}"
                f"</code></td><td>{html.escape(op.get('summary', ''))}</td>"
                f"<td>{token}</td></tr>"
            )
    fields = []
    for key, schema in document["components"]["schemas"].items():
        if not key.endswith("Request") or key.startswith("V2") or key == "ModelRequest":
            continue
        record = schema["properties"]["instances"]["oneOf"][0]["items"]
        items = "".join(
            f"<li><code>{html.escape(n)}</code>: {html.escape(_describe(s))}</li>"
            for n, s in record["properties"].items()
        )
        fields.append(f"<h3>{html.escape(key[:-7])}</h3><ul>{items}</ul>")
    return (
        "<h1>Conveyor gateway</h1><p>Machine-readable: <a href='/openapi.json'>/openapi.json"
        "</a></p><table>" + "".join(rows) + "</table><h2>Model inputs</h2>" + "".join(fields)
    )


def _describe(schema: dict[str, Any]) -> str:
    if "anyOf" in schema:
        return _describe(schema["anyOf"][0]) + " or null"
    text = schema.get("type", "any")
    if schema.get("format"):
        text += f" ({schema['format']})"
    if schema.get("examples"):
        text += " e.g. " + ", ".join(map(str, schema["examples"][:5]))
    return str(text)
