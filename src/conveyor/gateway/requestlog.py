"""The request log: a sampled record of what each served request sent and got, and labels later.

``record`` is called on the hot path and only appends a tuple to a deque. A writer thread
moves the rows into the store in batches (one transaction each, ``flush_rows`` at most or every
``flush_seconds``), so the log survives a restart, is shared by every replica reading the same
store, and costs the event loop microseconds. If the store falls behind, the buffer holds up to
``max_buffer`` rows; beyond that rows are dropped and counted, never the requests themselves.
A crash loses at most the rows not yet flushed (one ``flush_seconds``); a clean stop flushes all.
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

__all__ = ["RequestLog"]

log = logging.getLogger("conveyor.gateway")


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
        on_drop: Callable[[int], None] | None = None,
    ) -> None:
        self.store = store
        self.gateway = gateway
        self.sample = sample
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self.max_buffer = max_buffer
        self._on_drop = on_drop
        self._buffer: deque[tuple[Any, ...]] = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._random = random.random
        self.written = 0
        self.dropped = 0
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
        if len(self._buffer) >= self.max_buffer:
            self.dropped += 1
            if self._on_drop is not None:
                self._on_drop(1)
            return
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

    def flush(self) -> int:
        """Write what is buffered now, in batches; returns the rows written."""
        total = 0
        while self._buffer:
            batch = []
            while self._buffer and len(batch) < self.flush_rows:
                batch.append(self._buffer.popleft())
            try:
                self._write(batch)
            except Exception as exc:  # the store is down or locked: keep the rows, retry later
                self._buffer.extendleft(reversed(batch))
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("request log: cannot write %d rows yet: %s", len(batch), exc)
                raise
            total += len(batch)
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
            self._wake.wait(backoff)
            self._wake.clear()
            try:
                self.flush()
                backoff = self.flush_seconds
            except Exception:
                backoff = min(max(backoff * 2, self.flush_seconds), 30.0)

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
