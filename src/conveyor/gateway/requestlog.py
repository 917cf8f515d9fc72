"""The request log: a sampled record of what each served request sent and got, and labels later.

``record`` is called on the hot path and only appends a tuple to a deque. A writer thread hands
the buffered requests to a writer process (``WriterProcess``: the worker itself never loads
PyArrow), which turns them into Parquet files of the prediction log
(``conveyor.store.predictionlog``; the layout is in docs/prediction-log.md): one file per flush
and per model, environment, day and version, with one typed column per signature input, written
atomically and never appended to. It flushes when ``flush_rows`` rows wait or the oldest has
waited ``flush_seconds``, so the log is shared by every replica writing under the same artifact
store and costs the event loop microseconds. Inputs that do not fit the version's signature are
kept as their JSON text (``raw_inputs``), which the monitor checks row by row as it always did.

Memory and disk are bounded in bytes, not only rows: an input or output text longer than
``max_input_bytes``/``max_output_bytes`` is stored as a small JSON marker with its original
length (``{"truncated": true, "chars": N}``, which the monitor skips as "not a list of rows"),
a 4xx request's inputs are not stored unless ``client_error_inputs`` (its error text is), and
the buffer holds at most ``max_buffer`` rows and ``max_buffer_bytes`` of text; past either,
rows are dropped and counted, never the requests themselves.

What a crash loses: the rows buffered at that moment, which is one ``flush_seconds`` of
requests plus those that arrived while the write in progress ran, and never more than the
buffer bounds; ``pending()`` says how many there are now. A file being written when the process
dies is a temp file that readers skip, never a truncated one. A clean stop flushes everything.
While the log cannot be written the writer backs off (up to 30 s) and logs one line per
``error_log_seconds`` with the number of failures it did not log.
"""

from __future__ import annotations

import builtins
import logging
import os
import random
import subprocess
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from conveyor.exceptions import GatewayError, InvalidInput, RegistryError
from conveyor.store.predictionlog import layout
from conveyor.store.predictionlog.files import (
    LogFiles,
    bool_array,
    float32_lists,
    inferred_array,
    number_array,
    string_array,
    time_array,
)

if TYPE_CHECKING:
    import numpy
    import pyarrow as pa

    from conveyor.store.metadata import Store

__all__ = [
    "ErrorThrottle",
    "RequestLog",
    "Signatures",
    "WriterProcess",
    "migrate_tables",
    "requests_table",
    "serve",
    "write_feedback",
    "write_requests",
]

log = logging.getLogger("conveyor.gateway")


_ROW_OVERHEAD = 200  # bytes a buffered row costs besides its texts (tuple, ids, numbers)
_BATCH_BYTES = 8 * 1024 * 1024  # one table build's text at most: bounds the writer's peak memory
_RECENT_IDS = 100_000  # request ids this gateway wrote, kept to answer feedback without a read
_MERGE_MAX_AGE_S = 1800.0  # older own files are left to 'conveyor log compact' (takes > 1 h)

# A buffered request: (request_id, time, model, version, environment, role, status, latency_ms,
# rows, inputs, outputs), and optionally its gateway (rows moved from the old table carry one).
Entry = tuple[Any, ...]
Signatures = Callable[[str, int], "dict[str, Any] | None"]


class RequestLog:
    """Buffered appends of request rows (and feedback) to the prediction log's files."""

    def __init__(
        self,
        store: Store,
        *,
        gateway: str,
        sample: float = 1.0,
        flush_rows: int = 100_000,
        flush_seconds: float = 1.0,
        max_buffer: int = 200_000,
        max_buffer_bytes: int = 64 * 1024 * 1024,
        max_input_bytes: int = 256 * 1024,
        max_output_bytes: int = 256 * 1024,
        client_error_inputs: bool = False,
        error_log_seconds: float = 30.0,
        on_drop: Callable[[int], None] | None = None,
        log_url: str | None = None,
        merge_seconds: float = 300.0,
    ) -> None:
        """Describe the log; nothing is opened or written until ``start``/``flush``.

        ``log_url`` is the log's root; by default the one attached to ``store`` by
        ``open_stores`` or the gateway (``layout.attach``). Every ``merge_seconds`` the writer
        merges the files it wrote since into one per partition (``merge_own``), so a day holds
        hundreds of files per gateway, not one per flush.
        """
        self.store = store
        self.gateway = gateway
        self.sample = sample
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self.max_buffer = max_buffer
        self.max_buffer_bytes = max_buffer_bytes
        self.max_input_bytes = max_input_bytes
        self.max_output_bytes = max_output_bytes
        self.client_error_inputs = client_error_inputs
        self.log_url = log_url
        self._on_drop = on_drop
        self._buffer: deque[Entry] = deque()
        # Two counters, each written by one thread only (record: the event loop; flush: the
        # writer), so no lock is needed: the buffered bytes are their difference.
        self._bytes_in = 0
        self._bytes_out = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._flushing = threading.Lock()
        self._thread: threading.Thread | None = None
        self._random = random.random
        self._errors = ErrorThrottle(log, error_log_seconds)
        self._files: LogFiles | None = None
        self._writer = WriterProcess()
        weakref.finalize(self, self._writer.stop)  # a log dropped without close() ends its child
        self._signatures: dict[tuple[str, int], dict[str, Any] | None] = {}
        self._recent: dict[str, None] = {}
        self.merge_seconds = merge_seconds
        self._mine: dict[str, list[tuple[str, float]]] = {}  # folder -> (file, written at)
        self._merged_at = time.monotonic()
        self.written = 0
        self.files_written = 0
        self.dropped = 0
        self.truncated = 0
        self.last_error: str | None = None

    @property
    def files(self) -> LogFiles:
        """The log's files (the root resolved on first use).

        Raises:
            GatewayError: no root was given and none is attached to the store.
        """
        if self._files is None:
            url = self.log_url or layout.location(self.store)
            if url is None:
                raise GatewayError(
                    "The request log has no place to write: pass log_url, or open the store "
                    "with open_stores() (which attaches <artifacts>/prediction-log/v1)."
                )
            self._files = LogFiles(url)
        return self._files

    def sampled(self) -> bool:
        """Whether to log this request (decided before its inputs are serialised)."""
        return self.sample >= 1.0 or self._random() < self.sample

    def record(
        self,
        request_id: str,
        model: str,
        version: int,
        environment: str,
        role: str,
        status: int,
        latency_ms: float,
        rows: int,
        inputs: str,
        outputs: str,
    ) -> None:
        """Queue one row; never blocks and never raises."""
        if 400 <= status < 500 and not self.client_error_inputs:
            inputs = ""
        if len(inputs) > self.max_input_bytes:
            inputs = _marker(inputs)
            self.truncated += 1
        if len(outputs) > self.max_output_bytes:
            outputs = _marker(outputs)
            self.truncated += 1
        size = len(inputs) + len(outputs) + _ROW_OVERHEAD
        if (
            len(self._buffer) >= self.max_buffer
            or self._bytes_in - self._bytes_out + size > self.max_buffer_bytes
        ):
            self.dropped += 1
            if self._on_drop is not None:
                self._on_drop(1)
            return
        self._bytes_in += size
        self._buffer.append(
            (
                request_id,
                time.time(),
                model,
                version,
                environment,
                role,
                status,
                latency_ms,
                rows,
                inputs,
                outputs,
            )
        )
        if len(self._buffer) >= self.flush_rows:
            self._wake.set()

    def start(self) -> None:
        """Start the writer process (so the first flush does not wait for it to load PyArrow)
        and the writer thread."""
        try:
            self._writer.start()
        except OSError as exc:  # the first flush tries again, and reports it
            log.warning("request log: cannot start the writer process yet: %s", exc)
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._loop, name="conveyor-request-log", daemon=True
            )
            self._thread.start()

    def close(self, timeout: float = 30.0) -> None:
        """Stop the writer after flushing everything buffered."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        try:
            self.flush()
            if self._mine:
                self.merge_own()
        finally:
            self._writer.stop()

    def pending(self) -> int:
        """Rows buffered, not yet in the log."""
        return len(self._buffer)

    def pending_bytes(self) -> int:
        """Bytes of buffered rows (their texts plus a fixed overhead each)."""
        return self._bytes_in - self._bytes_out

    def flush(self) -> int:
        """Write what is buffered now, one file per model, environment, day and version of each
        batch; returns the rows written.

        Raises:
            Exception: the file system's error when a file cannot be written (its rows stay
                buffered; files already written are not written again).
        """
        total = 0
        with self._flushing:
            while self._buffer:
                batch: list[Entry] = []
                size = 0
                while self._buffer and len(batch) < self.flush_rows and size < _BATCH_BYTES:
                    row = self._buffer.popleft()
                    batch.append(row)
                    size += len(row[9]) + len(row[10]) + _ROW_OVERHEAD
                self._bytes_out += size
                try:
                    self._write(batch)
                except _Unwritten as exc:  # the log is unreachable: keep the rows, retry later
                    rest = exc.rest
                    self._buffer.extendleft(reversed(rest))
                    self._bytes_out -= sum(len(r[9]) + len(r[10]) + _ROW_OVERHEAD for r in rest)
                    cause = exc.__cause__ or exc
                    self.last_error = f"{type(cause).__name__}: {cause}"
                    self._errors.failed(
                        "request log: cannot write %d rows yet (%d buffered): %s",
                        len(rest),
                        len(self._buffer),
                        cause,
                    )
                    raise cause from None
                total += len(batch)
        if total:
            self._errors.recovered("request log: writing again")
        return total

    def _write(self, batch: list[Entry]) -> None:
        groups = _groups(batch)
        keys = list(groups)
        for i, key in enumerate(keys):
            try:
                folder, name = _target(self.files, groups[key], self.gateway)
                first = groups[key][0]
                written = self._writer.call(
                    "requests",
                    root=self.files.root,
                    name=name,
                    entries=groups[key],
                    signature=self._signature(first[2], first[3]),
                    gateway=self.gateway,
                )
            except Exception as exc:
                rest = [e for k in keys[i:] for e in groups[k]]
                raise _Unwritten(rest) from exc
            self.files_written += 1
            self.written += written
            self._mine.setdefault(folder, []).append((name, time.monotonic()))
            for entry in groups[key]:
                self._remember(entry[0])
        self.last_error = None

    def merge_own(self) -> int:
        """Merge the files this writer wrote since the last merge into one per partition;
        returns the files merged. Only its own, and only young ones (under half an hour):
        ``conveyor log compact`` takes files older than an hour, so no file is merged twice."""
        merged = 0
        now = time.monotonic()
        for folder in list(self._mine):
            names = [n for n, at in self._mine.pop(folder) if now - at < _MERGE_MAX_AGE_S]
            if len(names) < 2:
                continue
            try:
                if self._writer.call("merge", root=self.files.root, folder=folder, names=names):
                    merged += len(names)
            except Exception as exc:  # the files stay as they are: still correct, only more
                log.warning("request log: cannot merge %d files in %s: %s", len(names), folder, exc)
        self._merged_at = now
        return merged

    def _remember(self, request_id: str) -> None:
        recent = self._recent
        recent[request_id] = None
        if len(recent) > _RECENT_IDS:
            del recent[next(iter(recent))]

    def _signature(self, model: str, version: int) -> dict[str, Any] | None:
        key = (model, version)
        if key not in self._signatures:
            self._signatures[key] = _stored_signature(self.store, model, version)
        return self._signatures[key]

    def _loop(self) -> None:
        backoff = self.flush_seconds
        while not self._stop.is_set():
            if backoff > self.flush_seconds:
                # Backing off after a failure: a full buffer's wake-ups must not turn this
                # into a retry (and a log line) per request.
                self._stop.wait(backoff)
            else:
                self._wake.wait(backoff)
            self._wake.clear()
            try:
                self.flush()
                backoff = self.flush_seconds
            except Exception:
                backoff = min(max(backoff * 2, self.flush_seconds * 2), 30.0)
                continue
            if time.monotonic() - self._merged_at >= self.merge_seconds:
                self.merge_own()

    def add_feedback(self, items: list[tuple[str, str]], actor: str) -> int:
        """Store labels: (request id, JSON array of labels) pairs, as one feedback file."""
        return int(
            self._writer.call(
                "feedback", root=self.files.root, items=items, actor=actor, gateway=self.gateway
            )
        )

    def known_requests(self, request_ids: list[str]) -> set[str]:
        """Which of these request ids are in the log: buffered, written by this gateway lately,
        or found in the log's files of the last days (written by any gateway)."""
        wanted = set(request_ids)
        found = {item[0] for item in list(self._buffer) if item[0] in wanted}
        found |= {rid for rid in wanted - found if rid in self._recent}
        rest = wanted - found
        if rest:
            found |= set(self._writer.call("find", root=self.files.root, ids=sorted(rest)))
        return found


# -- the writer process --------------------------------------------------------------------------


class WriterProcess:
    """A child process that turns batches of requests into the log's files, so the gateway
    worker never loads PyArrow (50 MB resident, and the JSON parsing of each batch: up to
    ~100 MB while it runs) and its event loop never waits for the writer's GIL.

    One per ``RequestLog``, started on first use. Each call sends one length-prefixed JSON
    frame down the child's stdin and waits for its answer, so the writer thread knows a file
    was written (or why not) exactly as when it wrote the file itself: rows stay buffered until
    the child says their file exists. The child writes each file atomically (``LogFiles``); if
    it dies, the call raises ``OSError`` (the rows stay buffered) and the next call starts a
    new one. If the gateway dies, the child reads end-of-file, finishes the file it is writing
    and exits. Cost: a second interpreter per worker (77 MB resident at start, 91 MB after light
    traffic, ~150 MB under a 100-row flood; benchmarks/results/gateway-lean.md) and one copy of
    each batch through a pipe.
    """

    def __init__(self) -> None:
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
            [sys.executable, "-c", "from conveyor.gateway.requestlog import serve; serve()"],
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


def serve() -> None:
    """The writer process's loop (``WriterProcess`` starts it): one frame in, one answer out,
    until its input ends. Its stdout carries only answers: anything printed goes to stderr.
    It ignores SIGINT and SIGTERM: a Ctrl-C or a stop sent to the gateway's process group must
    not cut it off before the gateway's last flush; it ends when the gateway closes the pipe
    (or dies)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
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


def migrate_tables(store: Store, files: LogFiles, *, chunk: int = 50_000) -> tuple[int, int]:
    """Move the rows of the old ``request_log`` and ``feedback`` tables into the log's files,
    deleting them from the tables chunk by chunk; returns (requests, labels) moved.

    Idempotent and safe to interrupt: a chunk's files are named after the first id of their
    rows (``m-<id>.parquet``), so a run that died between writing them and deleting the rows
    writes the same files again, replacing them, and never a second copy.
    """
    from sqlalchemy import delete, func, select

    from conveyor.store import models as m

    signatures: dict[tuple[str, int], dict[str, Any] | None] = {}

    def signature(model: str, version: int) -> dict[str, Any] | None:
        if (model, version) not in signatures:
            signatures[model, version] = _stored_signature(store, model, version)
        return signatures[model, version]

    moved = [0, 0]
    for table, kind in ((m.RequestLog, 0), (m.Feedback, 1)):
        while True:
            with store.engine.connect() as conn:
                first = conn.execute(select(func.min(table.id))).scalar()
                if first is None:
                    break
                rows = conn.execute(
                    select(table).where(table.id < first + chunk).order_by(table.id)
                ).all()
            if kind == 0:
                _migrate_requests(files, rows, signature)
            else:
                _migrate_feedback(files, rows)
            with store.engine.begin() as conn:
                conn.execute(delete(table).where(table.id < first + chunk))
            moved[kind] += len(rows)
    return moved[0], moved[1]


def _stamp(value: datetime) -> float:
    when = value.replace(tzinfo=UTC) if value.tzinfo is None else value
    return when.timestamp()


def _migrate_requests(files: LogFiles, rows: Sequence[Any], signature: Signatures) -> None:
    groups: dict[tuple[str, str, str, int], list[tuple[int, Entry]]] = {}
    for r in rows:
        at = _stamp(r.at)
        entry = (
            r.request_id, at, r.model, r.version, r.environment, r.role, r.status,
            r.latency_ms, r.rows, r.inputs or "", r.outputs or "", r.gateway,
        )  # fmt: skip
        key = (r.model, r.environment, layout.day_of(at), r.version)
        groups.setdefault(key, []).append((r.id, entry))
    for items in groups.values():
        name = f"m-{items[0][0]:012d}.parquet"
        write_requests(files, [e for _id, e in items], signature, "migrated", name=name)


def _migrate_feedback(files: LogFiles, rows: Sequence[Any]) -> None:
    by_day: dict[str, list[Any]] = {}
    for r in rows:
        by_day.setdefault(layout.day_of(_stamp(r.at)), []).append(r)
    for items in by_day.values():
        write_feedback(
            files,
            [(r.request_id, r.labels) for r in items],
            [r.actor for r in items],
            "migrated",
            at=[_stamp(r.at) for r in items],
            name=f"m-{items[0].id:012d}.parquet",
        )


class _Unwritten(Exception):
    """Some of a batch's files could not be written; ``rest`` are the rows still to write."""

    def __init__(self, rest: list[Entry]) -> None:
        super().__init__(f"{len(rest)} rows not written")
        self.rest = rest


def _stored_signature(store: Store, model: str, version: int) -> dict[str, Any] | None:
    from sqlalchemy import select

    from conveyor.store import models as m

    with store.engine.connect() as conn:
        row = conn.execute(
            select(m.ModelVersion.signature).where(
                m.ModelVersion.model == model, m.ModelVersion.version == version
            )
        ).scalar()
    return dict(row) if isinstance(row, dict) else None


def _target(files: LogFiles, entries: Sequence[Entry], gateway: str) -> tuple[str, str]:
    """The folder and new file name of a group of rows (one model, environment, day)."""
    first = entries[0]
    day = layout.day_of(first[1])
    hour = datetime.fromtimestamp(first[1], UTC).hour
    folder = layout.requests_dir(files.root, first[2], first[4], day)
    return folder, layout.file_name(hour, gateway)


def _groups(batch: Sequence[Entry]) -> dict[tuple[str, str, str, int], list[Entry]]:
    """The batch by the file each row goes to: model, environment, day and version."""
    groups: dict[tuple[str, str, str, int], list[Entry]] = {}
    days: dict[int, str] = {}
    for entry in batch:
        number = int(entry[1] // 86400)
        day = days.get(number)
        if day is None:
            day = days[number] = layout.day_of(float(entry[1]))
        groups.setdefault((entry[2], entry[4], day, entry[3]), []).append(entry)
    return groups


def _marker(text: str) -> str:
    return f'{{"truncated": true, "chars": {len(text)}}}'


# -- rows to columns ---------------------------------------------------------------------------


def write_requests(
    files: LogFiles,
    entries: Sequence[Entry],
    signatures: Signatures,
    gateway: str,
    *,
    name: str | None = None,
) -> int:
    """Write requests of one model, environment, day and version as one new file of the log;
    returns the rows (requests) written. Also how the migration and tests write the log.

    Raises:
        OSError: (or the fsspec driver's error) the file cannot be written.
    """
    if not entries:
        return 0
    first = entries[0]
    model, environment, version = first[2], first[4], first[3]
    day = layout.day_of(first[1])
    try:
        table = requests_table(entries, signatures(model, version), gateway)
    except (RegistryError, InvalidInput, TypeError, ValueError, OverflowError) as exc:
        # A signature this code cannot read: keep everything as sent rather than lose it.
        log.warning("request log: %s v%s rows kept as JSON: %s", model, version, exc)
        table = requests_table(entries, None, gateway)
    hour = datetime.fromtimestamp(first[1], UTC).hour
    folder = layout.requests_dir(files.root, model, environment, day)
    files.write_table(folder, name or layout.file_name(hour, gateway), table)
    return len(entries)


def write_feedback(
    files: LogFiles,
    items: Sequence[tuple[str, str]],
    actor: str | Sequence[str],
    gateway: str,
    *,
    at: Sequence[float] | None = None,
    name: str | None = None,
) -> int:
    """Write labels, (request id, JSON array) pairs, as one new feedback file of the day of
    the first; returns the count. ``at`` (Unix seconds, one per item) defaults to now; ``actor``
    is one for all or one per item (the migration keeps each row's)."""
    import pyarrow as pa

    if not items:
        return 0
    now = at[0] if at else time.time()
    actors = [actor] * len(items) if isinstance(actor, str) else list(actor)
    table = pa.table(
        {
            "request_id": string_array([rid for rid, _l in items]),
            "at": _times(list(at) if at else [now] * len(items)),
            "labels": string_array([labels for _r, labels in items]),
            "actor": string_array(actors),
        }
    )
    hour = datetime.fromtimestamp(now, UTC).hour
    folder = layout.feedback_dir(files.root, layout.day_of(now))
    files.write_table(folder, name or layout.file_name(hour, gateway), table)
    return len(items)


def requests_table(
    entries: Sequence[Entry], signature: dict[str, Any] | None, gateway: str
) -> pa.Table:
    """The Parquet rows of requests of one version: one per data row, inputs typed by the
    signature; a request whose inputs do not fit it keeps them as JSON in ``raw_inputs``."""
    import numpy as np
    import pyarrow as pa

    fields = list((signature or {}).get("inputs") or [])
    n_req = len(entries)
    served = [e[6] == 200 for e in entries]
    sent = _loads_many([e[9] if ok else "" for e, ok in zip(entries, served, strict=True)])
    answers = _loads_many([e[10] if ok else "" for e, ok in zip(entries, served, strict=True)])
    raw: list[str | None] = [e[9] or None for e in entries]
    values: list[list[Any] | None] = [None] * n_req
    blocks: list[tuple[list[int], list[Any]]] = []
    if fields:
        by_shape: dict[type, list[int]] = {dict: [], list: []}
        for i, rows in enumerate(sent):
            if type(rows) is list and rows:
                shape = type(rows[0])
                if shape in by_shape and all(type(r) is shape for r in rows):
                    by_shape[shape].append(i)
        for group in by_shape.values():
            blocks.extend(_fitting(signature or {}, group, sent))
        for group, _columns in blocks:
            for i in group:
                values[i] = sent[i]
                raw[i] = None
    predictions: list[Any] = []
    probabilities: list[Any] = []
    raw_out: list[str | None] = [None] * n_req
    counts = np.empty(n_req, dtype=np.int64)
    has_probabilities = False
    for i, e in enumerate(entries):
        rows = values[i]
        preds, probs = _answer(answers[i])
        n = len(rows) if rows is not None else (len(preds) if preds else 1)
        if preds is None or len(preds) != n:
            preds = [None] * n
            if e[10]:
                raw_out[i] = e[10]
        if probs is None or len(probs) != n:
            probs = [None] * n
        else:
            has_probabilities = True
        counts[i] = n
        if n == 1:
            predictions.append(preds[0])
            probabilities.append(probs[0])
        else:
            predictions.extend(preds)
            probabilities.extend(probs)
    total = int(counts.sum())
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    single = total == n_req  # one row per request: no repeats needed

    def per_row(column: list[Any], dtype: Any) -> Any:
        arr = np.asarray(column, dtype=dtype)
        return arr if single else np.repeat(arr, counts)

    def first_only(column: list[str | None]) -> pa.Array:
        if single:
            return string_array(column)
        out = np.full(total, None, dtype=object)
        out[starts] = column
        return string_array(out)

    # Built from NumPy buffers, never by pa.array(): that imports pandas (files.py says why).
    columns: dict[str, Any] = {
        "request_id": string_array(per_row([e[0] for e in entries], object)),
        "row": number_array(
            np.zeros(total, np.int32) if single else np.arange(total) - np.repeat(starts, counts),
            pa.int32(),
        ),
        "rows": number_array(per_row([int(e[8] or 0) for e in entries], np.int32), pa.int32()),
        "at": _times(per_row([e[1] for e in entries], np.float64)),
        "version": number_array(per_row([e[3] for e in entries], np.int32), pa.int32()),
        "role": string_array(per_row([e[5] for e in entries], object)),
        "status": number_array(per_row([e[6] for e in entries], np.int16), pa.int16()),
        "latency_ms": number_array(per_row([e[7] for e in entries], np.float32), pa.float32()),
        "gateway": string_array(
            per_row([e[11] if len(e) > 11 else gateway for e in entries], object)
        ),
    }
    if fields:
        columns.update(_input_columns(fields, blocks, counts, starts, total))
    columns["prediction"] = _prediction_array(predictions)
    if has_probabilities:
        columns["probabilities"] = float32_lists(probabilities)
    columns["raw_inputs"] = first_only(raw)
    columns["raw_outputs"] = first_only(raw_out)
    return pa.table(columns)


def _loads_many(texts: list[str]) -> list[Any]:
    """Each text parsed as JSON (None where empty or not JSON), in one orjson call when they
    all parse: the gateway's texts are JSON it serialised itself, and one call for a whole
    batch costs a fraction of one per text."""
    present = [i for i, t in enumerate(texts) if t]
    out: list[Any] = [None] * len(texts)
    if not present:
        return out
    try:
        parsed = orjson.loads("[" + ",".join(texts[i] for i in present) + "]")
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, list) and len(parsed) == len(present):
        for i, value in zip(present, parsed, strict=True):
            out[i] = value
        return out
    for i in present:
        try:
            out[i] = orjson.loads(texts[i])
        except orjson.JSONDecodeError:
            out[i] = None
    return out


def _fitting(
    signature: dict[str, Any], group: list[int], sent: list[Any]
) -> list[tuple[list[int], list[Any]]]:
    """The requests of ``group`` whose rows all fit the signature, in blocks with their checked
    columns: the whole group when it fits, else its halves, down to single requests."""
    from conveyor.registry.signature import columns_from_rows, is_numeric, matrix_from_rows

    if not group:
        return []
    rows = [r for i in group for r in sent[i]]
    try:
        if is_numeric(signature) and type(rows[0]) is list:
            matrix = matrix_from_rows(signature, rows)
            return [(group, [matrix[:, k] for k in range(matrix.shape[1])])]
        return [(group, columns_from_rows(signature, rows))]
    except (InvalidInput, TypeError, ValueError, OverflowError):
        if len(group) == 1:
            return []
    half = len(group) // 2
    return _fitting(signature, group[:half], sent) + _fitting(signature, group[half:], sent)


def _input_columns(
    fields: list[dict[str, Any]],
    blocks: list[tuple[list[int], list[Any]]],
    counts: numpy.ndarray,
    starts: numpy.ndarray,
    total: int,
) -> dict[str, pa.Array]:
    """One typed column per input field, null on the rows of requests that did not fit."""
    import numpy as np
    import pyarrow as pa

    placed: list[tuple[numpy.ndarray, list[Any]]] = []
    for group, cols in blocks:
        idx = np.asarray(group, dtype=np.int64)
        if (counts[idx] == 1).all():
            where = starts[idx]
        else:
            where = np.concatenate([np.arange(starts[i], starts[i] + counts[i]) for i in group])
        placed.append((where, cols))
    whole = len(placed) == 1 and len(placed[0][0]) == total
    out: dict[str, pa.Array] = {}
    for k, field in enumerate(fields):
        kind = field.get("type")
        name = layout.INPUT_PREFIX + str(field["name"])
        if kind in ("number", "integer"):
            if whole and np.array_equal(placed[0][0], np.arange(total)):
                full = np.asarray(placed[0][1][k], dtype=np.float64)
            else:
                full = np.full(total, np.nan)
                for where, cols in placed:
                    full[where] = cols[k]
            out[name] = number_array(full, pa.float64(), nan_is_null=True)
        elif kind == "datetime":
            stamps = np.full(total, np.datetime64("NaT"), dtype="datetime64[ns]")
            for where, cols in placed:
                stamps[where] = _utc_ns(cols[k])
            out[name] = pa.array(stamps, pa.timestamp("ns", tz="UTC"), from_pandas=True)
        else:
            obj = np.full(total, None, dtype=object)
            for where, cols in placed:
                obj[where] = np.asarray(cols[k], dtype=object)
            build = bool_array if kind == "boolean" else string_array
            out[name] = build(obj, nan_is_null=True)
    return out


def _utc_ns(values: Any) -> Any:
    import pandas as pd

    index = pd.DatetimeIndex(values)
    if index.tz is not None:
        index = index.tz_convert("UTC").tz_localize(None)
    return index.values.astype("datetime64[ns]")


def _prediction_array(predictions: list[Any]) -> pa.Array:
    """Predictions typed as the model returned them (labels or values); JSON text when they
    mix types that one column cannot hold."""
    import pyarrow as pa

    try:
        return inferred_array(predictions)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
        return string_array([None if p is None else orjson.dumps(p).decode() for p in predictions])


def _answer(answer: Any) -> tuple[list[Any] | None, list[Any] | None]:
    """The per-row predictions (and probabilities) of a logged answer, parsed: our JSON, the
    MLflow or TF Serving shapes, or Open Inference v2; None where it has none."""
    if type(answer) is not dict:
        return None, None
    values = answer.get("predictions")
    probabilities = answer.get("probabilities")
    if values is None and isinstance(answer.get("outputs"), list):  # Open Inference v2
        for tensor in answer["outputs"]:
            if isinstance(tensor, dict) and tensor.get("name") == "predictions":
                values = tensor.get("data")
    if type(values) is not list:
        return None, None
    if type(probabilities) is not list or not all(type(p) is list for p in probabilities):
        probabilities = None
    return values, probabilities


def _times(seconds: Any) -> pa.Array:
    import numpy as np

    micros = np.round(np.asarray(seconds, dtype=np.float64) * 1e6).astype(np.int64)
    return time_array(micros)


class ErrorThrottle:
    """Logs a repeating failure once, then at most once per ``seconds`` with a count of the
    failures it did not log, and once more when it stops: an outage should not write hundreds
    of identical lines a second."""

    def __init__(self, logger: logging.Logger, seconds: float) -> None:
        self.logger = logger
        self.seconds = seconds
        self.failing = False
        self.failures = 0
        self.suppressed = 0
        self._last = 0.0

    def failed(self, message: str, *args: Any) -> None:
        """Note one failure; log it if the last line is ``seconds`` old (or this is the first)."""
        now = time.monotonic()
        self.failures += 1
        if self.failing and now - self._last < self.seconds:
            self.suppressed += 1
            return
        if self.suppressed:
            message += f" ({self.suppressed} more failures not logged in the last %.0f s)"
            args = (*args, now - self._last)
        self.logger.warning(message, *args)
        self.failing = True
        self.suppressed = 0
        self._last = now

    def recovered(self, message: str) -> None:
        """The failing operation succeeded: log that once, with how many attempts failed."""
        if self.failing:
            self.logger.warning("%s after %d failed attempts", message, self.failures)
            self.failing = False
            self.failures = 0
            self.suppressed = 0
