"""The gateway's OpenAPI 3.1 document, generated from the signatures of the models it serves.

Each served model gets its own predict path with its fields spelled out (types, nullability,
known categories), so generated clients, the docs page and fuzzers (schemathesis) all see the
real contract rather than "any JSON".
"""

from __future__ import annotations

import html
from typing import Any

__all__ = ["openapi_document", "docs_page"]

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
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
    },
}
_ERR_REF = {"$ref": "#/components/schemas/Error"}
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


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "Malformed request (not JSON, wrong shape).",
        401: "Missing or wrong bearer token.",
        403: "Admin endpoints are disabled (no token configured).",
        404: "No such model or environment.",
        405: "Method not allowed.",
        413: "Body or row count over the limit.",
        415: "Unsupported content type.",
        422: "Rows do not fit the model's signature; field and row say where.",
        500: "Prediction failed inside the model.",
        503: "Overloaded (Retry-After) or the model is not loaded yet.",
    }
    return {
        str(c): {"description": text[c], "content": {"application/json": {"schema": _ERR_REF}}}
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


def openapi_document(
    models: dict[str, tuple[dict[str, Any], list[str]]],
    *,
    max_rows: int,
    title: str = "Conveyor gateway",
) -> dict[str, Any]:
    """The document for ``{model: (signature, environments)}``."""
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {"Error": _ERROR}
    for name, (signature, envs) in sorted(models.items()):
        env_schema = {"type": "string", "enum": sorted(envs)}
        parts = _predict_schemas(name, signature, max_rows)
        key = _schema_key(name)
        schemas[f"{key}Request"] = parts["request"]
        schemas[f"{key}Response"] = parts["response"]
        paths[f"/v1/models/{name}/predict"] = {
            "post": {
                "summary": f"Predict with {name}",
                "operationId": f"predict_{key}",
                "parameters": [
                    {"name": "env", "in": "query", "required": False, "schema": env_schema},
                    {
                        "name": "x-conveyor-env",
                        "in": "header",
                        "required": False,
                        "schema": env_schema,
                        "description": "The environment to ask (as ?env=, which wins).",
                    },
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"$ref": f"#/components/schemas/{key}Request"}
                        }
                    },
                },
                "responses": {
                    "200": {
                        "description": "Predictions, one per row.",
                        "headers": {"x-request-id": {"schema": {"type": "string"}}},
                        "content": {
                            "application/json": {
                                "schema": {"$ref": f"#/components/schemas/{key}Response"}
                            }
                        },
                    },
                    **_errors(400, 404, 413, 422, 500, 503),
                },
            }
        }
        paths[f"/v1/models/{name}"] = {
            "get": {
                "summary": f"What {name} serves in each environment, and its signature",
                "operationId": f"describe_{key}",
                "responses": {
                    "200": {"description": "The model.", "content": _json_object()},
                    **_errors(404),
                },
            }
        }
    paths["/v1/models"] = {
        "get": {
            "summary": "Models and the version each environment serves",
            "operationId": "list_models",
            "responses": {"200": {"description": "Models.", "content": _json_object()}},
        }
    }
    paths["/v1/feedback"] = {
        "post": {
            "summary": "Ground-truth labels for logged requests",
            "operationId": "feedback",
            "security": [{"bearer": []}],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _FEEDBACK}},
            },
            "responses": {
                "200": {"description": "Stored.", "content": _json_object()},
                **_errors(400, 401, 403, 413, 422),
            },
        }
    }
    for path, summary in (
        ("/healthz", "Liveness: the process answers"),
        ("/readyz", "Readiness: every routed version is loaded"),
        ("/v2/health/live", "Open Inference Protocol liveness"),
        ("/v2/health/ready", "Open Inference Protocol readiness"),
    ):
        paths[path] = {
            "get": {
                "summary": summary,
                "operationId": path.strip("/").replace("/", "_"),
                "responses": {
                    "200": {"description": "Yes.", "content": _json_object()},
                    **_errors(503),
                },
            }
        }
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": "1"},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _json_object() -> dict[str, Any]:
    return {"application/json": {"schema": {"type": "object"}}}


def _schema_key(name: str) -> str:
    return "".join(part.capitalize() for part in name.replace("_", "-").split("-")) or "Model"


def docs_page(document: dict[str, Any]) -> str:
    """A self-contained HTML page listing the endpoints and each model's fields."""
    rows = []
    for path, ops in document["paths"].items():
        for method, op in ops.items():
            rows.append(
                f"<tr><td><code>{method.upper()}</code></td><td><code>{html.escape(path)}"
                f"</code></td><td>{html.escape(op.get('summary', ''))}</td></tr>"
            )
    fields = []
    for key, schema in document["components"]["schemas"].items():
        if not key.endswith("Request"):
            continue
        record = schema["properties"]["instances"]["oneOf"][0]["items"]
        items = "".join(
            f"<li><code>{html.escape(n)}</code>: {html.escape(_describe(s))}</li>"
            for n, s in record["properties"].items()
        )
        fields.append(f"<h3>{html.escape(key[:-7])}</h3><ul>{items}</ul>")
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Conveyor gateway</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto}"
        "td{padding:.2rem .6rem;border-bottom:1px solid #ddd}</style></head><body>"
        "<h1>Conveyor gateway</h1><p>Machine-readable: <a href='/openapi.json'>/openapi.json"
        "</a></p><table>"
        + "".join(rows)
        + "</table><h2>Model inputs</h2>"
        + "".join(fields)
        + "</body></html>"
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
