"""Steady load on several gateways at once, and a watch on what each of them routes, for the
release benchmark (``benchmarks/release_bench.py``).

The load is an asyncio client on its own thread and event loop: ``concurrency`` workers, each
with one keep-alive connection per gateway, send single-row predictions back to back and take
the gateways in turn. Every request is kept as one tuple (send time, latency, gateway, status,
version, request id, error), so the figures are computed afterwards from what callers got.
Raw HTTP/1.1 on asyncio streams rather than httpx: the client shares two cores with the
gateways, and httpx would cost them several times the CPU per request.

Beside the load, one poller per gateway reads ``GET /v1/models/NAME/versions`` every 10 ms and
keeps each change of the environment's route with the time it was seen.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from suite.serving import BenchError

__all__ = ["Answer", "BenchError", "Gateway", "LoadRun", "Process", "wait_for"]


@dataclass(frozen=True)
class Gateway:
    """Where one gateway listens."""

    name: str
    port: int
    host: str = "127.0.0.1"


class Answer(NamedTuple):
    """One request as the caller saw it (times from ``time.time()``, latency in seconds)."""

    sent: float
    latency: float
    gateway: int
    status: int  # 0: no HTTP answer (connection refused, reset, timed out)
    version: int | None
    request_id: str | None
    error: str | None

    @property
    def answered(self) -> float:
        return self.sent + self.latency


class _Connection:
    """One keep-alive HTTP/1.1 connection; reopened on the next request after a failure."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(
                self.gateway.host, self.gateway.port
            )
        assert self.reader is not None
        self.writer.write(request)
        head = (await self.reader.readuntil(b"\r\n\r\n")).lower()
        status = int(head[9:12])
        at = head.find(b"\r\ncontent-length:")
        if at < 0:
            raise ValueError("an answer without content-length")
        length = int(head[at + 17 : head.index(b"\r\n", at + 2)])
        body = await self.reader.readexactly(length)
        if b"\r\nconnection: close" in head:
            self.close()
        return status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def _request(method: str, gateway: Gateway, path: str, body: bytes = b"") -> bytes:
    head = (
        f"{method} {path} HTTP/1.1\r\nhost: {gateway.host}:{gateway.port}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


_FAILURES = (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError)


@dataclass
class LoadRun:
    """Load and route pollers on a thread of their own, from ``start()`` until ``stop()``.

    Args:
        gateways: the gateways, taken in turn by every worker.
        model: the model's name (for the predict and versions paths).
        environment: the environment whose route the pollers keep.
        bodies: ``{"instances": [...]}`` request bodies, used round-robin.
        concurrency: workers, each with one request in flight.
        poll_seconds: how often each gateway's route is read.
        timeout: seconds before a request without an answer counts as failed.
    """

    gateways: list[Gateway]
    model: str
    environment: str
    bodies: list[bytes]
    concurrency: int = 8
    poll_seconds: float = 0.01
    timeout: float = 10.0
    answers: list[Answer] = field(default_factory=list)
    routes: list[list[tuple[float, dict[str, Any]]]] = field(default_factory=list)
    poll_times: list[list[float]] = field(default_factory=list)
    started_at: float = 0.0
    stopped_at: float = 0.0
    _running: bool = field(default=False, init=False, repr=False)
    _thread: threading.Thread | None = field(default=None, init=False, repr=False)
    _error: BaseException | None = field(default=None, init=False, repr=False)

    def start(self) -> None:
        """Start the workers and pollers; returns at once."""
        self.routes = [[] for _ in self.gateways]
        self.poll_times = [[] for _ in self.gateways]
        self._running = True
        self._thread = threading.Thread(target=self._main, name="release-load", daemon=True)
        self.started_at = time.time()
        self._thread.start()

    def stop(self) -> None:
        """Let every request in flight finish, then stop (a second call does nothing).

        Raises:
            BenchError: the load thread itself failed (not a request: those are recorded).
        """
        self._running = False
        if self._thread is None:  # never started, or stopped already
            return
        self._thread.join(self.timeout + 10)
        if self._thread.is_alive():
            raise BenchError("The load thread did not stop within its request timeout.")
        self._thread = None
        self.stopped_at = time.time()
        if self._error is not None:
            raise BenchError(f"The load generator failed: {self._error!r}") from self._error

    def route(self, gateway: int) -> dict[str, Any]:
        """The latest route seen at one gateway (``{}`` before the first poll)."""
        seen = self.routes[gateway]
        return seen[-1][1] if seen else {}

    def _main(self) -> None:
        try:
            import uvloop

            runner: Callable[[Any], Any] = uvloop.run
        except ImportError:
            runner = asyncio.run
        try:
            runner(self._gather())
        except BaseException as exc:  # reported by stop()
            self._error = exc

    async def _gather(self) -> None:
        tasks = [self._worker(i) for i in range(self.concurrency)]
        tasks += [self._poll(g) for g in range(len(self.gateways))]
        await asyncio.gather(*tasks)

    async def _worker(self, index: int) -> None:
        path = f"/v1/models/{self.model}/predict?env={self.environment}"
        requests = [[_request("POST", gw, path, b) for b in self.bodies] for gw in self.gateways]
        connections = [_Connection(gw) for gw in self.gateways]
        turn, body = index, index
        record = self.answers.append
        while self._running:
            g = turn % len(connections)
            turn += 1
            request = requests[g][body % len(self.bodies)]
            body += self.concurrency
            sent, began = time.time(), time.perf_counter()
            version = rid = error = None
            try:
                async with asyncio.timeout(self.timeout):
                    status, payload = await connections[g].exchange(request)
                if status == 200:
                    answer = orjson.loads(payload)
                    version, rid = answer["version"], answer["request_id"]
            except _FAILURES as exc:
                status, error = 0, type(exc).__name__
                connections[g].close()
                await asyncio.sleep(0.01)  # a refused connection would otherwise spin
            record(Answer(sent, time.perf_counter() - began, g, status, version, rid, error))
        for connection in connections:
            connection.close()

    async def _poll(self, g: int) -> None:
        gateway = self.gateways[g]
        request = _request("GET", gateway, f"/v1/models/{self.model}/versions")
        connection = _Connection(gateway)
        last: bytes | None = None
        while self._running:
            began = time.perf_counter()
            try:
                async with asyncio.timeout(self.timeout):
                    status, payload = await connection.exchange(request)
                if status == 200:
                    envs = orjson.loads(payload)["environments"]
                    state = envs.get(self.environment) or {"missing": True}
                else:
                    state = {"status": status}
            except _FAILURES as exc:
                state = {"error": type(exc).__name__}
                connection.close()
            seen = time.time()  # the answer's time: the route held at least until now
            self.poll_times[g].append(seen)
            key = orjson.dumps(state, option=orjson.OPT_SORT_KEYS)
            if key != last:
                self.routes[g].append((seen, state))
                last = key
            await asyncio.sleep(max(0.0, self.poll_seconds - (time.perf_counter() - began)))
        connection.close()


def wait_for(predicate: Callable[[], Any], what: str, timeout: float, step: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something true.

    Raises:
        BenchError: ``timeout`` seconds passed first; ``what`` names what was awaited.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise BenchError(f"Timed out after {timeout:g} s waiting for {what}.")


class Process:
    """A long-running command (a gateway, the controller), its output in a log file, stopped
    with SIGTERM so that it shuts down as it would under a process manager."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.exit_code: int | None = None
        self.stop_seconds: float | None = None
        self.killed = False  # SIGTERM was not enough

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        """Raises: BenchError: the process exited (its log's tail is in the message)."""
        if self.proc is not None and self.proc.poll() is not None:
            raise BenchError(f"{self.name} exited with code {self.proc.returncode}: {self.tail()}")

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, wait up to ``timeout`` (then SIGKILL); returns the exit code."""
        if self.proc is None:
            return self.exit_code
        began = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
                self.killed = True
        self.stop_seconds = time.monotonic() - began
        self.exit_code = self.proc.returncode
        self.proc = None
        return self.exit_code

    def tail(self, chars: int = 1500) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:].strip() or "(empty log)"
        except OSError:
            return "(no log)"
