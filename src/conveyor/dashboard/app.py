"""The dashboard as a plain ASGI app: server-rendered pages, a JSON twin of each, and the acts.

Every page is ``GET PATH`` (HTML on the shared page frame) and ``GET PATH.json`` (the same
view's data). Handlers are synchronous reads of the store, run in a worker thread so a slow
page never blocks another. Read-only unless the dashboard was given a token: then a person
who signs in with it (an HttpOnly, SameSite=Strict cookie holding an HMAC of the token, never
the token) or a client sending ``Authorization: Bearer TOKEN`` sees the buttons and may
promote, pause, resume, abort and roll back, each a POST behind a confirmation page. Without
the token the buttons are not drawn and those endpoints answer 401.

Errors are pages too: an unknown id is a 404 naming what was not found, a bad query parameter
a 400 naming the parameter. Each response carries ``Server-Timing: app;dur=MS`` (the time in
the handler and template), which ``benchmarks/ui_bench.py`` reads.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

import orjson

from conveyor.dashboard import acts, queries, views
from conveyor.dashboard.errors import DashboardError, Forbidden, NotFound, Unauthorized
from conveyor.dashboard.params import (
    choice_param,
    date_param,
    duration_param,
    form,
    int_param,
    parse,
    text_param,
)
from conveyor.evaluate.values import jsonable

if TYPE_CHECKING:
    from conveyor.config import ProjectConfig

# The ASGI callables, as the server hands them over.
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

__all__ = ["Dashboard"]

HERE = Path(__file__).parent
COOKIE = "conveyor_dashboard"
_MAX_BODY = 16 * 1024
_ID = r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,199}"
_STATIC = {"dashboard.css": "text/css; charset=utf-8"}
_HEADERS = [
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (
        b"content-security-policy",
        b"default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        b"form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
]
RUN_STATUSES = ("running", "succeeded", "failed", "interrupted")
RELEASE_STATES = ("running", "paused", "promoted", "rolled_back", "aborted", "completed")


@dataclass
class Request:
    method: str
    path: str
    query: bytes
    headers: dict[str, str]
    body: bytes = b""
    json: bool = False
    authorised: bool = False
    who: str = ""


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = "text/html; charset=utf-8"
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


@lru_cache(maxsize=1)
def templates() -> Any:
    """The dashboard's templates, which extend the reports' shared frame (``page.html.j2``)."""
    import jinja2

    from conveyor.evaluate.values import format_number, format_percent
    from conveyor.reports.pages import TEMPLATES

    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(
            [jinja2.FileSystemLoader(HERE / "templates"), jinja2.FileSystemLoader(TEMPLATES)]
        ),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(num=format_number, pct=format_percent, q=_query)
    return env


def _query(values: dict[str, Any]) -> str:
    """A query string of the non-empty values (for pagination links that keep the filters)."""
    return urlencode({k: v for k, v in values.items() if v not in (None, "")})


class Dashboard:
    """The ASGI app over one project's stores, opened at start-up and closed at shutdown.

    Args:
        config: the project's configuration.
        token: the admin token (``serve.token_file`` or ``$CONVEYOR_TOKEN``); None keeps the
            dashboard read-only.
    """

    def __init__(self, config: ProjectConfig, *, token: str | None = None) -> None:
        self.config = config
        self.token = token
        self._ctx: views.Context | None = None
        self._session = (
            hmac.new(token.encode(), b"conveyor-dashboard-session", hashlib.sha256).hexdigest()
            if token
            else None
        )
        routes: list[tuple[str, Callable[..., Response]]] = [
            (r"/(?:index)?", self.overview),
            (r"/runs", self.runs),
            (rf"/runs/(?P<run_id>{_ID})", self.run),
            (
                rf"/runs/(?P<run_id>{_ID})/artifacts/(?P<digest>[0-9A-Za-z]{{8,128}})",
                self.download,
            ),
            (r"/models", self.models),
            (rf"/models/(?P<model>{_ID})/(?P<number>[0-9]{{1,9}})", self.version),
            (r"/releases", self.releases),
            (rf"/releases/(?P<release_id>{_ID})", self.release),
            (rf"/releases/(?P<release_id>{_ID})/(?P<act>promote|pause|resume|abort)", self.act),
            (rf"/environments/(?P<model>{_ID})/(?P<environment>{_ID})/rollback", self.rollback),
            (r"/monitoring", self.monitoring),
            (rf"/monitoring/(?P<model>{_ID})/(?P<environment>{_ID})", self.monitor_page),
            (r"/events", self.events),
            (r"/login", self.login),
            (r"/logout", self.logout),
            (r"/static/(?P<name>[a-z]+\.css)", self.static),
            (r"/favicon\.ico", self.favicon),
        ]
        self._routes = [(re.compile(p), h) for p, h in routes]

    # -- lifecycle --------------------------------------------------------------------------

    def open(self) -> Dashboard:
        """Open the project's stores (migrating an old schema); the pages read through them."""
        from conveyor.registry.registry import Registry
        from conveyor.store.stores import open_stores

        stores = open_stores(self.config)
        self._ctx = views.Context(self.config, stores, Registry(stores.metadata, stores.artifacts))
        return self

    def close(self) -> None:
        if self._ctx is not None:
            self._ctx.reports.close()  # its worker reads the stores: stop it first
            self._ctx.stores.close()
            self._ctx = None

    @property
    def ctx(self) -> views.Context:
        if self._ctx is None:
            self.open()
        assert self._ctx is not None
        return self._ctx

    # -- ASGI -------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        body = b""
        if scope["method"] == "POST":
            while True:
                message = await receive()
                body += message.get("body", b"")
                if len(body) > _MAX_BODY:
                    await _send(send, Response(413, b"Request body too large.", "text/plain"))
                    return
                if not message.get("more_body"):
                    break
        request = Request(scope["method"], scope["path"], scope["query_string"], headers, body)
        response = await asyncio.to_thread(self.handle, request)
        await _send(send, response)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await asyncio.to_thread(self.open)
                except Exception as exc:  # the server must not start on a store it cannot read
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await asyncio.to_thread(self.close)
                await send({"type": "lifespan.shutdown.complete"})
                return

    def handle(self, request: Request) -> Response:
        """Route one request and time it; every refusal is an error page (or JSON)."""
        started = time.perf_counter()
        path = request.path
        if path.endswith(".json"):
            request.json, path = True, path[: -len(".json")]
        request.authorised = self._authorised(request.headers)
        try:
            for pattern, handler in self._routes:
                found = pattern.fullmatch(path)
                if found:
                    response = handler(request, **found.groupdict())
                    break
            else:
                raise NotFound(f"No page at {request.path!r}; the overview at / links every page.")
        except DashboardError as exc:
            response = self._error(request, exc.status, str(exc))
        except _NotAllowed as exc:
            response = self._error(request, 405, str(exc))
            response.headers.append((b"allow", exc.allow.encode()))
        elapsed = (time.perf_counter() - started) * 1000
        response.headers.append((b"server-timing", f"app;dur={elapsed:.1f}".encode()))
        return response

    # -- auth -------------------------------------------------------------------------------

    def _authorised(self, headers: dict[str, str]) -> bool:
        if self.token is None or self._session is None:
            return False
        bearer = headers.get("authorization", "")
        if bearer.startswith("Bearer ") and hmac.compare_digest(
            bearer[7:].strip().encode(), self.token.encode()
        ):
            return True
        for part in headers.get("cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE and hmac.compare_digest(value.encode(), self._session.encode()):
                return True
        return False

    def _require_token(self, request: Request) -> None:
        if self.token is None:
            raise Unauthorized(
                "This dashboard is read-only: it was started without a token. Start it with "
                "--token-file FILE (or set the serve token's environment variable) to act."
            )
        if not request.authorised:
            raise Unauthorized(
                "Acting needs the dashboard's token: sign in at /login, or send "
                "'Authorization: Bearer TOKEN'."
            )

    def _same_origin(self, request: Request) -> None:
        """A browser's form post must come from this dashboard's own pages."""
        origin = request.headers.get("origin")
        host = request.headers.get("host", "")
        if origin and origin not in (f"http://{host}", f"https://{host}"):
            raise Forbidden(f"A form posted from {origin[:100]!r} is refused; use this dashboard.")

    # -- rendering --------------------------------------------------------------------------

    def _page(self, request: Request, view: views.View) -> Response:
        if request.json:
            return _json(200, view.data)
        html = (
            templates()
            .get_template(view.template)
            .render(
                title=view.title,
                d=view.data,
                charts=view.charts,
                authorised=request.authorised,
                acting=self.token is not None,
                path=request.path,
            )
        )
        return Response(200, html.encode())

    def _error(self, request: Request, status: int, message: str) -> Response:
        if request.json or request.headers.get("accept", "").startswith("application/json"):
            return _json(status, {"error": {"status": status, "message": message}})
        html = (
            templates()
            .get_template("error.html.j2")
            .render(
                title=_REASONS.get(status, "Error"),
                status=status,
                message=message,
                authorised=request.authorised,
                acting=self.token is not None,
                path=request.path,
            )
        )
        return Response(status, html.encode())

    @staticmethod
    def _only(request: Request, *methods: str) -> None:
        if request.method not in methods:
            raise _NotAllowed(", ".join(methods))

    # -- pages ------------------------------------------------------------------------------

    def overview(self, request: Request) -> Response:
        self._only(request, "GET", "HEAD")
        parse(request.query, {})
        return self._page(request, views.overview(self.ctx))

    def runs(self, request: Request) -> Response:
        self._only(request, "GET", "HEAD")
        q = parse(
            request.query,
            {
                "status": choice_param("status", RUN_STATUSES),
                "step": text_param("step"),
                "since": date_param("since"),
                "until": date_param("until", end=True),
                "after": text_param("after"),
                "limit": int_param("limit", 1, 500),
            },
        )
        filters = queries.RunFilter(q["status"], q["step"], q["since"], q["until"])
        return self._page(request, views.runs(self.ctx, filters, q["after"], q["limit"] or 50))

    def run(self, request: Request, run_id: str) -> Response:
        self._only(request, "GET", "HEAD")
        parse(request.query, {})
        return self._page(request, views.run(self.ctx, run_id))

    def download(self, request: Request, run_id: str, digest: str) -> Response:
        self._only(request, "GET", "HEAD")
        parse(request.query, {})
        name, data = views.artifact(self.ctx, run_id, digest)
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)[:150] or "artifact"
        return Response(
            200,
            data,
            "application/octet-stream",
            [(b"content-disposition", f'attachment; filename="{safe}"'.encode())],
        )

    def models(self, request: Request) -> Response:
        self._only(request, "GET", "HEAD")
        q = parse(
            request.query,
            {
                "model": text_param("model"),
                "after": _after_param(),
                "limit": int_param("limit", 1, 500),
            },
        )
        view = views.models(self.ctx, q["model"], q["after"], q["limit"] or 50)
        return self._page(request, view)

    def version(self, request: Request, model: str, number: str) -> Response:
        self._only(request, "GET", "HEAD")
        parse(request.query, {})
        return self._page(request, views.version(self.ctx, model, int(number)))

    def releases(self, request: Request) -> Response:
        self._only(request, "GET", "HEAD")
        q = parse(
            request.query,
            {
                "model": text_param("model"),
                "environment": text_param("environment"),
                "state": choice_param("state", RELEASE_STATES),
                "after": text_param("after"),
                "limit": int_param("limit", 1, 500),
            },
        )
        view = views.releases(
            self.ctx,
            model=q["model"],
            environment=q["environment"],
            state=q["state"],
            cursor=q["after"],
            limit=q["limit"] or 50,
        )
        return self._page(request, view)

    def release(self, request: Request, release_id: str) -> Response:
        self._only(request, "GET", "HEAD")
        parse(request.query, {})
        return self._page(request, views.release(self.ctx, release_id))

    def monitoring(self, request: Request) -> Response:
        self._only(request, "GET", "HEAD")
        parse(request.query, {})
        return self._page(request, views.monitoring(self.ctx))

    def monitor_page(self, request: Request, model: str, environment: str) -> Response:
        self._only(request, "GET", "HEAD")
        q = parse(request.query, {"every": duration_param("every", 60.0, 7 * 86400.0)})
        return self._page(request, views.monitoring_page(self.ctx, model, environment, q["every"]))

    def events(self, request: Request) -> Response:
        self._only(request, "GET", "HEAD")
        from conveyor.store.events import CATALOGUE

        q = parse(
            request.query,
            {
                "kind": choice_param("kind", sorted(CATALOGUE)),
                "entity": text_param("entity"),
                "entity_id": text_param("entity_id"),
                "since": date_param("since"),
                "until": date_param("until", end=True),
                "after": int_param("after", 1, 2**62),
                "limit": int_param("limit", 1, 500),
            },
        )
        filters = queries.EventFilter(
            q["kind"], q["entity"], q["entity_id"], q["since"], q["until"]
        )
        return self._page(request, views.events(self.ctx, filters, q["after"], q["limit"] or 100))

    # -- acts -------------------------------------------------------------------------------

    def act(self, request: Request, release_id: str, act: str) -> Response:
        self._only(request, "GET", "POST")
        parse(request.query, {})
        self._require_token(request)
        if request.method == "GET":
            return self._page(request, acts.confirm_release(self.ctx, release_id, act))
        self._same_origin(request)
        fields = form(request.body, acts.FIELDS)
        result = acts.act_on_release(self.ctx, release_id, act, fields)
        return self._after_act(request, result, f"/releases/{quote(release_id)}")

    def rollback(self, request: Request, model: str, environment: str) -> Response:
        self._only(request, "GET", "POST")
        parse(request.query, {})
        self._require_token(request)
        if request.method == "GET":
            return self._page(request, acts.confirm_rollback(self.ctx, model, environment))
        self._same_origin(request)
        fields = form(request.body, acts.FIELDS)
        result = acts.roll_back(self.ctx, model, environment, fields)
        where = f"/releases/{quote(result['release'])}" if result.get("release") else "/"
        return self._after_act(request, result, where)

    def _after_act(self, request: Request, result: dict[str, Any], where: str) -> Response:
        if request.json or request.headers.get("accept", "").startswith("application/json"):
            return _json(200, result)
        return Response(303, b"", "text/plain", [(b"location", where.encode())])

    def login(self, request: Request) -> Response:
        self._only(request, "GET", "POST")
        q = parse(request.query, {"next": _next_param()})
        if self.token is None:
            raise Unauthorized(
                "This dashboard is read-only: it was started without a token, so there is "
                "nothing to sign in to."
            )
        if request.method == "GET":
            return self._page(
                request,
                views.View("login.html.j2", "Sign in", {"next": q["next"] or "/", "failed": False}),
            )
        self._same_origin(request)
        fields = form(request.body, {"token": 500, "next": 500})
        target = _local(fields.get("next") or "/")
        if not hmac.compare_digest(fields.get("token", "").encode(), self.token.encode()):
            response = self._page(
                request,
                views.View("login.html.j2", "Sign in", {"next": target, "failed": True}),
            )
            response.status = 401
            return response
        cookie = f"{COOKIE}={self._session}; Path=/; HttpOnly; SameSite=Strict"
        return Response(
            303,
            b"",
            "text/plain",
            [(b"location", target.encode()), (b"set-cookie", cookie.encode())],
        )

    def logout(self, request: Request) -> Response:
        self._only(request, "POST")
        self._same_origin(request)
        cookie = f"{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"
        return Response(
            303, b"", "text/plain", [(b"location", b"/"), (b"set-cookie", cookie.encode())]
        )

    # -- files ------------------------------------------------------------------------------

    def static(self, request: Request, name: str) -> Response:
        self._only(request, "GET", "HEAD")
        if name not in _STATIC:  # a fixed list: a request never names a file on disk
            raise NotFound(f"No static file {name!r}.")
        return Response(200, _static(name), _STATIC[name], [(b"cache-control", b"max-age=3600")])

    def favicon(self, request: Request) -> Response:
        self._only(request, "GET", "HEAD")
        return Response(200, _ICON, "image/svg+xml")


class _NotAllowed(Exception):
    def __init__(self, allow: str) -> None:
        super().__init__(f"This address answers {allow} only.")
        self.allow = allow


def _after_param() -> Any:
    """The models page's cursor, ``MODEL:VERSION`` of the last row shown."""
    from conveyor.dashboard.params import Param

    def read(raw: str) -> tuple[str, int]:
        name, _, number = raw.rpartition(":")
        if not name or not (number.isascii() and number.isdigit()) or not re.fullmatch(_ID, name):
            raise ValueError(raw)
        return name, int(number)

    return Param("after", read, "MODEL:VERSION, as the next-page link gives it")


def _next_param() -> Any:
    from conveyor.dashboard.params import Param

    def read(raw: str) -> str:
        if _local(raw) != raw:
            raise ValueError(raw)
        return raw

    return Param("next", read, "a path on this dashboard, starting with a single /")


def _local(target: str) -> str:
    """A redirect target on this site only: a path, never another host."""
    if target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


@lru_cache(maxsize=8)
def _static(name: str) -> bytes:
    return (HERE / "static" / name).read_bytes()


_ICON = (
    b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">'
    b'<rect width="16" height="16" rx="3" fill="#0969da"/></svg>'
)
_REASONS = {
    400: "Bad request",
    401: "Sign-in needed",
    403: "Refused",
    404: "Not found",
    405: "Method not allowed",
}


def _json(status: int, data: Any) -> Response:
    body = orjson.dumps(jsonable(data), default=str, option=orjson.OPT_NON_STR_KEYS)
    return Response(status, body, "application/json")


async def _send(send: Send, response: Response) -> None:
    headers = [
        (b"content-type", response.content_type.encode()),
        (b"content-length", str(len(response.body)).encode()),
        *_HEADERS,
    ]
    own = {name for name, _ in response.headers}
    headers = [h for h in headers if h[0] not in own] + response.headers
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})
