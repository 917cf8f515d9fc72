"""``conveyor serve``: the gateway on uvicorn, one process or several workers.

Workers are separate processes (uvicorn's supervisor), each with its own models and batcher;
they share the store, and their metrics through ``PROMETHEUS_MULTIPROC_DIR``. Each worker gets
one inference thread unless ``serve.threads`` says otherwise: OpenMP's default of one thread
per core collapses when the cores are busy with other workers.

Connections are guarded (``GuardedHttpProtocol``, uvicorn's httptools protocol with limits):
uvicorn closes a connection that is idle *between* requests, but not one that never finishes
its first request's head, has no limit on the size of a head, and accepts connections until
the process runs out of file descriptors, after which libuv accepts and drops every new one,
legitimate requests included. Here a request's head must arrive whole within
``header_timeout`` seconds and ``max_header_bytes``/``max_headers``, a body must keep coming
(``body_timeout``), and past ``max_connections`` open connections the one idle longest is
closed to make room, so idle and slow sockets cannot starve the port.

Workers die with their supervisor: a ``kill -9`` of ``conveyor serve --workers N`` would
otherwise leave N orphans holding the port. Each worker asks Linux for SIGTERM when its
parent dies (``PR_SET_PDEATHSIG``) and a watchdog thread checks its parent as a fallback.
"""

from __future__ import annotations

import ipaddress
import os
import resource
import signal
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.exceptions import GatewayError

if TYPE_CHECKING:
    import asyncio

    from conveyor.config import ProjectConfig

__all__ = ["ConnectionLimits", "load_token", "serve", "uvicorn_options", "worker_app"]

_CONFIG_ENV = "CONVEYOR_SERVE_CONFIG"
_SUPERVISOR_ENV = "CONVEYOR_SERVE_SUPERVISOR"
_LIMITS_ATTR = "conveyor_limits"  # set on the uvicorn.Config the protocol receives
MIN_TOKEN = 16
_FD_RESERVE = 64  # descriptors kept for the store, model files, metrics files and logs


@dataclass(frozen=True)
class ConnectionLimits:
    """What one connection may hold (see the module docstring); 0 connections = derived."""

    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_header_bytes: int = 64 * 1024
    max_headers: int = 100
    max_connections: int = 0

    def connection_cap(self) -> int:
        """``max_connections``, or what the descriptor limit leaves after a reserve.

        A gateway at 256 descriptors keeps 192 connections; at 1,024, 960; never above 10,000
        per process, where a load balancer in front should be spreading the clients.
        """
        if self.max_connections > 0:
            return self.max_connections
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return 10_000
        return max(16, min(soft - max(_FD_RESERVE, soft // 16), 10_000))


def load_token(config: ProjectConfig, token_file: Path | None = None) -> str | None:
    """The admin token: ``--token-file``, else ``serve.token_file``, else the environment.

    Raises:
        GatewayError: the file cannot be read, or the token is shorter than 16 characters.
    """
    serve = config.serve
    path = token_file or (Path(config.root) / serve.token_file if serve.token_file else None)
    if path is not None:
        try:
            token = path.read_text().strip()
        except OSError as exc:
            raise GatewayError(
                f"Cannot read the gateway token file {path}: {exc.strerror}"
            ) from None
        where = str(path)
    else:
        token = os.environ.get(serve.token_env, "").strip()
        where = f"${serve.token_env}"
    if not token:
        return None
    if len(token) < MIN_TOKEN:
        raise GatewayError(
            f"The gateway token in {where} has {len(token)} characters; use at least {MIN_TOKEN} "
            "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)."
        )
    return token


def _thread_env(threads: int) -> None:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(threads))


def limits_from(config: ProjectConfig, **overrides: Any) -> ConnectionLimits:
    """The connection limits: keyword overrides, else ``serve:`` settings, else the defaults."""
    serve = config.serve
    defaults = ConnectionLimits()
    values: dict[str, Any] = {}
    for name in ConnectionLimits.__dataclass_fields__:
        given = overrides.get(name)
        values[name] = given if given is not None else getattr(serve, name, getattr(defaults, name))
    return ConnectionLimits(**values)


def uvicorn_options(
    config: ProjectConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
    keep_alive_seconds: int | None = None,
    backlog: int | None = None,
) -> dict[str, Any]:
    """The uvicorn settings every gateway process runs with (``serve`` and tests share them)."""
    serve = config.serve
    return {
        "host": host,
        "port": port,
        "loop": "uvloop",
        "http": "conveyor.gateway.server:GuardedHttpProtocol",
        "ws": "none",  # the gateway speaks no WebSocket; an upgrade is answered as plain HTTP
        "access_log": False,
        "log_level": log_level,
        "lifespan": "on",
        "timeout_graceful_shutdown": 30,
        "timeout_keep_alive": keep_alive_seconds or getattr(serve, "keep_alive_seconds", 5),
        "backlog": backlog or getattr(serve, "backlog", 2048),
        "server_header": False,
    }


def serve(
    config: ProjectConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    token_file: Path | None = None,
    log_level: str = "info",
    header_timeout: float | None = None,
    body_timeout: float | None = None,
    max_header_bytes: int | None = None,
    max_headers: int | None = None,
    max_connections: int | None = None,
    keep_alive_seconds: int | None = None,
    backlog: int | None = None,
) -> None:
    """Run the gateway until interrupted (SIGINT/SIGTERM finish in-flight requests first).

    Keyword limits left at None come from ``serve:`` in conveyor.yaml, else the defaults of
    ``ConnectionLimits``.

    Raises:
        GatewayError: the token is unusable, or another process listens on the port.
    """
    import uvicorn

    token = load_token(config, token_file)
    if token is None and not _is_loopback(host):
        sys.stderr.write(
            f"Warning: serving on {host}, reachable from other machines, with no admin token: "
            "anyone who reaches the port can send predictions, and the admin and feedback "
            "endpoints stay disabled. Put an authenticating proxy in front, and pass "
            f"--token-file FILE (or set ${config.serve.token_env}) to enable the admin API.\n"
        )
    _check_port_free(host, port)
    _thread_env(config.serve.threads)
    limits = limits_from(
        config,
        header_timeout=header_timeout,
        body_timeout=body_timeout,
        max_header_bytes=max_header_bytes,
        max_headers=max_headers,
        max_connections=max_connections,
    )
    options = uvicorn_options(
        config,
        host=host,
        port=port,
        log_level=log_level,
        keep_alive_seconds=keep_alive_seconds,
        backlog=backlog,
    )
    if workers <= 1:
        from conveyor.gateway.app import Gateway

        single = uvicorn.Config(Gateway(config, token=token), **options)
        setattr(single, _LIMITS_ATTR, limits)
        uvicorn.Server(single).run()
        return
    from uvicorn.supervisors import Multiprocess

    os.environ[_CONFIG_ENV] = str(config.file)
    os.environ[_SUPERVISOR_ENV] = str(os.getpid())
    if token_file is not None:
        os.environ["CONVEYOR_SERVE_TOKEN_FILE"] = str(token_file)
    with tempfile.TemporaryDirectory(prefix="conveyor-metrics-") as metrics_dir:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        multi = uvicorn.Config(
            "conveyor.gateway.server:worker_app", factory=True, workers=workers, **options
        )
        setattr(multi, _LIMITS_ATTR, limits)  # pickled with the config into each worker
        sock = multi.bind_socket()
        try:
            Multiprocess(multi, sockets=[sock]).run()
        except KeyboardInterrupt:
            pass
        finally:
            sock.close()


def worker_app() -> Any:
    """The app factory each worker process calls (``serve`` passed the config path)."""
    from conveyor.config import load_config
    from conveyor.gateway.app import Gateway

    supervisor = os.environ.get(_SUPERVISOR_ENV)
    if supervisor:
        die_with_parent(int(supervisor))
    config = load_config(Path(os.environ[_CONFIG_ENV]))
    token_file = os.environ.get("CONVEYOR_SERVE_TOKEN_FILE")
    token = load_token(config, Path(token_file) if token_file else None)
    return Gateway(config, token=token)


# -- workers die with their supervisor -------------------------------------------------------

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int, *, check_seconds: float = 1.0, grace: float = 45.0) -> None:
    """Stop this process (SIGTERM: a graceful stop that flushes the log) when ``parent`` dies.

    Linux delivers the signal itself (``PR_SET_PDEATHSIG``); a daemon thread polling
    ``os.getppid()`` covers other systems and the moment before the prctl call. If the graceful
    stop has not ended the process ``grace`` seconds later, it exits hard.
    """
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        except (OSError, AttributeError):
            pass  # no prctl here: the watchdog below still notices

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(check_seconds)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace)
        os._exit(1)

    threading.Thread(target=watch, name="conveyor-parent-watch", daemon=True).start()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_port_free(host: str, port: int) -> None:
    """Fail before loading anything when another process listens on the port, naming it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            holder = _port_holder(port)
            who = f" by {holder}" if holder else ""
            raise GatewayError(
                f"Port {port} on {host} is taken{who} ({exc.strerror}): stop that process "
                "(a gateway still running, or workers left by one that was killed) or pass "
                "another --port."
            ) from None


def _port_holder(port: int) -> str | None:
    """The pid and command line listening on ``port``, read from /proc (Linux; best effort)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if (
                len(fields) > 9
                and fields[3] == "0A"
                and int(fields[1].rsplit(":", 1)[1], 16) == port
            ):
                inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return None
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") in inodes for fd in fds):
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                return f"pid {pid} ({cmd.decode(errors='replace').strip()[:120]})"
        except OSError:
            continue
    return None


# -- the guarded HTTP protocol ---------------------------------------------------------------


def __getattr__(name: str) -> Any:
    # Built on first use so that importing this module (the CLI, load_token) skips uvicorn.
    if name == "GuardedHttpProtocol":
        return _guarded_protocol()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _HeadTooLarge(Exception):
    pass


@lru_cache(maxsize=1)
def _guarded_protocol() -> type:
    import httptools
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class GuardedHttpProtocol(HttpToolsProtocol):
        """uvicorn's httptools protocol with a head deadline, head limits, a body idle timeout
        and a connection cap that evicts the connection idle longest."""

        def __init__(self, config: Any, server_state: Any, app_state: Any, _loop: Any = None):
            super().__init__(config, server_state, app_state, _loop)
            self.limits: ConnectionLimits = getattr(config, _LIMITS_ATTR, None) or (
                ConnectionLimits()
            )
            self.cap = _cap_for(self.limits)
            # Connections waiting for a request's head, oldest first (insertion order).
            waiting = getattr(server_state, "conveyor_waiting", None)
            if waiting is None:
                waiting = {}
                server_state.conveyor_waiting = waiting
            self.waiting: dict[Any, None] = waiting
            self.timer: asyncio.TimerHandle | None = None
            self.head_open = False
            self.head_bytes = 0
            self.head_parsed = 0
            self.header_count = 0
            self.too_large: str | None = None

        # -- connection lifecycle --
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            if len(self.connections) > self.cap:
                victim = next(iter(self.waiting), None)
                if victim is None:  # every connection is busy with a request: refuse this one
                    self.connections.discard(self)
                    self._answer(503, "The gateway has too many open connections; retry.")
                    return
                victim._drop()
            self._await_head()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_timer()
            self.waiting.pop(self, None)
            super().connection_lost(exc)

        def _drop(self) -> None:
            self.connections.discard(self)  # now, not when the loop reports the close
            self.waiting.pop(self, None)
            self._cancel_timer()
            self.transport.close()

        def _await_head(self) -> None:
            self.waiting.pop(self, None)  # to the end: the order is by time spent waiting
            self.waiting[self] = None
            self._set_timer(self.limits.header_timeout, self._head_late)

        def _set_timer(self, seconds: float, callback: Any) -> None:
            self._cancel_timer()
            self.timer = self.loop.call_later(seconds, callback)

        def _cancel_timer(self) -> None:
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None

        def _head_late(self) -> None:
            self.timer = None
            if self.transport.is_closing():
                return
            if self.head_open:
                self._answer(408, "The request head did not arrive in time.")
            else:
                self._drop()

        def _body_late(self) -> None:
            self.timer = None
            if self.transport.is_closing() or self.cycle is None or not self.cycle.more_body:
                return
            if self.flow.read_paused:  # the app is not reading: not the client's delay
                self._set_timer(self.limits.body_timeout, self._body_late)
                return
            self._drop()  # the app's receive() sees a disconnect

        def _answer(self, status: int, message: str) -> None:
            from http import HTTPStatus

            body = message.encode()
            self.transport.write(
                b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n%s"
                % (status, HTTPStatus(status).phrase.encode(), len(body), body)
            )
            self._drop()

        # -- parsing --
        def data_received(self, data: bytes) -> None:
            self._unset_keepalive_if_required()
            was_open = self.head_open
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserUpgrade:
                self._unsupported_upgrade_warning()
                return
            except httptools.HttpParserError:
                if self.too_large is not None:
                    self._answer(431, self.too_large)
                    return
                message = "Invalid HTTP request received."
                self.logger.warning(message)
                self.send_400_response(message)
                return
            if was_open and self.head_open:  # the whole chunk was part of an unfinished head
                self.head_bytes += len(data)
                if self.head_bytes > self.limits.max_header_bytes:
                    self._answer(431, self._head_message())

        def _head_message(self) -> str:
            return (
                f"The request head is over {self.limits.max_header_bytes} bytes or "
                f"{self.limits.max_headers} header fields."
            )

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self.head_open = True
            self.head_bytes = self.head_parsed = self.header_count = 0

        def on_url(self, url: bytes) -> None:
            super().on_url(url)
            self.head_parsed += len(url)
            self._check_head()

        def on_header(self, name: bytes, value: bytes) -> None:
            super().on_header(name, value)
            self.header_count += 1
            self.head_parsed += len(name) + len(value) + 4
            self._check_head()

        def _check_head(self) -> None:
            if (
                self.head_parsed > self.limits.max_header_bytes
                or self.header_count > self.limits.max_headers
            ):
                self.too_large = self._head_message()
                raise _HeadTooLarge(self.too_large)

        def on_headers_complete(self) -> None:
            self.head_open = False
            self.waiting.pop(self, None)
            self._cancel_timer()
            super().on_headers_complete()
            self._set_timer(self.limits.body_timeout, self._body_late)

        def on_body(self, body: bytes) -> None:
            super().on_body(body)
            if self.timer is not None:
                self._set_timer(self.limits.body_timeout, self._body_late)

        def on_message_complete(self) -> None:
            self._cancel_timer()
            super().on_message_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self.transport.is_closing():
                return
            if not self.pipeline and (self.cycle is None or self.cycle.response_complete):
                self._await_head()  # the next head (perhaps begun already) has its deadline

    GuardedHttpProtocol.__module__ = __name__
    return GuardedHttpProtocol


_caps: dict[ConnectionLimits, int] = {}


def _cap_for(limits: ConnectionLimits) -> int:
    cap = _caps.get(limits)
    if cap is None:
        cap = _caps[limits] = limits.connection_cap()
    return cap
