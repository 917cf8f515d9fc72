"""The gateway's one table of endpoints: the dispatcher routes by it, ``/docs`` and
``/openapi.json`` are generated from it, so an endpoint cannot exist without being documented.

A ``Route`` names its method, its path pattern (``{model}``, ``{version}`` and ``{file}`` are
path parameters; a segment may end in a literal verb, ``{model}:predict`` as TensorFlow Serving
spells it), the ``Gateway`` method that answers it, whether it needs the admin token, the
schemas of its body and of its answer (names under ``#/components/schemas`` in the OpenAPI
document; ``{Model}`` stands for the model's schema key), the error statuses it can answer and
the protocol whose error shape it answers with (``conveyor``: the JSON API's pinned shape;
``v2``, ``mlflow``, ``tfserving``: each protocol's own, as its clients expect).

``RouteTable.match`` finds a path without a regex: fixed paths by one dict lookup, pattern
paths by their segments (patterns with a verb first); fixed paths and the pattern matches seen
(bounded) are kept by their exact path, so ``/healthz`` and a model's predict path cost one
dict lookup.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["CALLER_ROLES", "PINNED", "PROTOCOLS", "ROUTES", "Route", "RouteTable"]

# Roles a predict request may declare (X-Conveyor-Role, with the admin token), and the role of
# a request pinned to a version: each is logged under its own role, so neither a release's
# analysis (which reads "serve" and "shadow") nor the monitor (which reads "serve") counts them.
CALLER_ROLES: Final = ("smoke", "test")
PINNED: Final = "pinned"

PROTOCOLS: Final = ("conveyor", "v2", "mlflow", "tfserving")

_MAX_CACHED = 4096  # remembered pattern matches; model names come from clients, so bounded


@dataclass(frozen=True, slots=True)
class Route:
    """One endpoint: what answers it and what ``/openapi.json`` says about it."""

    method: str
    path: str
    handler: str
    summary: str
    auth: bool = False
    request: str | None = None
    response: str | None = None
    errors: tuple[int, ...] = ()
    media: str = "application/json"
    head: bool = False  # also answers HEAD (probes), not listed as its own operation
    protocol: str = "conveyor"  # whose error shape it answers with (PROTOCOLS)

    @property
    def params(self) -> tuple[str, ...]:
        """The path parameters, in order (``model``, ``version``)."""
        return tuple(
            p[1 : p.index("}")] for p in self.path.strip("/").split("/") if p.startswith("{")
        )

    @property
    def per_model(self) -> bool:
        """Whether the document lists this route once per served model."""
        return "{model}" in self.path


_MODEL_ERRORS = (404, 503)  # no such model or environment; not loaded yet
_ADMIN_ERRORS = (401, 403)

ROUTES: Final[tuple[Route, ...]] = (
    # -- the JSON API ----------------------------------------------------------------------
    Route(
        "POST",
        "/v1/models/{model}/predict",
        "_predict",
        "Predict with {model}",
        request="{Model}Request",
        response="{Model}Response",
        errors=(400, 401, 403, 404, 413, 422, 500, 503),
    ),
    Route(
        "GET",
        "/v1/models/{model}",
        "_describe_route",
        "What {model} serves in each environment, and its signature",
        response="Model",
        errors=_MODEL_ERRORS,
    ),
    Route(
        "GET",
        "/v1/models/{model}/versions",
        "_versions_route",
        "Loaded versions of {model} and how each environment splits its traffic",
        response="Versions",
        errors=_MODEL_ERRORS,
    ),
    Route(
        "GET",
        "/v1/models",
        "_models_route",
        "Models and the version each environment serves",
        response="ModelList",
    ),
    Route(
        "POST",
        "/v1/feedback",
        "_feedback",
        "Ground-truth labels for logged requests",
        auth=True,
        request="Feedback",
        response="Stored",
        errors=(400, *_ADMIN_ERRORS, 413, 422),
    ),
    Route(
        "GET",
        "/v1/status",
        "_status_route",
        "What this gateway holds: routes, loaded versions, failures, the log and the watcher",
        auth=True,
        response="Status",
        errors=_ADMIN_ERRORS,
    ),
    Route(
        "POST",
        "/v1/admin/reload",
        "_reload_route",
        "Read the store now instead of at the next poll",
        auth=True,
        response="Reloading",
        errors=_ADMIN_ERRORS,
    ),
    # -- probes and descriptions -----------------------------------------------------------
    Route(
        "GET", "/healthz", "_healthz", "Liveness: the process answers", response="Health", head=True
    ),
    Route(
        "GET",
        "/readyz",
        "_readyz",
        "Readiness: every routed version is loaded",
        response="Ready",
        errors=(503,),
        head=True,
    ),
    Route(
        "GET",
        "/metrics",
        "_metrics",
        "Prometheus metrics of every worker",
        media="text/plain",
    ),
    Route("GET", "/openapi.json", "_openapi_route", "This document", response="OpenAPI"),
    Route(
        "GET",
        "/docs",
        "_docs",
        "Interactive docs of this document (Swagger UI, no CDN); the plain list without JavaScript",
        media="text/html",
    ),
    # -- the Open Inference Protocol (KServe v2) -------------------------------------------
    Route(
        "GET",
        "/v2",
        "_v2_server",
        "Open Inference Protocol server metadata",
        response="V2Server",
        protocol="v2",
    ),
    Route(
        "GET",
        "/v2/health/live",
        "_v2_live",
        "Open Inference Protocol liveness",
        response="V2Live",
        head=True,
        protocol="v2",
    ),
    Route(
        "GET",
        "/v2/health/ready",
        "_v2_ready",
        "Open Inference Protocol readiness (400 until every routed version is loaded)",
        response="V2Ready",
        errors=(400,),
        head=True,
        protocol="v2",
    ),
    Route(
        "GET",
        "/v2/models/{model}",
        "_v2_metadata",
        "The tensors {model} takes and gives (Open Inference Protocol)",
        response="V2Metadata",
        errors=_MODEL_ERRORS,
        protocol="v2",
    ),
    Route(
        "GET",
        "/v2/models/{model}/ready",
        "_v2_model_ready",
        "Whether {model} is ready (Open Inference Protocol)",
        response="V2ModelReady",
        errors=(400, 404),
        head=True,
        protocol="v2",
    ),
    Route(
        "POST",
        "/v2/models/{model}/infer",
        "_v2_infer",
        "Infer with {model} (Open Inference Protocol)",
        request="V2InferRequest",
        response="V2InferResponse",
        errors=(400, 404, 413, 422, 500, 503),
        protocol="v2",
    ),
    Route(
        "GET",
        "/v2/models/{model}/versions/{version}",
        "_v2_metadata",
        "The tensors one served version of {model} takes and gives",
        response="V2Metadata",
        errors=_MODEL_ERRORS,
        protocol="v2",
    ),
    Route(
        "GET",
        "/v2/models/{model}/versions/{version}/ready",
        "_v2_model_ready",
        "Whether one served version of {model} is ready",
        response="V2ModelReady",
        errors=(400, 404),
        head=True,
        protocol="v2",
    ),
    Route(
        "POST",
        "/v2/models/{model}/versions/{version}/infer",
        "_v2_infer",
        "Infer with one served version of {model} (logged as pinned, not as the environment's)",
        request="V2InferRequest",
        response="V2InferResponse",
        errors=(400, 404, 413, 422, 500, 503),
        protocol="v2",
    ),
    # -- MLflow's scoring server -----------------------------------------------------------
    Route(
        "POST",
        "/invocations",
        "_mlflow_invocations",
        "Predict in MLflow's scoring format (dataframe_split, dataframe_records, instances, "
        "inputs); the project's single model's default environment, or ?model= and ?env=",
        request="MlflowScoringBody",
        response="MlflowPredictions",
        errors=(400, 401, 403, 404, 413, 415, 500, 503),
        protocol="mlflow",
    ),
    Route(
        "GET",
        "/ping",
        "_mlflow_ping",
        "MLflow's health check: 200 once /invocations has a loaded model",
        errors=(400, 404, 503),
        media="text/plain",
        head=True,
        protocol="mlflow",
    ),
    Route(
        "GET",
        "/health",
        "_mlflow_ping",
        "MLflow's health check (as /ping)",
        errors=(400, 404, 503),
        media="text/plain",
        head=True,
        protocol="mlflow",
    ),
    # -- TensorFlow Serving's REST API -----------------------------------------------------
    Route(
        "POST",
        "/v1/models/{model}:predict",
        "_tf_predict",
        "Predict with {model} in TensorFlow Serving's format (instances or inputs)",
        request="TfPredictBody",
        response="TfPredictions",
        errors=(400, 401, 403, 404, 413, 500, 503),
        protocol="tfserving",
    ),
    Route(
        "POST",
        "/v1/models/{model}/versions/{version}:predict",
        "_tf_predict",
        "Predict with one loaded version of {model} in TensorFlow Serving's format (pinned)",
        auth=True,
        request="TfPredictBody",
        response="TfPredictions",
        errors=(400, 401, 403, 404, 413, 500, 503),
        protocol="tfserving",
    ),
    # -- the interactive docs' files -------------------------------------------------------
    Route(
        "GET",
        "/docs/static/{file}",
        "_docs_static",
        "The Swagger UI files /docs loads (served from the installed package, never a CDN)",
        errors=(404,),
        media="application/octet-stream",
    ),
)

Methods = dict[str, Route]
Params = dict[str, str]
# A pattern's segments: (literal, verb); a parameter has literal None and may end in a verb.
_Segment = tuple[str | None, str]
_Pattern = tuple[tuple[_Segment, ...], tuple[str, ...], Methods]


def _segment(part: str) -> _Segment:
    if part.startswith("{"):
        return None, part[part.index("}") + 1 :]
    return part, ""


class RouteTable:
    """Finds the routes of a path: ``match`` returns ``(routes by method, path parameters)``."""

    def __init__(self, routes: tuple[Route, ...] = ROUTES) -> None:
        self.routes = routes
        self._fixed: dict[str, Methods] = {}
        patterns: dict[str, _Pattern] = {}
        for route in routes:
            key = route.path.strip("/")
            if not route.params:
                methods = self._fixed.setdefault(key, {})
            else:
                if key not in patterns:
                    parts = tuple(_segment(p) for p in key.split("/"))
                    patterns[key] = (parts, route.params, {})
                methods = patterns[key][2]
            if route.method in methods:
                raise ValueError(f"Two routes for {route.method} {route.path}.")
            methods[route.method] = route
            if route.head:
                methods["HEAD"] = route
        self._by_length: dict[int, list[_Pattern]] = {}
        # A parameter ending in a verb first: "num:predict" is TensorFlow Serving's predict,
        # not a model named "num:predict".
        ordered = sorted(patterns.values(), key=lambda p: -sum(bool(v) for _l, v in p[0]))
        for pattern in ordered:
            self._by_length.setdefault(len(pattern[0]), []).append(pattern)
        # Exact paths as clients send them: the fixed routes always, pattern matches as seen.
        self._seed: dict[str, tuple[Methods, Params]] = {
            "/" + key: (methods, {}) for key, methods in self._fixed.items()
        }
        self._cache: dict[str, tuple[Methods, Params]] = dict(self._seed)

    def match(self, path: str) -> tuple[Methods, Params] | None:
        """The routes answering ``path`` (by method) and its parameters; None: no endpoint."""
        cached = self._cache.get(path)
        if cached is not None:
            return cached
        key = path.strip("/")
        fixed = self._fixed.get(key)
        if fixed is not None:
            return fixed, {}
        parts = key.split("/")
        for literals, names, methods in self._by_length.get(len(parts), ()):
            values = []
            for (want, verb), got in zip(literals, parts, strict=True):
                if want is None:
                    if verb:
                        if not got.endswith(verb):
                            break
                        got = got[: -len(verb)]
                    if not got:
                        break
                    values.append(got)
                elif want != got:
                    break
            else:
                found = (methods, dict(zip(names, values, strict=True)))
                if len(self._cache) >= _MAX_CACHED:
                    self._cache = dict(self._seed)
                self._cache[path] = found
                return found
        return None
