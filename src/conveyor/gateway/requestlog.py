"""The request log: a sampled record of what each served request sent and got, and labels later.

``record`` is called on the hot path and only appends a tuple to a deque. A writer thread
moves the rows into the store in batches (one transaction each, ``flush_rows`` rows or
``_BATCH_BYTES`` at most, or every ``flush_seconds``), so the log survives a restart, is shared
by every replica reading the same store, and costs the event loop microseconds.

Memory and disk are bounded in bytes, not only rows: an input or output text longer than
``max_input_bytes``/``max_output_bytes`` is stored as a small JSON marker with its original
length (``{"truncated": true, "chars": N}``, which the monitor skips as "not a list of rows"),
a 4xx request's inputs are not stored unless ``client_error_inputs`` (its error text is), and
the buffer holds at most ``max_buffer`` rows and ``max_buffer_bytes`` of text; past either,
rows are dropped and counted, never the requests themselves.

What a crash loses: the rows buffered at that moment, which is one ``flush_seconds`` of
requests plus those that arrived while the write in progress ran (a commit that waits for a
slow disk or a WAL checkpoint can take hundreds of milliseconds), and never more than the
buffer bounds; ``pending()`` says how many there are now. A clean stop flushes everything.
While the store refuses writes the writer backs off (up to 30 s) and logs one line per
``error_log_seconds`` with the number of failures it did not log.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert

from conveyor.store import models as m
from conveyor.store.records import sqlite_timestamp

__all__ = ["ErrorThrottle", "RequestLog"]

log = logging.getLogger("conveyor.gateway")


_ROW_OVERHEAD = 200  # bytes a buffered row costs besides its texts (tuple, ids, numbers)
_BATCH_BYTES = 4 * 1024 * 1024  # one transaction's text at most: keeps the WAL small


class RequestLog:
    """Buffered, batched appends of request rows (and feedback) to the metadata store."""

    def __init__(
        self,
        store: Any,
        *,
        gateway: str,
        sample: float = 1.0,
        flush_rows: int = 100,
        flush_seconds: float = 0.05,
        max_buffer: int = 200_000,
        max_buffer_bytes: int = 64 * 1024 * 1024,
        max_input_bytes: int = 256 * 1024,
        max_output_bytes: int = 256 * 1024,
        client_error_inputs: bool = False,
        error_log_seconds: float = 30.0,
        on_drop: Callable[[int], None] | None = None,
    ) -> None:
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
        self._on_drop = on_drop
        self._buffer: deque[tuple[Any, ...]] = deque()
        # Two counters, each written by one thread only (record: the event loop; flush: the
        # writer), so no lock is needed: the buffered bytes are their difference.
        self._bytes_in = 0
        self._bytes_out = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._random = random.random
        self._errors = ErrorThrottle(log, error_log_seconds)
        self.written = 0
        self.dropped = 0
        self.truncated = 0
        self.last_error: str | None = None

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
        """Start the writer thread."""
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
        self.flush()

    def pending(self) -> int:
        """Rows buffered, not yet in the store."""
        return len(self._buffer)

    def pending_bytes(self) -> int:
        """Bytes of buffered rows (their texts plus a fixed overhead each)."""
        return self._bytes_in - self._bytes_out

    def flush(self) -> int:
        """Write what is buffered now, in batches; returns the rows written.

        Raises:
            Exception: the store's error when a batch cannot be written (its rows stay buffered).
        """
        total = 0
        while self._buffer:
            batch: list[tuple[Any, ...]] = []
            size = 0
            while self._buffer and len(batch) < self.flush_rows and size < _BATCH_BYTES:
                row = self._buffer.popleft()
                batch.append(row)
                size += len(row[9]) + len(row[10]) + _ROW_OVERHEAD
            self._bytes_out += size
            try:
                self._write(batch)
            except Exception as exc:  # the store is down or locked: keep the rows, retry later
                self._buffer.extendleft(reversed(batch))
                self._bytes_out -= size
                self.last_error = f"{type(exc).__name__}: {exc}"
                self._errors.failed(
                    "request log: cannot write %d rows yet (%d buffered): %s",
                    len(batch),
                    len(self._buffer),
                    exc,
                )
                raise
            total += len(batch)
        if total:
            self._errors.recovered("request log: writing again")
        return total

    def _write(self, batch: list[tuple[Any, ...]]) -> None:
        # Straight to the driver's executemany: SQLAlchemy's per-row processing cost five
        # times the insert itself, and this thread shares the interpreter with the event loop.
        with self.store.engine.begin() as conn:
            sqlite = conn.dialect.name == "sqlite"
            when = _sqlite_time if sqlite else _utc
            params = [(*r[:1], when(r[1]), *r[2:], self.gateway) for r in batch]
            conn.exec_driver_sql(_insert_sql(conn.dialect.paramstyle), params)
        self.written += len(batch)
        self.last_error = None

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

    def add_feedback(self, items: list[tuple[str, str]], actor: str) -> int:
        """Store labels: (request id, JSON array of labels) pairs, in one transaction."""
        now = datetime.now(UTC)
        rows = [
            {"request_id": rid, "at": now, "labels": labels, "actor": actor}
            for rid, labels in items
        ]
        with self.store.engine.begin() as conn:
            conn.execute(insert(m.Feedback), rows)
        return len(rows)

    def known_requests(self, request_ids: list[str]) -> set[str]:
        """Which of these request ids are in the log (written, or still buffered)."""
        from sqlalchemy import select

        wanted = set(request_ids)
        found = {item[0] for item in list(self._buffer) if item[0] in wanted}
        rest = list(wanted - found)
        with self.store.engine.connect() as conn:
            for i in range(0, len(rest), 500):
                chunk = rest[i : i + 500]
                found.update(
                    conn.scalars(
                        select(m.RequestLog.request_id).where(m.RequestLog.request_id.in_(chunk))
                    )
                )
        return found


_COLUMNS = (
    "request_id",
    "at",
    "model",
    "version",
    "environment",
    "role",
    "status",
    "latency_ms",
    "rows",
    "inputs",
    "outputs",
    "gateway",
)


def _insert_sql(paramstyle: str) -> str:
    mark = "?" if paramstyle == "qmark" else "%s"
    return (
        f"INSERT INTO request_log ({', '.join(_COLUMNS)}) "
        f"VALUES ({', '.join([mark] * len(_COLUMNS))})"
    )


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _sqlite_time(ts: float) -> str:
    return sqlite_timestamp(datetime.fromtimestamp(ts, UTC))


def _marker(text: str) -> str:
    return f'{{"truncated": true, "chars": {len(text)}}}'


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
