"""The request log's writer process: the gateway worker hands it batches of requests through a
pipe and it writes the log's Parquet files, so the worker never loads PyArrow nor parses a batch
under its own GIL (the one-client p99 and the worker's memory; benchmarks/results/gateway-lean.md).
"""

from __future__ import annotations

import builtins
import os
import subprocess
import sys
import threading
from typing import TYPE_CHECKING, Any

import orjson

from conveyor.exceptions import GatewayError
from conveyor.store.predictionlog.files import (
    LogFiles,
)

if TYPE_CHECKING:
    pass

from conveyor.gateway.logtables import text_sizes, write_feedback, write_requests

_TRIM_AFTER_BYTES = 2 * 1024 * 1024  # a batch this large leaves enough freed heap to hand back

__all__ = ["WriterProcess", "release_freed_heap", "serve"]


class WriterProcess:
    """A child process that turns batches of requests into the log's files, so the gateway
    worker never loads PyArrow (50 MB resident, and the JSON parsing of each batch: up to
    ~100 MB while it runs) and its event loop never waits for the writer's GIL.

    One per ``RequestLog``, started on first use. Each call sends one length-prefixed JSON
    frame down the child's stdin and waits for its answer, so RequestLog's thread knows a file
    was written (or why not) exactly as when it wrote the file itself: rows stay buffered until
    the child says their file exists. The child writes each file atomically (``LogFiles``); if
    it dies, the call raises ``OSError`` (the rows stay buffered) and the next call starts a
    new one. If the gateway dies, the child reads end-of-file, finishes the file it is writing
    and exits. Cost: a second interpreter per worker (77 MB resident at start, 91 MB after light
    traffic, ~150 MB under a 100-row flood; benchmarks/results/gateway-lean.md) and one copy of
    each batch through a pipe.
    """

    def __init__(self, *, idle: bool = False) -> None:
        self.idle = idle  # serve.log.writer_priority: idle
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def call(self, op: str, **args: Any) -> Any:
        """Run ``op`` in the child; returns its result.

        Raises:
            OSError: the child's file-system error (its type kept where it is a built-in one),
                or the child died or could not start.
            GatewayError: any other error the child met.
        """
        frame = orjson.dumps({"op": op, **args})
        with self._lock:
            proc = self._start()
            assert proc.stdin is not None and proc.stdout is not None
            try:
                proc.stdin.write(len(frame).to_bytes(8, "little"))
                proc.stdin.write(frame)  # not concatenated: a batch's frame is megabytes
                proc.stdin.flush()
                reply = _read_frame(proc.stdout)
            except (OSError, EOFError, ValueError) as exc:
                self._end(kill=True)
                raise OSError(f"The request log's writer process stopped: {exc}") from exc
        if "error" not in reply:
            return reply["result"]
        kind = getattr(builtins, reply["error"], None)
        if isinstance(kind, type) and issubclass(kind, OSError):
            raise kind(reply["message"])
        if reply.get("oserror"):
            raise OSError(f"{reply['error']}: {reply['message']}")
        raise GatewayError(f"The request log's writer failed: {reply['error']}: {reply['message']}")

    def start(self) -> None:
        """Start the child now rather than on the first call.

        Raises:
            OSError: the child cannot be started.
        """
        with self._lock:
            self._start()

    def stop(self) -> None:
        """Close the child's input and wait for it to finish what it was writing."""
        with self._lock:
            self._end(kill=False)

    def _start(self) -> subprocess.Popen[bytes]:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        self._end(kill=True)
        # the folder holding the conveyor package this module was imported from
        source = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        path = os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH")) if p)
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                f"from conveyor.gateway.logwriter import serve; serve(idle={self.idle})",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": path},
        )
        return self._proc

    def _end(self, *, kill: bool) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if kill:
            proc.kill()
        for stream in (proc.stdin, proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _read_frame(stream: Any) -> Any:
    head = stream.read(8)
    if len(head) < 8:
        raise EOFError("end of stream") if not head else ValueError("a cut frame")
    size = int.from_bytes(head, "little")
    body = stream.read(size)
    if len(body) < size:
        raise ValueError("a cut frame")
    return orjson.loads(body)


def serve(*, idle: bool = False) -> None:
    """The writer process's loop (``WriterProcess`` starts it): one frame in, one answer out,
    until its input ends. Its stdout carries only answers: anything printed goes to stderr.
    It ignores SIGINT and SIGTERM: a Ctrl-C or a stop sent to the gateway's process group must
    not cut it off before the gateway's last flush; it ends when the gateway closes the pipe
    (or dies)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if idle:
        _yield_to_the_worker()
    import pyarrow.parquet  # noqa: F401  (loaded before the first batch arrives, not after)

    inp = sys.stdin.buffer
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    roots: dict[str, LogFiles] = {}
    while True:
        try:
            request = _read_frame(inp)
        except (EOFError, ValueError):
            return
        files = roots.get(request["root"])
        if files is None:
            files = roots[request["root"]] = LogFiles(request["root"])
        try:
            reply: dict[str, Any] = {"result": _run(files, request)}
        except Exception as exc:
            reply = {"error": type(exc).__name__, "message": str(exc),
                     "oserror": isinstance(exc, OSError)}  # fmt: skip
        frame = orjson.dumps(reply)
        out.write(len(frame).to_bytes(8, "little") + frame)
        out.flush()
        if request["op"] == "requests" and sum(text_sizes(request["entries"])) >= _TRIM_AFTER_BYTES:
            del request
            release_freed_heap()


def _yield_to_the_worker() -> None:
    """Run only when the CPU is otherwise idle (``SCHED_IDLE``; nice 19 where that is refused),
    so a request never waits for the writer (``serve.log.writer_priority: idle``).

    The writer shares the worker's cores when the gateway is pinned (``taskset``, a container's
    CPU limit). Measured on one pinned core with one client sending 1-row requests as fast as
    it can (benchmarks/results/gateway-lean.md): at the worker's own priority a Parquet encode
    held the core while requests waited, p99 2.9-3.6 ms (0.35-0.52 ms with the log off); at
    nice 19, 2.0-2.2 ms; at ``SCHED_IDLE``, 0.6-1.2 ms, and throughput back to the log-off
    figure. Where a core is free the writer gets all it needs. Under a flood that keeps every
    core of the gateway busy it gets only the gaps: the buffer then fills and rows are dropped
    and counted (``conveyor_request_log_dropped_total``), never requests; 10 s of 100-row
    requests from 8 clients on one core lost 16,454 of 18,186 requests' rows. Hence opt-in.
    """
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (OSError, AttributeError):
        try:
            os.nice(19 - os.nice(0))
        except OSError:  # not permitted here: run at the inherited priority
            pass


def _run(files: LogFiles, request: dict[str, Any]) -> Any:
    op = request["op"]
    if op == "requests":
        signature = request["signature"]
        entries = [tuple(e) for e in request["entries"]]
        return write_requests(
            files, entries, lambda _m, _v: signature, request["gateway"], name=request["name"]
        )
    if op == "feedback":
        items = [(rid, labels) for rid, labels in request["items"]]
        return write_feedback(files, items, request["actor"], request["gateway"])
    if op == "merge":
        from conveyor.store.predictionlog.maintenance import merge_files

        return merge_files(files, request["folder"], request["names"]) is not None
    if op == "find":
        from conveyor.store.predictionlog.query import find_requests

        return sorted(find_requests(files, request["ids"]))
    raise ValueError(f"unknown operation {op!r}")


def release_freed_heap() -> bool:
    """Hand the heap that buffered rows freed back to the system; True if it could.

    glibc keeps freed small blocks in its arenas, so after a burst of 100-row requests filled
    the buffer (up to ``serve.log.max_buffer_mb``) the worker would hold that peak for good.
    ``malloc_trim`` returns it; it runs in the writer thread, outside the GIL (ctypes releases
    it), only once a burst has drained. Other C libraries (musl, macOS) have no such call.
    """
    global _TRIM
    if _TRIM is None:
        try:
            import ctypes

            _TRIM = ctypes.CDLL(None).malloc_trim
        except (OSError, AttributeError):
            _TRIM = False
    if _TRIM is False:
        return False
    _TRIM(0)
    return True


_TRIM: Any = None
