"""Rows of the request log as Parquet tables: the writer process builds them from the gateway's
buffered requests (one typed column per signature input, raw JSON only for what does not fit),
and ``conveyor log migrate`` from the rows of the old metadata-database table.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from operator import add, itemgetter
from typing import TYPE_CHECKING, Any

import orjson

from conveyor.exceptions import InvalidInput, RegistryError
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

log = logging.getLogger("conveyor.gateway")

__all__ = [
    "Entry",
    "Signatures",
    "migrate_tables",
    "requests_table",
    "stored_signature",
    "text_sizes",
    "write_feedback",
    "write_requests",
]

# A buffered request: (request_id, time, model, version, environment, role, status, latency_ms,
# rows, inputs, outputs), and optionally its gateway (rows moved from the old table carry one).
Entry = tuple[Any, ...]
Signatures = Callable[[str, int], "dict[str, Any] | None"]


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
            signatures[model, version] = stored_signature(store, model, version)
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


def text_sizes(entries: Sequence[Entry]) -> Iterator[int]:
    """The characters of each entry's inputs and outputs texts (what the buffer and the
    writer's heap hold of it), computed by ``map`` rather than a Python step per entry."""
    return map(add, map(len, map(_INPUTS, entries)), map(len, map(_OUTPUTS, entries)))


_INPUTS, _OUTPUTS = itemgetter(9), itemgetter(10)


def stored_signature(store: Store, model: str, version: int) -> dict[str, Any] | None:
    from sqlalchemy import select

    from conveyor.store import models as m

    with store.engine.connect() as conn:
        row = conn.execute(
            select(m.ModelVersion.signature).where(
                m.ModelVersion.model == model, m.ModelVersion.version == version
            )
        ).scalar()
    return dict(row) if isinstance(row, dict) else None


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
