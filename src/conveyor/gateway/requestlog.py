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

import logging
import random
import threading
import time
import weakref
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from itertools import accumulate, islice
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from conveyor.exceptions import GatewayError
from conveyor.gateway.logtables import Entry, stored_signature, text_sizes
from conveyor.gateway.logwriter import WriterProcess, release_freed_heap
from conveyor.store.predictionlog import layout
from conveyor.store.predictionlog.files import LogFiles

if TYPE_CHECKING:
    from conveyor.store.metadata import Store

__all__ = ["ErrorThrottle", "RequestLog"]

log = logging.getLogger("conveyor.gateway")


_ROW_OVERHEAD = 200  # bytes a buffered row costs besides its texts (tuple, ids, numbers)
_BATCH_BYTES = 8 * 1024 * 1024  # one table build's text at most: bounds the writer's peak memory
_RECENT_IDS = 100_000  # request ids this gateway wrote, kept to answer feedback without a read
_TRIM_AFTER_BYTES = 16 * 1024 * 1024  # text drained from the buffer before the heap is trimmed
_MERGE_MAX_AGE_S = 1800.0  # older own files are left to 'conveyor log compact' (takes > 1 h)


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
        writer_priority: str = "normal",
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
        self._drained = 0  # text written since the heap was last trimmed
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._flushing = threading.Lock()
        self._thread: threading.Thread | None = None
        self._random = random.random
        self._errors = ErrorThrottle(log, error_log_seconds)
        self._files: LogFiles | None = None
        self._writer = WriterProcess(idle=writer_priority == "idle")
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
                batch, size = self._take()
                self._bytes_out += size
                try:
                    self._write(batch)
                except _Unwritten as exc:  # the log is unreachable: keep the rows, retry later
                    rest = exc.rest
                    self._buffer.extendleft(reversed(rest))
                    self._bytes_out -= _bytes_of(rest)
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
            self._remember(groups[key])
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

    def _take(self) -> tuple[list[Entry], int]:
        """The next batch off the buffer's front, and its bytes: at most ``flush_rows`` rows
        and the first row that reaches ``_BATCH_BYTES`` of text.

        Done with C-level calls (a bulk pop, sizes by ``map``, a bisection), not a Python step
        per row: this runs in the worker, and each millisecond it holds the interpreter is a
        millisecond a request may wait (one-client p99, benchmarks/results/gateway-lean.md).
        Only ``record`` touches the buffer meanwhile, and it only appends to the back."""
        pop = self._buffer.popleft
        batch = [pop() for _ in range(min(len(self._buffer), self.flush_rows))]
        running = list(accumulate(_sizes(batch)))
        cut = bisect_left(running, _BATCH_BYTES) + 1
        if cut < len(batch):
            self._buffer.extendleft(reversed(batch[cut:]))
            del batch[cut:]
        return batch, running[len(batch) - 1] if batch else 0

    def _remember(self, entries: Sequence[Entry]) -> None:
        """Keep the ids of written requests (the newest ``_RECENT_IDS``) for feedback."""
        recent = self._recent
        recent.update(dict.fromkeys(map(_ID, entries)))
        excess = len(recent) - _RECENT_IDS
        if excess > 0:  # one pass from the oldest end, not one scan per id
            for request_id in list(islice(recent, excess)):
                del recent[request_id]

    def _signature(self, model: str, version: int) -> dict[str, Any] | None:
        key = (model, version)
        if key not in self._signatures:
            self._signatures[key] = stored_signature(self.store, model, version)
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
            before = self._bytes_out
            try:
                self.flush()
                backoff = self.flush_seconds
            except Exception:
                backoff = min(max(backoff * 2, self.flush_seconds * 2), 30.0)
                continue
            self._drained += self._bytes_out - before
            if self._drained >= _TRIM_AFTER_BYTES and not self._buffer:
                self._drained = 0
                release_freed_heap()
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


_ID, _AT = itemgetter(0), itemgetter(1)
_FILE_KEY = itemgetter(2, 4, 3)  # model, environment, version


def _sizes(entries: Sequence[Entry]) -> list[int]:
    """The bytes each buffered entry counts for: its texts plus a fixed overhead."""
    return [size + _ROW_OVERHEAD for size in text_sizes(entries)]


def _bytes_of(entries: Sequence[Entry]) -> int:
    return sum(_sizes(entries))


def _marker(text: str) -> str:
    return f'{{"truncated": true, "chars": {len(text)}}}'


# -- rows to columns ---------------------------------------------------------------------------


class _Unwritten(Exception):
    """Some of a batch's files could not be written; ``rest`` are the rows still to write."""

    def __init__(self, rest: list[Entry]) -> None:
        super().__init__(f"{len(rest)} rows not written")
        self.rest = rest


def _groups(batch: Sequence[Entry]) -> dict[tuple[str, str, str, int], list[Entry]]:
    """The batch by the file each row goes to: model, environment, day and version."""
    times = list(map(_AT, batch))
    first, last = layout.day_of(float(min(times))), layout.day_of(float(max(times)))
    keys = set(map(_FILE_KEY, batch))
    if first == last and len(keys) == 1:  # the usual batch: one model, environment, version, day
        model, environment, version = keys.pop()
        return {(model, environment, first, version): list(batch)}
    groups: dict[tuple[str, str, str, int], list[Entry]] = {}
    days: dict[int, str] = {}
    for entry in batch:
        number = int(entry[1] // 86400)
        day = days.get(number)
        if day is None:
            day = days[number] = layout.day_of(float(entry[1]))
        groups.setdefault((entry[2], entry[4], day, entry[3]), []).append(entry)
    return groups


def _target(files: LogFiles, entries: Sequence[Entry], gateway: str) -> tuple[str, str]:
    """The folder and new file name of a group of rows (one model, environment, day)."""
    first = entries[0]
    day = layout.day_of(first[1])
    hour = datetime.fromtimestamp(first[1], UTC).hour
    folder = layout.requests_dir(files.root, first[2], first[4], day)
    return folder, layout.file_name(hour, gateway)


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
