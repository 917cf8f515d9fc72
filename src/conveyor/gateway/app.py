"""The gateway as an ASGI application: dispatch, limits, auth, and the predict hot path.

A plain ASGI callable rather than a framework: the predict path is on the budget of a few
hundred microseconds per request (one core, thousands of requests a second), and a generic
router, request objects and middleware cost as much as the model. Every endpoint is a row of
the one route table (``gateway/routes.py``), which ``/docs`` and ``/openapi.json`` are built
from too; a model's predict path is found by one dict lookup after its first request. The JSON
API's endpoints share one error shape; the protocols it speaks for other servers' clients (Open
Inference Protocol, MLflow's ``/invocations``, TensorFlow Serving's ``:predict``) answer errors
in their own (``gateway/errors.py``). Every predict format goes through the same path
(``_serve_rows``): admission, the signature check, canary routing, batching and the log.
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import itertools
import logging
import os
import secrets
import socket
import sys
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import orjson

from conveyor.exceptions import InvalidInput
from conveyor.gateway import mlflow_format, swagger, tfserving, v2
from conveyor.gateway.batching import Batcher
from conveyor.gateway.errors import HttpError, protocol_error
from conveyor.gateway.metrics import CONTENT_TYPE, GatewayMetrics
from conveyor.gateway.openapi import ModelDoc, docs_page, openapi_document
from conveyor.gateway.requestlog import RequestLog
from conveyor.gateway.routes import CALLER_ROLES, PINNED, ROUTES, Route, RouteTable
from conveyor.gateway.routing import Router, Watcher, read_desired
from conveyor.gateway.runtime import Prediction, Served, load_served

if TYPE_CHECKING:
    from conveyor.config import ProjectConfig
    from conveyor.registry.registry import Registry
    from conveyor.store.artifacts import ArtifactStore
    from conveyor.store.metadata import Store

__all__ = ["Gateway"]

log = logging.getLogger("conveyor.gateway")

_JSON = b"application/json"
_NUMPY = orjson.OPT_SERIALIZE_NUMPY
_MAX_FEEDBACK = 10_000
_PLATFORM = "conveyor_sklearn"
_SERVE = "serve"  # the role of the environment's own traffic: what analysis and monitor read

Answer = tuple[int, bytes, list[tuple[bytes, bytes]]]
# Reads a predict body into rows (records or arrays); answers a prediction as the format's body.
Parse = Callable[[bytes], Any]
Reply = Callable[[str, Served, str, str, Prediction, Any], bytes]


def _default(value: Any) -> Any:
    tolist = getattr(value, "tolist", None)
    if tolist is not None:
        return tolist()
    raise TypeError(f"cannot serialise a {type(value).__name__}")


class Gateway:
    """Serves the project's routed model versions; one instance per worker process."""

    def __init__(
        self, config: ProjectConfig, *, token: str | None = None, name: str | None = None
    ) -> None:
        serve = config.serve
        self.config = config
        self.project = config.project
        self.max_body = int(serve.max_body_mb * 1024 * 1024)
        self.max_rows = serve.max_rows
        self.max_queue = serve.max_queue
        self.default_env = serve.default_env
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.metrics = GatewayMetrics()
        self._token = token.encode() if token else None
        self._prefix = secrets.token_hex(4)
        self._ids = itertools.count(1)
        self.inflight = 0
        self._shadow_inflight = 0
        self._shadow_tasks: set[asyncio.Task] = set()
        self.router = Router(make_batcher=self._batcher, on_switch=self._switched)
        # opened by startup(), closed by shutdown()
        self.store: Store | None = None
        self.artifacts: ArtifactStore | None = None
        self.registry: Registry | None = None
        self.request_log: RequestLog | None = None
        self.watcher: Watcher | None = None
        self.started = False
        self._table = RouteTable(ROUTES)
        # Bound once: the dispatcher calls a route's handler without a getattr per request.
        self._handlers = {route.handler: getattr(self, route.handler) for route in ROUTES}

    # -- lifecycle -------------------------------------------------------------------------

    async def startup(self) -> None:
        """Open the stores, start the request log and the watcher (models load in the back)."""
        from threadpoolctl import threadpool_limits

        from conveyor.registry.registry import Registry
        from conveyor.store.artifacts import ArtifactStore
        from conveyor.store.metadata import Store
        from conveyor.store.predictionlog.layout import attach, log_url

        threadpool_limits(self.config.serve.threads)  # OpenMP/BLAS: one thread per worker
        # The request-log and watcher threads hand the interpreter back to the event loop after
        # 1 ms instead of 5: the difference shows in the p99 of every request.
        sys.setswitchinterval(0.001)
        store = self.store = Store(self.config.store_url()).open()
        attach(self.store, log_url(self.config.artifacts_url()))  # the request log's root
        # A model file that blocks on read (a FIFO, a hung mount) fails its load after the
        # timeout instead of freezing the watcher while /readyz still says ready.
        self.artifacts = ArtifactStore(
            self.config.artifacts_url(), read_timeout_s=self.config.serve.load_timeout_s
        ).open()
        self.registry = Registry(store, self.artifacts)
        logcfg = self.config.serve.log
        self.request_log = RequestLog(
            self.store,
            gateway=self.name,
            sample=logcfg.sample,
            flush_rows=logcfg.flush_rows,
            flush_seconds=logcfg.flush_seconds,
            max_buffer=logcfg.max_buffer,
            max_buffer_bytes=int(logcfg.max_buffer_mb * 1024 * 1024),
            max_input_bytes=logcfg.max_input_kb * 1024,
            max_output_bytes=logcfg.max_output_kb * 1024,
            client_error_inputs=logcfg.client_error_inputs,
            writer_priority=logcfg.writer_priority,
            error_log_seconds=logcfg.error_log_seconds,
            on_drop=lambda n: self.metrics.log_dropped.inc(n),
        )
        self.request_log.start()
        self.watcher = Watcher(
            router=self.router,
            loop=asyncio.get_running_loop(),
            read=lambda: read_desired(store, self.project),
            load=self._load,
            report_failure=self._load_failed,
            poll_seconds=self.config.serve.poll_seconds,
            stuck_after=self.config.serve.load_timeout_s,
        )
        self.watcher.start()
        self.started = True

    async def shutdown(self) -> None:
        """Stop following the store and flush the request log."""
        if self.watcher is not None:
            await asyncio.to_thread(self.watcher.stop)
        if self.request_log is not None:
            try:
                await asyncio.to_thread(self.request_log.close)
            except Exception as exc:
                log.error("request log: %d rows not written: %s", self.request_log.pending(), exc)
        if self.artifacts is not None:
            self.artifacts.close()
        if self.store is not None:
            self.store.close()

    async def wait_ready(self, timeout: float = 60.0) -> bool:
        """Wait until every routed environment has a loaded version (tests, the CLI)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.readiness()[0]:
                return True
            await asyncio.sleep(0.02)
        return False

    def readiness(self) -> tuple[bool, list[str]]:
        """The router's answer, and not ready while a load hangs longer than its timeout.

        A load that blocks outside an artifact read (whose timeout turns it into a failure the
        router reports) holds the watcher: nothing new is followed until it returns.
        """
        ready, missing = self.router.ready()
        stuck = self.watcher.stuck() if self.watcher is not None else []
        return ready and not stuck, [*stuck, *missing]

    def _opened(self) -> tuple[Store, Registry]:
        """The stores ``startup`` opened: the watcher, which loads and reports, starts after."""
        if self.store is None or self.registry is None:
            raise RuntimeError("The gateway's stores are not open: call startup() first.")
        return self.store, self.registry

    def _load(self, model: str, version: int) -> Served:
        served = load_served(
            self._opened()[1],
            model,
            version,
            allow_pickle=self.config.registry.allow_pickle,
            trusted_extra=tuple(self.config.model.trusted_types) if self.config.model else (),
            threads=self.config.serve.threads,
        )
        # Everything loaded so far lives as long as the process: moved out of the collector's
        # sight, a full collection no longer walks the model and its libraries (tens of ms).
        gc.collect()
        gc.freeze()
        return served

    def _load_failed(self, model: str, version: int, reason: str) -> None:
        self.metrics.load_failures.labels(model, str(version)).inc()
        try:
            store = self._opened()[0]
            with store.session() as s:
                store.add_event(
                    s,
                    "gateway.load_failed",
                    "model",
                    f"{model}:{version}",
                    {"model": model, "version": version, "gateway": self.name, "error": reason},
                )
        except Exception as exc:
            log.error("cannot record the load failure of %s v%d: %s", model, version, exc)

    def _batcher(self, served: Served) -> Batcher:
        batch = self.config.serve.batch
        self.metrics.loaded.labels(served.model, str(served.version), served.runtime).set(1)
        return Batcher(
            served,
            max_rows=batch.max_rows,
            max_delay_ms=batch.max_delay_ms,
            observe=self.metrics.batch_observer(served.model, served.version),
        )

    def _switched(self, model: str, env: str, version: int, before: int | None) -> None:
        self.metrics.routed.labels(model, env).set(version)
        was = f" (was {before})" if before is not None else ""
        log.info("%s@%s now served by version %d%s", model, env, version, was)

    # -- ASGI ------------------------------------------------------------------------------

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: dict, receive: Any, send: Any) -> None:
        start = time.perf_counter()
        rid = f"{self._prefix}{next(self._ids):x}"
        headers: list[tuple[bytes, bytes]]
        try:
            status, body, headers = await self._dispatch(scope, receive, rid, start)
        except HttpError as exc:
            status, body = protocol_error(
                exc.protocol or self._protocol(scope["path"]),
                exc.status,
                exc.code,
                exc.message,
                rid,
                field=exc.field,
                row=exc.row,
            )
            headers = [(b"content-type", _JSON), *exc.headers]
        except InvalidInput as exc:
            status, body = protocol_error(
                self._protocol(scope["path"]),
                422,
                "invalid_input",
                str(exc),
                rid,
                field=exc.field,
                row=exc.row,
            )
            headers = [(b"content-type", _JSON)]
        except _ClientGone:
            return
        except Exception as exc:
            log.error("request %s failed:\n%s", rid, traceback.format_exc())
            message = f"Internal error ({type(exc).__name__}); see the gateway log for {rid}."
            status, body = protocol_error(
                self._protocol(scope["path"]), 500, "internal", message, rid
            )
            headers = [(b"content-type", _JSON)]
        headers.append((b"content-length", str(len(body)).encode()))
        headers.append((b"x-request-id", rid.encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        # HEAD: the headers of the GET (its content-length too), no body.
        await send(
            {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body}
        )

    def _protocol(self, path: str) -> str:
        """Whose error shape a path answers with (only looked up for an error)."""
        found = self._table.match(path)
        if found is not None:
            return next(iter(found[0].values())).protocol
        return "v2" if path == "/v2" or path.startswith("/v2/") else "conveyor"

    async def _dispatch(self, scope: dict, receive: Any, rid: str, start: float) -> Answer:
        found = self._table.match(scope["path"])
        if found is None:
            path = scope["path"]
            raise HttpError(
                404,
                "not_found",
                f"No endpoint at {_shown(path)}; see /docs.",
                protocol="v2" if path == "/v2" or path.startswith("/v2/") else "conveyor",
            )
        methods, params = found
        route = methods.get(scope["method"])
        if route is None:
            raise _not_allowed(scope["method"], methods)
        if route.auth:
            self._authorize(scope)
        return await self._handlers[route.handler](scope, receive, rid, start, params)

    # -- the small endpoints (one handler per route; params are shared: read, never write) --

    async def _healthz(
        self, scope: dict, receive: Any, rid: str, start: float, params: dict
    ) -> Answer:
        return 200, b'{"status":"ok"}', [(b"content-type", _JSON)]

    async def _readyz(
        self, scope: dict, receive: Any, rid: str, start: float, params: dict
    ) -> Answer:
        ready, missing = self.readiness()
        if ready:
            routes = {f"{m}@{e}": r.served.version for (m, e), r in self.router.routes.items()}
            return _ok({"ready": True, "routes": routes})
        raise HttpError(503, "not_ready", "Not ready: " + "; ".join(missing))

    async def _metrics(
        self, scope: dict, receive: Any, rid: str, start: float, params: dict
    ) -> Answer:
        body = await asyncio.to_thread(self.metrics.exposition)
        return 200, body, [(b"content-type", CONTENT_TYPE.encode())]

    async def _openapi_route(
        self, scope: dict, receive: Any, rid: str, start: float, params: dict
    ) -> Answer:
        return 200, orjson.dumps(self.openapi()), [(b"content-type", _JSON)]

    async def _docs(
        self, scope: dict, receive: Any, rid: str, start: float, params: dict
    ) -> Answer:
        page = docs_page(self.openapi()).encode()
        return 200, page, [(b"content-type", b"text/html; charset=utf-8")]

    async def _docs_static(
        self, scope: dict, receive: Any, rid: str, start: float, params: dict
    ) -> Answer:
        # Only the fixed names of swagger.FILES: the request's text never becomes a path.
        found = swagger.asset(params["file"]) if params["file"] in swagger.FILES else None
        if found is None:
            raise HttpError(
                404,
                "not_found",
                f"No file {_shown(params['file'])} under /docs/static; the files are "
                f"{', '.join(sorted(swagger.FILES))}"
                + ("." if swagger.available() else " (install swagger-ui-py to serve them)."),
            )
        data, media = found
        return 200, data, [(b"content-type", media.encode()), (b"cache-control", b"max-age=3600")]

    async def _models_route(
        self, scope: dict, receive: Any, rid: str, start: float, params: dict
    ) -> Answer:
        return _ok({"models": [self._describe(m) for m in self.router.models()]})

    async def _describe_route(
        self, scope: dict, receive: Any, rid: str, start: float, params: dict
    ) -> Answer:
        return _ok(self._describe(params["model"], missing_is_error=True))

    async def _versions_route(
        self, scope: dict, receive: Any, rid: str, start: float, params: dict
    ) -> Answer:
        return _ok(self._versions(params["model"]))

    async def _status_route(
        self, scope: dict, receive: Any, rid: str, start: float, params: dict
    ) -> Answer:
        return _ok(self.status())

    async def _reload_route(
        self, scope: dict, receive: Any, rid: str, start: float, params: dict
    ) -> Answer:
        if self.watcher is not None:
            self.watcher.wake()
        return _ok({"reloading": True})

    # -- predict ---------------------------------------------------------------------------

    async def _predict(
        self, scope: dict, receive: Any, rid: str, start: float, params: dict
    ) -> Answer:
        return await self._serve_rows(
            scope, receive, rid, start, params["model"], None, _instances, _json_reply
        )

    async def _tf_predict(
        self, scope: dict, receive: Any, rid: str, start: float, params: dict
    ) -> Answer:
        """TensorFlow Serving's ``:predict``; a version in the path pins it (the route needs
        the token, as ``?version=`` does on the JSON API)."""
        version = None
        text = params.get("version")
        if text is not None:
            if not (text.isascii() and text.isdigit()) or len(text) > 9:
                raise HttpError(
                    404, "version_not_found", f"Versions are positive integers, not {_shown(text)}."
                )
            version = int(text)
        return await self._serve_rows(
            scope, receive, rid, start, params["model"], version, tfserving.read_request, _tf_reply
        )

    async def _mlflow_invocations(
        self, scope: dict, receive: Any, rid: str, start: float, params: dict
    ) -> Answer:
        content_type = None
        for key, value in scope["headers"]:
            if key == b"content-type":
                content_type = value.decode(errors="replace").lower()

        def parse(raw: bytes) -> Any:
            return mlflow_format.read_request(raw, content_type)

        name = self._invocations_model(scope)
        return await self._serve_rows(scope, receive, rid, start, name, None, parse, _mlflow_reply)

    async def _mlflow_ping(
        self, scope: dict, receive: Any, rid: str, start: float, params: dict
    ) -> Answer:
        """MLflow's health check: the model ``/invocations`` answers with is loaded."""
        name = self._invocations_model(scope)
        env = self._caller(scope)[0]
        if self.router.route(name, env) is None:
            raise self._no_route(name, env)
        return 200, b"\n", [(b"content-type", b"text/plain; charset=utf-8")]

    def _invocations_model(self, scope: dict) -> str:
        """The model ``/invocations`` serves: ``?model=``, else the project's model
        (``model:`` in conveyor.yaml), else the only one served."""
        query = scope.get("query_string")
        if query:
            asked = parse_qs(query.decode(errors="replace")).get("model")
            if asked:
                return asked[-1]
        if self.config.model is not None:
            return str(self.config.model.name)
        models = self.router.models()
        if len(models) == 1:
            return str(models[0])
        if not models:
            if not self.router.synced:
                raise self._no_route("?", self.default_env)
            raise HttpError(404, "model_not_found", "No model is served here yet.")
        raise HttpError(
            400,
            "invalid_request",
            f"This gateway serves several models ({', '.join(models)}) and the project names "
            "none: add ?model=NAME to /invocations.",
            field="model",
        )

    async def _serve_rows(
        self,
        scope: dict,
        receive: Any,
        rid: str,
        start: float,
        name: str,
        version: int | None,
        parse: Parse,
        reply: Reply,
    ) -> Answer:
        """The one predict path of every format: the caller's environment, pin and role;
        admission; the body read by ``parse`` into rows and checked against the signature;
        canary routing; the batcher; shadow copies; the answer written by ``reply``; the log.
        ``version`` is a version the path pins (its route needs the token)."""
        env, pinned, declared, key = self._caller(scope)
        role = _SERVE
        if version is not None:
            pinned = version
            role = declared or PINNED
        elif pinned is not None or declared is not None:
            # A pinned or role-marked request is not the environment's traffic: only the
            # operator's tools may send one (they would otherwise steer a canary's analysis).
            self._authorize(scope)
            role = declared or PINNED
        route = self.router.route(name, env)
        if route is None:
            raise self._no_route(name, env)
        batcher = route.batcher
        if pinned is not None:
            batcher = self._pinned(name, pinned)
        served = batcher.served
        self._admit()
        status = 200
        rows = 0
        instances: Any = None
        body = b""
        try:
            raw = await self._body(scope, receive)
            parsed = parse(raw)
            instances = parsed.rows if type(parsed) is tfserving.TfRequest else parsed
            # Validated before routing: the sticky key is read from rows that fit the
            # signature, and a malformed body is a 4xx whatever the split.
            block, rows = served.prepare(instances, self.max_rows)
            if pinned is None and route.candidate is not None:
                picked = route.pick(
                    key if key is not None else _sticky_key(route.sticky, instances)
                )
                if picked is not batcher:
                    batcher = picked
                    served = picked.served
                    block, rows = served.prepare(instances, self.max_rows)
            self.inflight += 1
            try:
                prediction = await batcher.submit(block, rows)
            finally:
                self.inflight -= 1
            if role == _SERVE:
                if route.shadow is not None:
                    self._mirror(route.shadow, route.model, env, rid, instances)
                elif batcher is route.candidate:  # the stable answer too, for agreement
                    self._mirror(route.batcher, route.model, env, rid, instances)
            body = reply(name, served, env, rid, prediction, parsed)
            return 200, body, [(b"content-type", _JSON)]
        except HttpError as exc:
            status = exc.status
            body = exc.message.encode()
            raise
        except InvalidInput as exc:
            status = 422
            body = str(exc).encode()
            raise
        except _ClientGone:
            status = 499
            raise
        except Exception as exc:
            status = 500
            body = f"{type(exc).__name__}: {exc}".encode()
            raise
        finally:
            seconds = time.perf_counter() - start
            outputs = body.decode(errors="replace")
            self._answered(rid, served, env, role, status, seconds, rows, instances, outputs)

    def _admit(self) -> None:
        """Admission control: past the queue bound, a fast 503 instead of an unbounded wait."""
        if self.inflight >= self.max_queue:
            self.metrics.shed.inc()
            raise HttpError(
                503,
                "overloaded",
                f"The gateway is at its queue bound ({self.max_queue} requests); retry shortly.",
                headers=[(b"retry-after", b"1")],
            )

    def _answered(
        self,
        rid: str,
        served: Served,
        env: str,
        role: str,
        status: int,
        seconds: float,
        rows: int,
        instances: Any,
        outputs: str,
    ) -> None:
        """Count a served request and log it (when sampled) under its role: the end of every
        predict path."""
        self.metrics.observe_request(served.model, served.version, env, status, seconds, rows)
        request_log = self.request_log
        if request_log is not None and request_log.sampled():
            request_log.record(
                rid,
                served.model,
                served.version,
                env,
                role,
                status,
                seconds * 1000.0,
                rows,
                _as_text(instances),
                outputs,
            )

    def _caller(self, scope: dict) -> tuple[str, int | None, str | None, str | None]:
        """What the caller asks, in one pass over the headers: the environment (``?env=``, else
        ``X-Conveyor-Env``), a pinned ``?version=``, a declared ``X-Conveyor-Role`` and the
        sticky key ``X-Conveyor-Key``."""
        env = None
        version = None
        header_env = role = key = None
        for name, value in scope["headers"]:
            if name.startswith(b"x-conveyor-"):
                if name == b"x-conveyor-env":
                    header_env = value.decode(errors="replace")
                elif name == b"x-conveyor-role":
                    role = value.decode(errors="replace")
                elif name == b"x-conveyor-key":
                    key = value.decode(errors="replace")
        if role is not None and role not in CALLER_ROLES:
            raise HttpError(
                400,
                "invalid_request",
                f"X-Conveyor-Role is {_shown(role)}; use one of {', '.join(CALLER_ROLES)}, or "
                "leave it out for ordinary traffic.",
                field="x-conveyor-role",
            )
        query = scope.get("query_string")
        if query:
            params = parse_qs(query.decode(errors="replace"))
            if params.get("env"):
                env = params["env"][-1]
            if params.get("version"):
                text = params["version"][-1]
                if not (text.isascii() and text.isdigit()) or len(text) > 9:
                    raise HttpError(
                        400, "invalid_request", f"version must be a number, not {_shown(text)}."
                    )
                version = int(text)
        return env or header_env or self.default_env, version, role, key

    def _pinned(self, name: str, version: int) -> Batcher:
        batcher = self.router.batchers.get((name, version))
        if batcher is None:
            loaded = sorted(v for (m, v) in self.router.batchers if m == name)
            raise HttpError(
                404,
                "version_not_found",
                f"Version {version} of {_shown(name)} is not loaded here; loaded: "
                f"{', '.join(map(str, loaded)) or 'none'}.",
            )
        return batcher

    def _mirror(self, batcher: Batcher, name: str, env: str, rid: str, instances: Any) -> None:
        """Send a copy of the request to another version after the caller's answer is on its
        way: to a shadow, or to the stable version for a request a canary answered."""
        if self._shadow_inflight >= self.max_queue:
            self.metrics.shadow_dropped.inc()
            return
        self._shadow_inflight += 1
        task = asyncio.get_running_loop().create_task(
            self._shadow(batcher, name, env, rid, instances)
        )
        self._shadow_tasks.add(task)
        task.add_done_callback(self._shadow_tasks.discard)

    async def _shadow(
        self, batcher: Batcher, name: str, env: str, rid: str, instances: Any
    ) -> None:
        started = time.perf_counter()
        served = batcher.served
        status, rows, body = 200, 0, b""
        try:
            block, rows = served.prepare(instances, self.max_rows)
            prediction = await batcher.submit(block, rows)
            answer = {"predictions": prediction.values, "probabilities": prediction.probabilities}
            body = orjson.dumps(answer, option=_NUMPY, default=_default)
        except InvalidInput as exc:
            status, body = 422, str(exc).encode()
        except Exception as exc:
            status, body = 500, f"{type(exc).__name__}: {exc}".encode()
        finally:
            self._shadow_inflight -= 1
        seconds = time.perf_counter() - started
        self.metrics.observe_request(name, served.version, env, status, seconds, rows, "shadow")
        if self.request_log is not None:
            self.request_log.record(
                rid,
                name,
                served.version,
                env,
                "shadow",
                status,
                seconds * 1000.0,
                rows,
                "",
                body.decode(errors="replace"),
            )

    def _no_route(self, name: str, env: str) -> HttpError:
        if not self.router.synced:  # this worker has not read the store yet: not "no model"
            return HttpError(
                503,
                "not_ready",
                "The gateway is still reading the store and loading models; retry shortly.",
                headers=[(b"retry-after", b"1")],
            )
        envs = sorted(e for (m, e) in self.router.desired if m == name)
        if not envs:
            known = ", ".join(self.router.models()) or "none yet"
            return HttpError(
                404, "model_not_found", f"No model {_shown(name)} is served; models: {known}."
            )
        if (name, env) in self.router.desired:
            return HttpError(
                503,
                "not_loaded",
                f"{name}@{env} is routed but its version is not loaded yet; see /readyz.",
                headers=[(b"retry-after", b"1")],
            )
        return HttpError(
            404,
            "environment_not_found",
            f"{name} has no version in the environment {_shown(env)}; it is served in: "
            f"{', '.join(envs)}.",
        )

    async def _body(self, scope: dict, receive: Any) -> bytes:
        for key, value in scope["headers"]:
            if key == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    raise HttpError(400, "bad_request", "Content-Length is not a number.") from None
                if length > self.max_body:
                    raise _too_large(length, self.max_body)
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        body = message.get("body", b"")
        if not message.get("more_body"):
            if len(body) > self.max_body:
                raise _too_large(len(body), self.max_body)
            return body
        chunks = [body]
        size = len(body)
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise _too_large(size, self.max_body)
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)

    # -- v2 (Open Inference Protocol) ------------------------------------------------------

    async def _v2_server(
        self, scope: dict, receive: Any, rid: str, start: float, params: dict
    ) -> Answer:
        return _ok({"name": "conveyor", "version": "1", "extensions": ["binary_tensor_data"]})

    async def _v2_live(
        self, scope: dict, receive: Any, rid: str, start: float, params: dict
    ) -> Answer:
        return _ok({"live": True})

    async def _v2_ready(
        self, scope: dict, receive: Any, rid: str, start: float, params: dict
    ) -> Answer:
        # The protocol's health answers are 200 (true) or a 4xx (false), never a 5xx.
        ready, missing = self.readiness()
        if not ready:
            raise HttpError(400, "not_ready", "Not ready: " + "; ".join(missing))
        return _ok({"ready": True})

    async def _v2_metadata(
        self, scope: dict, receive: Any, rid: str, start: float, params: dict
    ) -> Answer:
        return _ok(v2.model_metadata(self._v2_route(scope, params).served, _PLATFORM))

    async def _v2_model_ready(
        self, scope: dict, receive: Any, rid: str, start: float, params: dict
    ) -> Answer:
        try:
            self._v2_route(scope, params)
        except HttpError as exc:
            if exc.status != 503:
                raise
            # Routed but still loading: "not ready" is a 4xx in the protocol's health API.
            raise HttpError(400, exc.code, exc.message, headers=exc.headers) from None
        return _ok({"name": params["model"], "ready": True})

    def _v2_route(self, scope: dict, params: dict) -> Any:
        """The route a v2 path names: the environment's, or the one serving its version."""
        name = params["model"]
        text = params.get("version")
        if text is None:
            env = self._caller(scope)[0]
            route = self.router.route(name, env)
            if route is None:
                raise self._no_route(name, env)
            return route
        if not (text.isascii() and text.isdigit()) or len(text) > 9:
            raise HttpError(404, "version_not_found", "Versions are positive integers.")
        version = int(text)
        for (model, _env), route in self.router.routes.items():
            if model == name and route.served.version == version:
                return route
        raise HttpError(
            404,
            "version_not_found",
            f"Version {version} of {_shown(name)} is not served by any environment here.",
        )

    async def _v2_infer(
        self, scope: dict, receive: Any, rid: str, start: float, params: dict
    ) -> Answer:
        declared = self._caller(scope)[2]
        if declared is not None:
            self._authorize(scope)
        route = self._v2_route(scope, params)
        # A version named in the path is the caller's pick, not the environment's traffic; it
        # only reaches a version some environment serves, never a canary, so it needs no token.
        role = declared or (PINNED if "version" in params else _SERVE)
        served = route.served
        self._admit()
        header_length = None
        for key, value in scope["headers"]:
            if key == b"inference-header-content-length":
                header_length = value.decode(errors="replace")
        body = await self._body(scope, receive)
        status = 200
        rows = 0
        instances: Any = None
        payload = b""
        try:
            instances, request, wanted = v2.decode_request(
                body, header_length, served, self.max_rows
            )
            block, rows = served.prepare(instances, self.max_rows)
            self.inflight += 1
            try:
                prediction = await route.batcher.submit(block, rows)
            finally:
                self.inflight -= 1
            payload, headers = v2.encode_response(served, prediction, request, rid, wanted)
            return 200, payload, headers
        except (HttpError, InvalidInput) as exc:
            status = getattr(exc, "status", 422)
            raise
        except Exception:
            status = 500
            raise
        finally:
            env = route.environment
            seconds = time.perf_counter() - start
            outputs = "" if status != 200 else _v2_outputs(payload)
            self._answered(rid, served, env, role, status, seconds, rows, instances, outputs)

    async def _feedback(
        self, scope: dict, receive: Any, rid: str, start: float, params: dict
    ) -> Answer:
        raw = await self._body(scope, receive)
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise HttpError(400, "invalid_json", f"The body is not valid JSON: {exc}") from None
        items = _feedback_items(payload)
        assert self.request_log is not None
        ids = [rid for rid, _labels in items]
        known = await asyncio.to_thread(self.request_log.known_requests, ids)
        for i, (request_id, _labels) in enumerate(items):
            if request_id not in known:
                raise HttpError(
                    422,
                    "unknown_request",
                    f"feedback[{i}]: the request id {_shown(request_id)} is not in the request "
                    "log (mistyped, not sampled, or not flushed yet: retry in a second).",
                    field="request_id",
                    row=i,
                )
        stored = [(rid, orjson.dumps(labels).decode()) for rid, labels in items]
        count = await asyncio.to_thread(self.request_log.add_feedback, stored, "api")
        return _ok({"stored": count})

    def _authorize(self, scope: dict) -> None:
        if self._token is None:
            raise HttpError(
                403,
                "admin_disabled",
                "This endpoint needs a bearer token, and the gateway has none configured: set "
                f"{self.config.serve.token_env} (or serve.token_file) and restart it.",
            )
        for key, value in scope["headers"]:
            if key == b"authorization":
                scheme, _, given = value.partition(b" ")
                if scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self._token):
                    return
                break
        raise HttpError(
            401,
            "unauthorized",
            "Missing or wrong bearer token (Authorization: Bearer ...).",
            headers=[(b"www-authenticate", b"Bearer")],
        )

    def _describe(self, name: str, *, missing_is_error: bool = False) -> dict[str, Any]:
        envs = {}
        signature = None
        for (model, env), route in sorted(self.router.routes.items()):
            if model == name:
                envs[env] = {"version": route.served.version, "runtime": route.served.runtime}
                signature = route.served.signature
        if not envs and missing_is_error:
            raise self._no_route(name, self.default_env)
        return {"name": name, "environments": envs, "signature": signature}

    def _versions(self, name: str) -> dict[str, Any]:
        """Loaded versions of a model and how each environment splits its traffic."""
        loaded = sorted(v for (m, v) in self.router.batchers if m == name)
        if not loaded:
            raise self._no_route(name, self.default_env)
        routes = {}
        for (model, env), route in sorted(self.router.routes.items()):
            if model != name:
                continue
            routes[env] = {
                "stable": route.served.version,
                "canary": route.candidate.served.version if route.candidate else None,
                "weight": route.weight,
                "shadow": route.shadow.served.version if route.shadow else None,
            }
        return {"name": name, "loaded": loaded, "environments": routes}

    def status(self) -> dict[str, Any]:
        """What this gateway holds: routes, loaded versions, failures, the log and the watcher."""
        rl = self.request_log
        return {
            "gateway": self.name,
            "routes": {
                f"{m}@{e}": {"version": r.served.version, "runtime": r.served.runtime}
                for (m, e), r in sorted(self.router.routes.items())
            },
            "desired": {f"{m}@{e}": v for (m, e), v in sorted(self.router.desired.items())},
            "failed": {f"{m}:{v}": why for (m, v), why in sorted(self.router.failed.items())},
            "inflight": self.inflight,
            "request_log": None
            if rl is None
            else {
                "written": rl.written,
                "pending": rl.pending(),
                "dropped": rl.dropped,
                "last_error": rl.last_error,
            },
            "watcher": None
            if self.watcher is None
            else {"polls": self.watcher.polls, "last_error": self.watcher.last_error},
        }

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI document: every route of the table, the model routes for what is
        routed now."""
        models: dict[str, ModelDoc] = {}
        for (model, env), route in sorted(self.router.routes.items()):
            doc = models.get(model)
            if doc is None:
                loaded = sorted(v for (m, v) in self.router.batchers if m == model)
                doc = models[model] = ModelDoc(route.served.signature, [], loaded, [])
            doc.environments.append(env)
            if route.served.version not in doc.served:
                doc.served.append(route.served.version)
        return openapi_document(models, max_rows=self.max_rows)


class _ClientGone(Exception):
    """The client disconnected before its body arrived; there is no one to answer."""


def _not_allowed(method: str, routes: dict[str, Route]) -> HttpError:
    allowed = list(routes)
    return HttpError(
        405,
        "method_not_allowed",
        f"{method} is not allowed here; use {' or '.join(allowed)}.",
        headers=[(b"allow", ", ".join(allowed).encode())],
    )


def _ok(payload: Any) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    return 200, orjson.dumps(payload, default=_default), [(b"content-type", _JSON)]


def _too_large(size: int, limit: int) -> HttpError:
    return HttpError(
        413,
        "body_too_large",
        f"The body is {size} bytes; the limit is {limit} (serve.max_body_mb). Split the request.",
    )


def _shown(value: str) -> str:
    """A request value quoted for an error message, cut short: never echo a whole body."""
    return repr(value if len(value) <= 80 else value[:77] + "...")


def _instances(raw: bytes) -> Any:
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise HttpError(400, "invalid_json", f"The body is not valid JSON: {exc}") from None
    if type(payload) is not dict:
        raise HttpError(
            400, "invalid_request", 'The body must be a JSON object: {"instances": [...]}.'
        )
    if len(payload) != 1 or "instances" not in payload:
        extra = [k for k in payload if k != "instances"]
        if extra:
            raise HttpError(
                400,
                "invalid_request",
                f'The body has the key {_shown(extra[0])}; send only "instances": a list '
                "of records or of arrays.",
                field=extra[0][:200],
            )
        raise HttpError(400, "invalid_request", 'The body needs "instances": a list of rows.')
    return payload["instances"]


def _json_reply(
    name: str, served: Served, env: str, rid: str, prediction: Prediction, parsed: Any
) -> bytes:
    answer = {
        "model": name,
        "version": served.version,
        "environment": env,
        "request_id": rid,
        "predictions": prediction.values,
        "probabilities": prediction.probabilities,
    }
    if served.classes:
        answer["classes"] = served.classes
    return orjson.dumps(answer, option=_NUMPY, default=_default)


def _tf_reply(
    name: str, served: Served, env: str, rid: str, prediction: Prediction, parsed: Any
) -> bytes:
    answer = tfserving.answer(prediction.values, prediction.probabilities, parsed.columnar)
    return orjson.dumps(answer, option=_NUMPY, default=_default)


def _mlflow_reply(
    name: str, served: Served, env: str, rid: str, prediction: Prediction, parsed: Any
) -> bytes:
    return orjson.dumps({"predictions": prediction.values}, option=_NUMPY, default=_default)


def _v2_outputs(payload: bytes) -> str:
    """A v2 answer as the log keeps it: its JSON part (binary tensors are not kept)."""
    return payload.decode(errors="replace") if payload[:1] == b"{" else ""


def _sticky_key(field: str | None, rows: list[Any]) -> str | None:
    """The sticky field of the first record, for a caller without ``X-Conveyor-Key``; None
    means a random split. ``rows`` passed the signature check: a non-empty list of records
    or of arrays."""
    if field and type(rows[0]) is dict and field in rows[0]:
        return str(rows[0][field])
    return None


def _as_text(instances: Any) -> str:
    if instances is None:
        return ""
    try:
        return orjson.dumps(instances).decode()
    except TypeError:
        return ""


def _feedback_items(payload: Any) -> list[tuple[str, list[Any]]]:
    if isinstance(payload, dict) and "feedback" in payload:
        entries = payload["feedback"]
        if not isinstance(entries, list) or not entries:
            raise HttpError(400, "invalid_request", '"feedback" must be a non-empty list.')
        if len(entries) > _MAX_FEEDBACK:
            raise HttpError(413, "too_many_items", f"At most {_MAX_FEEDBACK} labels per request.")
    else:
        entries = [payload]
    items = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise HttpError(400, "invalid_request", f"feedback[{i}] must be an object.", row=i)
        unknown = [k for k in entry if k not in ("request_id", "label", "labels")]
        if unknown:
            raise HttpError(
                400,
                "invalid_request",
                f"feedback[{i}] has the key {_shown(str(unknown[0]))}; use request_id and "
                "label (one row) or labels (one per row).",
                field=str(unknown[0])[:200],
                row=i,
            )
        rid = entry.get("request_id")
        if not isinstance(rid, str) or not rid or len(rid) > 40:
            raise HttpError(
                422,
                "invalid_input",
                f"feedback[{i}] needs a request_id string.",
                field="request_id",
                row=i,
            )
        if ("label" in entry) == ("labels" in entry):
            raise HttpError(
                422,
                "invalid_input",
                f"feedback[{i}] needs exactly one of label or labels.",
                field="label",
                row=i,
            )
        labels = entry["labels"] if "labels" in entry else [entry["label"]]
        if (
            not isinstance(labels, list)
            or not labels
            or not all(
                isinstance(v, str | int | float | bool) and not isinstance(v, dict) for v in labels
            )
        ):
            raise HttpError(
                422,
                "invalid_input",
                f"feedback[{i}]: labels must be a non-empty list of numbers, strings or booleans.",
                field="labels",
                row=i,
            )
        items.append((rid, labels))
    return items
