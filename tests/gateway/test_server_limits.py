"""Connection limits of the served gateway (``GuardedHttpProtocol``), on real sockets.

Each test serves a project with no models (``/healthz`` answers without one) through the same
uvicorn options as ``conveyor serve``, with limits small enough to watch them act in a second.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor.exceptions import GatewayError
from conveyor.gateway.server import ConnectionLimits, serve, uvicorn_options
from tests.gateway.servers import free_port, gateway_project, load, wait_ready, write_project


@contextlib.contextmanager
def guarded(root: Path, limits: ConnectionLimits, config: Any = None) -> Iterator[str]:
    """Serve ``config`` (default: an empty project) on 127.0.0.1 in a thread; yields its URL."""
    import uvicorn

    from conveyor.gateway.app import Gateway

    config = config or load(write_project(root))
    port = free_port()
    options = uvicorn_options(config, port=port, log_level="warning")
    options["loop"] = "asyncio"  # a thread of the test process; the protocol is the same
    uconfig = uvicorn.Config(Gateway(config, token=None), **options)
    uconfig.conveyor_limits = limits  # type: ignore[attr-defined]
    server = uvicorn.Server(uconfig)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def connect(url: str) -> socket.socket:
    port = int(url.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    return sock


def read_all(sock: socket.socket, timeout: float) -> tuple[bytes, float]:
    """What the server sends until it closes the connection, and how long that took."""
    sock.settimeout(timeout)
    started = time.monotonic()
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    return data, time.monotonic() - started


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server has closed this connection (without waiting)."""
    sock.setblocking(False)
    try:
        return sock.recv(65536) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
    finally:
        sock.setblocking(True)


def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(
    tmp_path: Path,
) -> None:
    with guarded(tmp_path / "p", ConnectionLimits(header_timeout=0.5)) as url:
        sock = connect(url)
        data, took = read_all(sock, timeout=5)
        assert data == b"" and 0.4 < took < 2.0
        sock.close()


def test_a_head_sent_one_byte_at_a_time_gets_408_at_the_deadline(tmp_path: Path) -> None:
    with guarded(tmp_path / "p", ConnectionLimits(header_timeout=1.0)) as url:
        sock = connect(url)
        started = time.monotonic()
        head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
        closed = False
        for byte in head:  # a slowloris client: every byte in time for an idle timeout
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            time.sleep(0.05)
            if time.monotonic() - started > 3:
                break
        data, _ = read_all(sock, timeout=5)
        assert closed or data.startswith(b"HTTP/1.1 408 ")
        assert time.monotonic() - started < 3.5
        sock.close()


def test_keep_alive_requests_and_a_prompt_head_are_unaffected(tmp_path: Path) -> None:
    with guarded(tmp_path / "p", ConnectionLimits(header_timeout=0.5)) as url:
        with httpx.Client() as client:
            for _ in range(3):
                assert client.get(url + "/healthz").status_code == 200
                time.sleep(0.2)  # idle between requests, under the deadline each time
        sock = connect(url)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data, _ = read_all(sock, timeout=5)
        assert data.startswith(b"HTTP/1.1 200 ")
        sock.close()


@pytest.mark.parametrize(
    "head",
    [
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(40)),
        # never finished: the bytes still count
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Endless: " + b"a" * 20_000,
    ],
    ids=["one-big-header", "too-many-headers", "unfinished-head"],
)
def test_a_head_over_the_limits_gets_431(tmp_path: Path, head: bytes) -> None:
    limits = ConnectionLimits(max_header_bytes=8192, max_headers=32, header_timeout=5)
    with guarded(tmp_path / "p", limits) as url:
        sock = connect(url)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for i in range(0, len(head), 1000):  # several reads, as a real client's would be
                sock.sendall(head[i : i + 1000])
                time.sleep(0.01)
        data, took = read_all(sock, timeout=5)
        assert data.startswith(b"HTTP/1.1 431 "), data[:200]
        assert b"8192 bytes or 32 header fields" in data and took < 2
        sock.close()


def test_at_the_connection_cap_the_longest_idle_connection_makes_room(tmp_path: Path) -> None:
    with guarded(tmp_path / "p", ConnectionLimits(max_connections=20, header_timeout=60)) as url:
        idle = [connect(url) for _ in range(40)]
        time.sleep(0.3)
        with httpx.Client() as client:
            for _ in range(5):
                assert client.get(url + "/healthz", timeout=5).status_code == 200
        time.sleep(0.3)
        closed = [closed_by_server(s) for s in idle]
        # the first ones were evicted for the later ones; the newest are still open
        assert all(closed[:20]) and not any(closed[-10:]), closed
        for s in idle:
            s.close()


def test_a_body_that_stops_arriving_is_dropped_after_the_body_timeout(tmp_path: Path) -> None:
    config = gateway_project(tmp_path / "p")  # a served model, so that predict reads the body
    with guarded(tmp_path / "p", ConnectionLimits(body_timeout=0.5), config) as url:
        wait_ready(url)
        sock = connect(url)
        sock.sendall(
            b"POST /v1/models/num/predict HTTP/1.1\r\nHost: x\r\n"
            b'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"instances": ['
        )
        data, took = read_all(sock, timeout=5)
        assert b" 200 " not in data[:20] and took < 2.5
        sock.close()


def test_the_connection_cap_follows_the_descriptor_limit() -> None:
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert ConnectionLimits(max_connections=7).connection_cap() == 7
    cap = ConnectionLimits().connection_cap()
    assert 16 <= cap <= min(soft - 64, 10_000) or soft == resource.RLIM_INFINITY


def test_serving_beyond_loopback_without_a_token_warns(tmp_path: Path, capsys) -> None:
    config = load(write_project(tmp_path / "p"))
    # 192.0.2.1 (TEST-NET-1) is on no interface here: the bind fails after the warning
    with pytest.raises(GatewayError, match="192.0.2.1"):
        serve(config, host="192.0.2.1", port=free_port())
    err = capsys.readouterr().err
    assert "Warning: serving on 192.0.2.1" in err and "--token-file" in err


def test_a_taken_port_is_refused_naming_the_process_that_holds_it(tmp_path: Path, capsys) -> None:
    config = load(write_project(tmp_path / "p"))
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        with pytest.raises(GatewayError, match=rf"Port {port} .* taken by pid {os.getpid()} "):
            serve(config, port=port)
    finally:
        holder.close()
    assert "Warning" not in capsys.readouterr().err  # loopback: no warning
