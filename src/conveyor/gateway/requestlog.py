"""The request log: a sampled record of what each served request sent and got, and labels later.

``record`` is called on the hot path and only appends a tuple to a deque. A writer thread turns
the buffered requests into Parquet files of the prediction log (``conveyor.store.predictionlog``;
the layout is in docs/prediction-log.md): one file per flush and per model, environment, day and
version, with one typed column per signature input, written atomically and never appended to. It
flushes when ``flush_rows`` rows wait or the oldest has waited ``flush_seconds``, so the log is
shared by every replica writing under the same artifact store and costs the event loop
microseconds. Inputs that do not fit the version's signature are kept as their JSON text
(``raw_inputs``), which the monitor checks row by row as it always did.

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
from collections import deque
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from conveyor.exceptions import GatewayError, InvalidInput, RegistryError
from conveyor.store.predictionlog import layout
from conveyor.store.predictionlog.files import LogFiles

if TYPE_CHECKING:
    import numpy
    import pyarrow as pa

__all__ = ["ErrorThrottle", "RequestLog", "Signatures", "write_requests"]

log = logging.getLogger("conveyor.gateway")


_ROW_OVERHEAD = 200  # bytes a buffered row costs besides its texts (tuple, ids, numbers)
_BATCH_BYTES = 64 * 1024 * 1024  # one flush's text at most: bounds the writer's peak memory
_RECENT_IDS = 100_000  # request ids this gateway wrote, kept to answer feedback without a read

# A buffered request: (request_id, time, model, version, environment, role, status, latency_ms,
# rows, inputs, outputs), and optionally its gateway (rows moved from the old table carry one).
Entry = tuple[Any, ...]
Signatures = Callable[[str, int], "dict[str, Any] | None"]


class RequestLog:
    """Buffered appends of request rows (and feedback) to the prediction log's files."""

    def __init__(
        self,
        store: Any,
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
    ) -> None:
        """Describe the log; nothing is opened or written until ``start``/``flush``.

        ``log_url`` is the log's root; by default the one attached to ``store`` by
        ``open_stores`` or the gateway (``layout.attach``).
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
        self._signatures: dict[tuple[str, int], dict[str, Any] | None] = {}
        self._recent: dict[str, None] = {}
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
                written = write_requests(self.files, groups[key], self._signature, self.gateway)
            except Exception as exc:
                rest = [e for k in keys[i:] for e in groups[k]]
                raise _Unwritten(rest) from exc
            self.files_written += 1
            self.written += written
            for entry in groups[key]:
                self._remember(entry[0])
        self.last_error = None

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

    def add_feedback(self, items: list[tuple[str, str]], actor: str) -> int:
        """Store labels: (request id, JSON array of labels) pairs, as one feedback file."""
        return write_feedback(self.files, items, actor, self.gateway)

    def known_requests(self, request_ids: list[str]) -> set[str]:
        """Which of these request ids are in the log: buffered, written by this gateway lately,
        or found in the log's files of the last days (written by any gateway)."""
        from conveyor.store.predictionlog.query import find_requests

        wanted = set(request_ids)
        found = {item[0] for item in list(self._buffer) if item[0] in wanted}
        found |= {rid for rid in wanted - found if rid in self._recent}
        rest = wanted - found
        if rest:
            found |= find_requests(self.files, sorted(rest))
        return found


class _Unwritten(Exception):
    """Some of a batch's files could not be written; ``rest`` are the rows still to write."""

    def __init__(self, rest: list[Entry]) -> None:
        super().__init__(f"{len(rest)} rows not written")
        self.rest = rest


def _stored_signature(store: Any, model: str, version: int) -> dict[str, Any] | None:
    from sqlalchemy import select

    from conveyor.store import models as m

    with store.engine.connect() as conn:
        row = conn.execute(
            select(m.ModelVersion.signature).where(
                m.ModelVersion.model == model, m.ModelVersion.version == version
            )
        ).scalar()
    return dict(row) if isinstance(row, dict) else None


def _groups(batch: Sequence[Entry]) -> dict[tuple[str, str, str, int], list[Entry]]:
    """The batch by the file each row goes to: model, environment, day and version."""
    groups: dict[tuple[str, str, str, int], list[Entry]] = {}
    for entry in batch:
        key = (entry[2], entry[4], layout.day_of(entry[1]), entry[3])
        groups.setdefault(key, []).append(entry)
    return groups


def _marker(text: str) -> str:
    return f'{{"truncated": true, "chars": {len(text)}}}'


# -- rows to columns ---------------------------------------------------------------------------


def write_requests(
    files: LogFiles,
    entries: Sequence[Entry],
    signatures: Signatures,
    gateway: str,
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
    files.write_table(folder, layout.file_name(hour, gateway), table)
    return len(entries)


def write_feedback(
    files: LogFiles,
    items: Sequence[tuple[str, str]],
    actor: str | Sequence[str],
    gateway: str,
    *,
    at: Sequence[float] | None = None,
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
            "request_id": pa.array([rid for rid, _l in items], pa.string()),
            "at": _times(list(at) if at else [now] * len(items)),
            "labels": pa.array([labels for _r, labels in items], pa.string()),
            "actor": pa.array(actors, pa.string()),
        }
    )
    hour = datetime.fromtimestamp(now, UTC).hour
    folder = layout.feedback_dir(files.root, layout.day_of(now))
    files.write_table(folder, layout.file_name(hour, gateway), table)
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
    values: list[list[Any] | None] = [None] * n_req  # the rows of each request that fits
    raw: list[str | None] = [None] * n_req
    if fields:
        _check_inputs(entries, signature or {}, values, raw)
    else:
        for i, e in enumerate(entries):
            raw[i] = e[9] or None
    predictions: list[Any] = []
    probabilities: list[Any] = []
    raw_out: list[str | None] = [None] * n_req
    counts = np.empty(n_req, dtype=np.int64)
    has_probabilities = False
    for i, e in enumerate(entries):
        sent = values[i]
        preds, probs = _answer(e[10]) if e[6] == 200 else (None, None)
        n = len(sent) if sent is not None else (len(preds) if preds else 1)
        if preds is None or len(preds) != n:
            preds = [None] * n
            if e[10]:
                raw_out[i] = e[10]
        if probs is None or len(probs) != n:
            probs = [None] * n
        else:
            has_probabilities = True
        counts[i] = n
        predictions.extend(preds)
        probabilities.extend(probs)
    total = int(counts.sum())
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    first_rows = np.zeros(total, dtype=bool)
    first_rows[starts] = True

    def per_row(column: list[Any], dtype: Any) -> Any:
        return np.repeat(np.asarray(column, dtype=dtype), counts)

    def first_only(column: list[str | None]) -> pa.Array:
        out = np.full(total, None, dtype=object)
        out[starts] = column
        return pa.array(out, pa.string())

    rows_sent = [int(e[8] or 0) for e in entries]
    columns: dict[str, Any] = {
        "request_id": pa.array(per_row([e[0] for e in entries], object), pa.string()),
        "row": pa.array(np.arange(total) - np.repeat(starts, counts), pa.int32()),
        "rows": pa.array(per_row(rows_sent, np.int32)),
        "at": _times(per_row([e[1] for e in entries], np.float64)),
        "version": pa.array(per_row([e[3] for e in entries], np.int32)),
        "role": pa.array(per_row([e[5] for e in entries], object), pa.string()),
        "status": pa.array(per_row([e[6] for e in entries], np.int16)),
        "latency_ms": pa.array(per_row([e[7] for e in entries], np.float32)),
        "gateway": pa.array(
            per_row([e[11] if len(e) > 11 else gateway for e in entries], object), pa.string()
        ),
    }
    if fields:
        columns.update(_input_columns(fields, values, counts, starts, total))
    columns["prediction"] = _prediction_array(predictions)
    if has_probabilities:
        columns["probabilities"] = pa.array(probabilities, pa.list_(pa.float32()))
    columns["raw_inputs"] = first_only(raw)
    columns["raw_outputs"] = first_only(raw_out)
    return pa.table(columns)


def _check_inputs(
    entries: Sequence[Entry],
    signature: dict[str, Any],
    values: list[list[Any] | None],
    raw: list[str | None],
) -> None:
    """Fill ``values`` with the rows of each served request that fit the signature (checked in
    blocks, a failing block split in halves), ``raw`` with the inputs of the others."""
    by_shape: dict[type, list[int]] = {dict: [], list: []}
    parsed: dict[int, list[Any]] = {}
    for i, e in enumerate(entries):
        text = e[9]
        if not text:
            continue
        if e[6] != 200:
            raw[i] = text
            continue
        try:
            rows = orjson.loads(text)
        except orjson.JSONDecodeError:
            raw[i] = text
            continue
        if not isinstance(rows, list) or not rows:
            raw[i] = text
            continue
        shape = type(rows[0])
        if shape not in by_shape or any(type(r) is not shape for r in rows):
            raw[i] = text
            continue
        parsed[i] = rows
        by_shape[shape].append(i)
    for group in by_shape.values():
        for i in _fitting(signature, group, parsed):
            values[i] = parsed[i]
    for i in parsed:
        if values[i] is None:
            raw[i] = entries[i][9]


def _fitting(
    signature: dict[str, Any], group: list[int], parsed: dict[int, list[Any]]
) -> list[int]:
    """The requests of ``group`` whose rows all fit the signature."""
    from conveyor.registry.signature import columns_from_rows

    if not group:
        return []
    rows = [r for i in group for r in parsed[i]]
    try:
        columns_from_rows(signature, rows)
        return group
    except (InvalidInput, TypeError, ValueError, OverflowError):
        if len(group) == 1:
            return []
    half = len(group) // 2
    return _fitting(signature, group[:half], parsed) + _fitting(signature, group[half:], parsed)


def _input_columns(
    fields: list[dict[str, Any]],
    values: list[list[Any] | None],
    counts: numpy.ndarray,
    starts: numpy.ndarray,
    total: int,
) -> dict[str, pa.Array]:
    """One typed column per input field, null on the rows of requests that did not fit."""
    import numpy as np
    import pyarrow as pa

    from conveyor.registry.signature import columns_from_rows

    kept = [i for i, v in enumerate(values) if v is not None]
    blocks: list[tuple[numpy.ndarray, list[Any]]] = []
    for shape in (dict, list):
        picked = [j for j, i in enumerate(kept) if type(values[i][0]) is shape]  # type: ignore[index]
        if picked:
            rows = [r for j in picked for r in values[kept[j]]]  # type: ignore[union-attr]
            where = np.concatenate(
                [np.arange(starts[kept[j]], starts[kept[j]] + counts[kept[j]]) for j in picked]
            )
            blocks.append((where, columns_from_rows({"inputs": fields}, rows)))
    out: dict[str, pa.Array] = {}
    for k, field in enumerate(fields):
        kind = field.get("type")
        name = layout.INPUT_PREFIX + str(field["name"])
        if kind in ("number", "integer"):
            full = np.full(total, np.nan)
            for where, cols in blocks:
                full[where] = cols[k]
            out[name] = pa.array(full, pa.float64(), from_pandas=True)
        elif kind == "datetime":
            stamps = np.full(total, np.datetime64("NaT"), dtype="datetime64[ns]")
            for where, cols in blocks:
                stamps[where] = _utc_ns(cols[k])
            out[name] = pa.array(stamps, pa.timestamp("ns", tz="UTC"), from_pandas=True)
        else:
            obj = np.full(total, None, dtype=object)
            for where, cols in blocks:
                obj[where] = np.asarray(cols[k], dtype=object)
            kind_type = pa.bool_() if kind == "boolean" else pa.string()
            out[name] = pa.array(obj, kind_type, from_pandas=True)
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
        return pa.array(predictions)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
        return pa.array(
            [None if p is None else orjson.dumps(p).decode() for p in predictions], pa.string()
        )


def _answer(outputs: str) -> tuple[list[Any] | None, list[Any] | None]:
    """The per-row predictions (and probabilities) of a logged answer: our JSON, the MLflow or
    TF Serving shapes, or Open Inference v2; None where it has none."""
    if not outputs:
        return None, None
    try:
        answer = orjson.loads(outputs)
    except orjson.JSONDecodeError:
        return None, None
    values: Any = None
    probabilities: Any = None
    if isinstance(answer, dict):
        values = answer.get("predictions")
        probabilities = answer.get("probabilities")
        if values is None and isinstance(answer.get("outputs"), list):  # Open Inference v2
            for tensor in answer["outputs"]:
                if isinstance(tensor, dict) and tensor.get("name") == "predictions":
                    values = tensor.get("data")
    if not isinstance(values, list):
        return None, None
    if not isinstance(probabilities, list) or not all(isinstance(p, list) for p in probabilities):
        probabilities = None
    return values, probabilities


def _times(seconds: Any) -> pa.Array:
    import numpy as np
    import pyarrow as pa

    micros = np.round(np.asarray(seconds, dtype=np.float64) * 1e6).astype(np.int64)
    return pa.array(micros, pa.timestamp("us", tz="UTC"))


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
