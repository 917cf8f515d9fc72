"""Windows of the request log: what an environment was asked and answered, as a data frame.

The gateway logs each request's rows as the caller sent them (records or arrays, JSON text).
A window reads the ``serve`` rows of one model and environment over the last ``seconds`` or
the last ``last`` requests, parses them with orjson and checks them against the signature of
the version being monitored, in whole columns at once (``registry.signature``). A row that
does not fit (a log written by hand, a signature that changed since) is skipped and counted,
never fatal: one bad row must not hide a day of drift. Rows are checked in blocks, and a block
that fails is split in halves until the bad rows are isolated, so a clean log costs one check.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
from sqlalchemy import select

from conveyor.exceptions import InvalidInput, MonitorError, RegistryError, StoreError
from conveyor.store import models as m
from conveyor.store.metadata import as_utc
from conveyor.store.predictionlog.files import LogFiles
from conveyor.store.predictionlog.layout import INPUT_PREFIX
from conveyor.store.predictionlog.query import (
    LOG_ORDER,
    gather_requests,
    latest_labels,
    log_of,
    read_requests,
)

if TYPE_CHECKING:
    import numpy
    import pandas
    import pyarrow as pa

    from conveyor.store.metadata import Store

__all__ = ["Window", "feedback_for", "log_files", "read_window"]

_V = TypeVar("_V")

MAX_PROBLEMS = 5  # bad rows described in a window; the rest are only counted
_BATCH_ROWS = 131_072  # rows per batch streamed from the log into an all-numeric window
# the request-level columns a window uses: not the gateway, the probabilities or the raw
# outputs, which would be read, sorted and held for nothing
_COLUMNS = (
    "request_id",
    "row",
    "rows",
    "at",
    "version",
    "status",
    "latency_ms",
    "prediction",
    "raw_inputs",
)


@dataclass
class Window:
    """The served requests of one model and environment over a span of time.

    ``inputs`` holds one row per served row (status 200) that fits the signature, with the
    signature's columns; ``predictions``, ``request_ids``, ``positions`` (the row's index in
    its request, which feedback labels follow) and ``versions`` run parallel to it.
    ``statuses`` and ``latencies_ms`` hold one entry per request of any status.
    """

    model: str
    environment: str
    start: datetime
    end: datetime
    seconds: float | None
    last: int | None
    inputs: pandas.DataFrame
    predictions: list[Any]
    request_ids: list[str]
    positions: list[int]
    versions: list[int]
    statuses: numpy.ndarray
    latencies_ms: numpy.ndarray
    requests: int
    served_at: Mapping[str, datetime] = field(default_factory=dict)  # request id -> time
    request_rows: Mapping[str, int] = field(default_factory=dict)  # request id -> rows sent
    skipped: int = 0  # rows of served requests that did not fit the signature
    problems: list[str] = field(default_factory=list)  # the first few reasons, for people
    version: int | None = None  # the version filter, when one was asked

    @property
    def rows(self) -> int:
        """Served rows that fit the signature."""
        return len(self.inputs)


def read_window(
    store: Store,
    model: str,
    environment: str,
    *,
    seconds: float | None = None,
    last: int | None = None,
    now: datetime | None = None,
    version: int | None = None,
    signature: dict[str, Any] | None = None,
) -> Window:
    """Read a window of the request log.

    Args:
        store: the open metadata store (``registry.store``).
        model: the model's name.
        environment: the environment whose traffic to read (``production``).
        seconds: the window is the ``seconds`` before ``now``; or
        last: the window is the last ``last`` requests before ``now``.
        now: the window's end (default: the current time); a naive datetime is UTC.
        version: only requests this version answered (default: every version).
        signature: the signature rows are checked against (default: that of ``version``,
            else of the version the environment's alias serves).

    Raises:
        MonitorError: neither or both of ``seconds`` and ``last``; no signature to check rows
            against (no such version, nothing routed to the environment); a malformed one.
    """
    from conveyor.registry.signature import is_numeric

    if (seconds is None) == (last is None):
        raise MonitorError(
            "A window is the last `seconds` or the last `last` requests; give exactly one "
            f"(got seconds={seconds!r}, last={last!r})."
        )
    if seconds is not None and not seconds > 0:
        raise MonitorError(f"A window of {seconds!r} seconds is empty; give a positive duration.")
    if last is not None and last < 1:
        raise MonitorError(f"A window of the last {last!r} requests is empty; give 1 or more.")
    end = _utc(now) if now is not None else datetime.now(UTC)
    if signature is None:
        signature = _signature(store, model, environment, version)
    names = _input_names(signature)
    start = end - timedelta(seconds=seconds) if seconds is not None else None
    where: dict[str, Any] = {
        "since": start,
        "until": end,
        "versions": None if version is None else [version],
        "roles": ["serve"],
        "inputs": names,
        "last": last,
        "columns": _COLUMNS,
    }
    if is_numeric(signature):
        # the inputs go from each batch straight into one float64 block (_gather_numeric)
        requests, block, nulls = gather_requests(
            log_files(store),
            model,
            environment,
            _gather_numeric(signature, names),
            batch_rows=_BATCH_ROWS,
            **where,
        )
        read = _Read(requests, names, block=block, nulls=nulls)
        del requests, block, nulls  # _Read holds them, and lets the block go to the frame
    else:
        table = read_requests(log_files(store), model, environment, ordered=False, **where)
        read = _Read(table, names)  # unordered: _Read orders them
        del table  # _Read holds what it needs
    if start is None:
        start = read.first_at() or end
    frame, kept = read.frame(signature)
    return Window(
        model=model,
        environment=environment,
        start=start,
        end=end,
        seconds=seconds,
        last=last,
        inputs=frame,
        predictions=kept["predictions"],
        request_ids=kept["request_ids"],
        positions=kept["positions"],
        versions=kept["versions"],
        statuses=read.statuses,
        latencies_ms=read.latencies,
        requests=len(read.statuses),
        served_at=read.served_at(),
        request_rows=read.request_rows(),
        skipped=read.skipped,
        problems=read.problems,
        version=version,
    )


def log_files(store: Store) -> LogFiles:
    """The prediction log of the project whose metadata store is ``store``.

    Raises:
        MonitorError: the store was opened without its log (not through ``open_stores``).
    """
    try:
        return log_of(store)
    except StoreError as exc:
        raise MonitorError(str(exc)) from None


def feedback_for(
    store: Store, request_ids: list[str], since: datetime | None = None
) -> tuple[dict[str, list[Any]], dict[str, datetime]]:
    """The latest labels sent for each request (a JSON array each), and when they came."""
    return latest_labels(log_files(store), request_ids, since)


class _Read:
    """A window's Parquet rows: typed rows taken as they are, the requests whose inputs were
    kept as JSON (they did not fit the signature when served) checked row by row."""

    def __init__(
        self,
        table: pa.Table,
        names: list[str],
        *,
        block: numpy.ndarray | None = None,
        nulls: dict[int, numpy.ndarray] | None = None,
    ) -> None:
        """``table``: the request columns, and the inputs unless ``block`` holds them (an
        all-numeric signature: one float64 row per field, rows in the table's order, with
        ``nulls`` the missing values of the fields that are not nullable, by field index)."""
        import numpy as np
        import pyarrow.compute as pc

        # The rows come unordered (``read_requests(ordered=False)``): the request columns are
        # put in log order here, and each input is gathered once, in that order, from
        # ``self.inputs`` at ``self.source`` (below): ``order[typed]``.
        keys = [(c, "ascending") for c in LOG_ORDER if c in table.column_names]
        order = pc.sort_indices(table, sort_keys=keys).to_numpy() if len(table) else None
        if order is not None and bool(np.all(order == np.arange(len(order)))):
            order = None  # already in log order
        requests = table.select([c for c in table.column_names if c in _COLUMNS])
        self.table = requests.take(order) if order is not None else requests
        self.inputs = table.select([c for c in table.column_names if c not in _COLUMNS])
        self.order = order
        self.names = names
        self.block = block
        self.nulls = nulls or {}
        self.skipped = 0
        self.problems: list[str] = []
        row = self.table.column("row").to_numpy(zero_copy_only=False)
        status = self.table.column("status").to_numpy(zero_copy_only=False)
        self.first = np.flatnonzero(row == 0)  # one per request, in log order
        self.statuses = status[self.first].astype(np.int64)
        self.latencies = (
            self.table.column("latency_ms")
            .to_numpy(zero_copy_only=False)[self.first]
            .astype(np.float64)
        )
        # raw_inputs is set on a request's row 0 only: spread it to all the request's rows
        request = np.cumsum(row == 0) - 1
        kept_raw = self.table.column("raw_inputs").is_valid().to_numpy(zero_copy_only=False)
        raw = kept_raw[self.first][request] if len(request) else kept_raw
        served = status == 200
        self.typed = np.flatnonzero(served & ~raw)
        self.raw_first = np.flatnonzero(served & raw & (row == 0))
        self.typed_first = np.flatnonzero(served & ~raw & (row == 0))
        # where the typed rows are in ``self.inputs`` (None: at the same places)
        self.source = None if order is None else order[self.typed]
        if self.source is None and len(self.typed) != len(table):
            self.source = self.typed
        self.raw_served_at: dict[str, datetime] = {}
        self.raw_rows: dict[str, int] = {}
        self._ids: list[str] | None = None

    def ids(self) -> list[str]:
        if self._ids is None:
            self._ids = self.table.column("request_id").to_pylist()
        return self._ids

    def first_at(self) -> datetime | None:
        if not len(self.first):
            return None
        return as_utc(self.table.column("at")[int(self.first[0])].as_py())

    def served_at(self) -> Mapping[str, datetime]:
        """Request id -> time, for the served requests whose inputs are a list of rows."""
        import numpy as np

        at = self.table.column("at").cast("int64").to_numpy(zero_copy_only=False)
        ids = self.ids()
        keys = [ids[i] for i in self.typed_first]
        micros = at[self.typed_first]
        if self.raw_served_at:
            keys += list(self.raw_served_at)
            extra = [int(when.timestamp() * 1e6) for when in self.raw_served_at.values()]
            micros = np.concatenate([micros, np.asarray(extra, dtype=np.int64)])
        return _ById(keys, micros, lambda v: datetime.fromtimestamp(int(v) / 1e6, UTC))

    def request_rows(self) -> Mapping[str, int]:
        """Request id -> rows it sent, for the same requests."""
        import numpy as np

        rows = self.table.column("rows").to_numpy(zero_copy_only=False)
        ids = self.ids()
        keys = [ids[i] for i in self.typed_first]
        counts = rows[self.typed_first]
        if self.raw_rows:
            keys += list(self.raw_rows)
            counts = np.concatenate([counts, np.asarray(list(self.raw_rows.values()))])
        return _ById(keys, counts, int)

    def frame(self, signature: dict[str, Any]) -> tuple[pandas.DataFrame, dict[str, list[Any]]]:
        """The rows that fit the signature in log order, and their predictions, request ids,
        positions and versions."""
        import numpy as np
        import pandas as pd

        from conveyor.registry.signature import frame_from_columns, is_numeric

        if is_numeric(signature):
            block, bad = self._numeric_block(signature)
            typed: list[Any] = list(block)
        else:
            block = None
            typed, bad = self._typed_columns(signature)
        keep = np.ones(len(self.typed), dtype=bool)
        for j, why in bad:
            keep &= ~why
            for i in np.flatnonzero(why)[: max(MAX_PROBLEMS - len(self.problems), 0)]:
                k = int(self.typed[i])
                self._problem(
                    f"request {self.ids()[k]} row {self.table.column('row')[k].as_py()}: "
                    f"field {self.names[j]!r} is missing, but the field is not nullable"
                )
        dropped = int((~keep).sum())
        self.skipped += dropped
        index = self.typed[keep]
        predictions = self.table.column("prediction")
        version = self.table.column("version").to_numpy(zero_copy_only=False)
        position = self.table.column("row").to_numpy(zero_copy_only=False)
        if len(index) == len(self.table):  # every row typed and kept: no gather needed
            taken = predictions.to_pylist()
            request_ids = self.ids()  # no copy: nothing here changes the list
        elif len(index):
            taken = predictions.take(index).to_pylist()
            request_ids = self.table.column("request_id").take(index).to_pylist()
        else:
            taken, request_ids = [], []
        out: dict[str, list[Any]] = {
            "predictions": taken,
            "request_ids": request_ids,
            "positions": position[index].astype(int).tolist(),
            "versions": version[index].astype(int).tolist(),
        }
        if not len(index):
            frame = _empty(signature)
        elif block is not None:
            frame = _block_frame(self.names, block[:, keep] if dropped else block)
        else:
            frame = frame_from_columns(signature, [col[keep] for col in typed])
        if len(self.raw_first):
            raw_frame, raw_out, raw_order = self._raw(signature)
            if len(raw_frame):
                order = np.argsort(
                    np.concatenate([index.astype(np.float64), raw_order]), kind="stable"
                )
                frame = pd.concat([frame, raw_frame], ignore_index=True)
                frame = frame.iloc[order].reset_index(drop=True)
                for key in out:
                    merged = out[key] + raw_out[key]
                    out[key] = [merged[i] for i in order]
        return frame, out

    def _numeric_block(
        self, signature: dict[str, Any]
    ) -> tuple[numpy.ndarray, list[tuple[int, numpy.ndarray]]]:
        """The typed rows of an all-numeric signature as one float64 block (fields, rows) in
        log order, and the rows where a field that is not nullable is missing. The block read
        in scan order (``_gather_numeric``) is put in log order in place, one field at a time
        through one spare row, and packed to the front of its memory: the frame takes it
        without a copy, and the window never holds the inputs twice (on a million rows of 25
        fields, 200 MB). NaN stands for a null, as ``_typed_columns`` gives it."""
        import numpy as np

        block, self.block = self.block, None
        if block is None:
            raise AssertionError("_numeric_block needs the block _gather_numeric read")
        source = self.source
        count = len(self.typed)
        if source is not None:
            fields = block.shape[0]
            flat = block.reshape(-1)  # the block is C-contiguous: a view
            spare = np.empty(count, dtype=np.float64)
            for j in range(fields):
                # mode="clip": the indices are valid, and mode="raise" buffers the output (a
                # copy per field: 0.7 of the window's 3 CPU seconds on a million rows)
                np.take(block[j], source, out=spare, mode="clip")
                # row j's new place ends before row j+1's old one starts: nothing unread is
                # overwritten
                flat[j * count : (j + 1) * count] = spare
            del spare
            block = flat[: fields * count].reshape(fields, count)
        bad: list[tuple[int, numpy.ndarray]] = []
        for j in sorted(self.nulls):
            missing = self.nulls[j] if source is None else self.nulls[j][source]
            if missing.any():
                bad.append((j, missing))
        self.nulls = {}
        return block, bad

    def _typed_columns(
        self, signature: dict[str, Any]
    ) -> tuple[list[Any], list[tuple[int, numpy.ndarray]]]:
        """Each input column as the arrays ``columns_from_rows`` would give, and the rows where
        a field that is not nullable is missing (a column the file did not have)."""
        import numpy as np
        import pandas as pd
        import pyarrow as pa

        columns: list[Any] = []
        bad: list[tuple[int, numpy.ndarray]] = []
        rows = None if self.source is None else pa.array(self.source, pa.int64())
        for j, f in enumerate(signature["inputs"]):
            col = self.inputs.column(INPUT_PREFIX + self.names[j])
            if rows is not None:
                col = col.take(rows)
            kind = f.get("type")
            nulls = col.is_null().to_numpy(zero_copy_only=False)
            if kind in ("number", "integer"):
                if pa.types.is_null(col.type):
                    values = np.full(len(col), np.nan)
                else:
                    values = col.cast(pa.float64()).to_numpy(zero_copy_only=False)
                    values = np.where(nulls, np.nan, values)
            elif kind == "datetime":
                series = pd.Series(col.to_pandas() if len(col) else [], dtype="datetime64[ns, UTC]")
                series = series.dt.tz_convert(f.get("timezone"))
                values = series.array
            elif kind == "boolean" and not f.get("nullable", True):
                values = np.asarray(col.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)
            else:
                values = np.asarray(col.to_pandas(), dtype=object)
                if nulls.any():
                    values[nulls] = np.nan
            columns.append(values)
            if not f.get("nullable", True) and nulls.any():
                bad.append((j, nulls))
        return columns, bad

    def _raw(
        self, signature: dict[str, Any]
    ) -> tuple[pandas.DataFrame, dict[str, list[Any]], numpy.ndarray]:
        """The requests whose inputs are kept as JSON, parsed and checked as sent."""
        import numpy as np

        parsed = _Parsed(self.names)
        ids = self.ids()
        raw = self.table.column("raw_inputs")
        at = self.table.column("at")
        rows = self.table.column("rows")
        version = self.table.column("version")
        predictions = self.table.column("prediction")
        count = len(self.table)
        starts: list[float] = []
        for i in self.raw_first:
            k = int(i)
            rid = ids[k]
            end = k + 1
            while end < count and ids[end] == rid:
                end += 1
            preds = predictions.slice(k, end - k).to_pylist()
            before = len(parsed.rows)
            parsed.add(
                rid,
                as_utc(at[k].as_py()),
                int(version[k].as_py()),
                int(rows[k].as_py() or 0),
                raw[k].as_py(),
                preds,
            )
            added = len(parsed.rows) - before
            starts.extend(k + (p + 1) / (added + 1) for p in range(added))
        frame = parsed.frame(signature)
        self.raw_served_at, self.raw_rows = parsed.served_at, parsed.request_rows
        self.skipped += parsed.skipped
        for text in parsed.problems:
            self._problem(text)
        keep = parsed._keep if parsed._keep is not None else np.ones(len(starts), dtype=bool)
        order = np.asarray(starts, dtype=np.float64)[keep] if starts else np.zeros(0)
        out = {
            name: parsed.kept(name)
            for name in ("predictions", "request_ids", "positions", "versions")
        }
        return frame, out, order

    def _problem(self, text: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(text)


class _ById(Mapping[str, _V]):
    """Request id -> a value per request, kept as a list of ids beside a NumPy array: the
    index by id and each Python value are made only when asked (a window of a million
    requests would otherwise build a million-entry dict and a million datetimes it rarely
    reads: the monitor looks up only the requests whose labels came back)."""

    def __init__(self, ids: list[str], values: numpy.ndarray, convert: Callable[[Any], _V]):
        self._ids = ids
        self._values = values
        self._convert = convert
        self._index: dict[str, int] | None = None

    def __getitem__(self, key: str) -> _V:
        if self._index is None:
            self._index = {rid: i for i, rid in enumerate(self._ids)}
        return self._convert(self._values[self._index[key]])

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def __len__(self) -> int:
        return len(self._ids)


# -- parsing -----------------------------------------------------------------------------------


class _Parsed:
    """Rows of the window's requests, split by shape (records or arrays), with their origins."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.rows: list[Any] = []
        self.predictions: list[Any] = []
        self.request_ids: list[str] = []
        self.positions: list[int] = []
        self.versions: list[int] = []
        self.served_at: dict[str, datetime] = {}
        self.request_rows: dict[str, int] = {}
        self.skipped = 0
        self.problems: list[str] = []
        self._keep: numpy.ndarray | None = None

    def add(
        self, rid: str, at: Any, version: int, rows: int, inputs: str, outputs: list[Any]
    ) -> None:
        try:
            values = orjson.loads(inputs) if inputs else None
        except orjson.JSONDecodeError as exc:
            self._skip_request(rid, rows, f"its inputs are not JSON ({exc})")
            return
        if not isinstance(values, list) or not values:
            self._skip_request(rid, rows, "its inputs are not a list of rows")
            return
        self.served_at[rid] = at
        self.request_rows[rid] = len(values)
        predictions = outputs if len(outputs) == len(values) else [None] * len(values)
        self.rows.extend(values)
        self.predictions.extend(predictions)
        self.request_ids.extend([rid] * len(values))
        self.positions.extend(range(len(values)))
        self.versions.extend([version] * len(values))

    def _skip_request(self, rid: str, rows: int, why: str) -> None:
        self.skipped += max(int(rows or 0), 1)
        self._problem(f"request {rid}: {why}")

    def _problem(self, text: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(text)

    def frame(self, signature: dict[str, Any]) -> pandas.DataFrame:
        """The rows that fit the signature, in log order; the others are skipped and counted."""
        import numpy as np

        from conveyor.registry.signature import frame_from_columns

        n = len(self.rows)
        keep = np.zeros(n, dtype=bool)
        pieces: list[tuple[numpy.ndarray, list[Any]]] = []
        records = [i for i, row in enumerate(self.rows) if type(row) is dict]
        arrays = [i for i, row in enumerate(self.rows) if type(row) is list]
        for group in (records, arrays):
            if group:
                index = np.asarray(group, dtype=np.int64)
                for sub, columns in self._check(signature, index):
                    keep[sub] = True
                    pieces.append((sub, columns))
        for i in np.flatnonzero(~keep)[: MAX_PROBLEMS - len(self.problems)]:
            self._problem(
                f"request {self.request_ids[i]} row {self.positions[i]}: "
                f"{self._why(signature, int(i))}"
            )
        self.skipped += int(n - keep.sum())
        self._keep = keep
        if not pieces:
            return _empty(signature)
        order = np.concatenate([sub for sub, _c in pieces])
        merged = [np.concatenate([cols[j] for _s, cols in pieces]) for j in range(len(self.names))]
        frame = frame_from_columns(signature, merged)
        # back into log order: the positions of the kept rows, sorted
        if len(pieces) > 1:
            frame = frame.iloc[np.argsort(order, kind="stable")].reset_index(drop=True)
        return frame

    def _check(
        self, signature: dict[str, Any], index: numpy.ndarray
    ) -> list[tuple[numpy.ndarray, list[Any]]]:
        """Checked column arrays for the rows at ``index``: the whole block when it fits,
        else its halves, down to single rows, which are dropped."""
        from conveyor.registry.signature import columns_from_rows

        rows = [self.rows[i] for i in index]
        try:
            return [(index, columns_from_rows(signature, rows))]
        except RegistryError as exc:
            raise MonitorError(f"Cannot read the request log: {exc}") from exc
        except (InvalidInput, TypeError, ValueError, OverflowError):
            if len(index) == 1:
                return []
        half = len(index) // 2
        return self._check(signature, index[:half]) + self._check(signature, index[half:])

    def _why(self, signature: dict[str, Any], i: int) -> str:
        from conveyor.registry.signature import columns_from_rows

        try:
            columns_from_rows(signature, [self.rows[i]])
        except (InvalidInput, TypeError, ValueError, OverflowError) as exc:
            return str(exc).replace("Row 0 (0-based)", "the row").replace("Row 0", "the row")
        return "a row of another shape"

    def kept(self, name: str) -> list[Any]:
        values = getattr(self, name)
        keep = self._keep
        if keep is None or keep.all():
            return list(values)
        return [v for v, k in zip(values, keep, strict=True) if k]


def _gather_numeric(
    signature: dict[str, Any], names: list[str]
) -> Callable[
    [int, pa.Schema, Iterator[pa.RecordBatch]],
    tuple[pa.Table, numpy.ndarray, dict[int, numpy.ndarray]],
]:
    """What ``gather_requests`` calls for an all-numeric signature: it copies each batch's
    request columns and writes its inputs into one float64 block (fields, rows), in the order
    the rows come, casting integers and giving NaN for a null; it marks the nulls of the fields
    that are not nullable. Returns ``(requests, block, nulls)`` for ``_Read``."""
    import numpy as np
    import pyarrow as pa

    strict = [not f.get("nullable", True) for f in signature["inputs"]]

    def gather(
        rows: int, schema: pa.Schema, batches: Iterator[pa.RecordBatch]
    ) -> tuple[pa.Table, numpy.ndarray, dict[int, numpy.ndarray]]:
        requests = [c for c in schema.names if c in _COLUMNS]
        block = np.empty((len(names), rows), dtype=np.float64)
        nulls: dict[int, numpy.ndarray] = {}
        kept: list[pa.RecordBatch] = []
        memory = pa.default_cpu_memory_manager()
        at = 0
        for batch in batches:
            size = batch.num_rows
            if at + size > rows:
                raise MonitorError(
                    f"The request log gave more rows than it counted ({rows}); read the "
                    "window again."
                )
            for j, name in enumerate(names):
                col = batch.column(INPUT_PREFIX + name)
                if pa.types.is_null(col.type):
                    block[j, at : at + size] = np.nan
                    missing = np.ones(size, dtype=bool) if strict[j] else None
                else:
                    if col.type != pa.float64():
                        col = col.cast(pa.float64())
                    block[j, at : at + size] = col.to_numpy(zero_copy_only=False)  # NaN: null
                    missing = None
                    if strict[j] and col.null_count:
                        missing = col.is_null().to_numpy(zero_copy_only=False)
                if missing is not None:
                    if j not in nulls:
                        nulls[j] = np.zeros(rows, dtype=bool)
                    nulls[j][at : at + size] = missing
            # a copy: a column of the batch kept would keep the whole batch, inputs and all
            kept.append(batch.select(requests).copy_to(memory))
            at += size
        if at != rows:
            raise MonitorError(
                f"The request log gave {at} rows where it counted {rows}; read the window again."
            )
        table = pa.Table.from_batches(kept, schema=pa.schema([schema.field(c) for c in requests]))
        return table, block, nulls

    return gather


def _block_frame(names: list[str], block: numpy.ndarray) -> pandas.DataFrame:
    """A frame over a float64 block (fields, rows) without copying it: the transposed block is
    the frame's one 2-D block, each column a contiguous row of it."""
    import pandas as pd

    return pd.DataFrame(block.T, columns=names, copy=False)


def _input_names(signature: dict[str, Any]) -> list[str]:
    try:
        names = [str(f["name"]) for f in signature["inputs"]]
    except (KeyError, TypeError) as exc:
        raise MonitorError(
            f"The model's signature is malformed (missing {exc}); register the model again."
        ) from None
    if not names:
        raise MonitorError("The model's signature has no inputs; register the model again.")
    return names


def _empty(signature: dict[str, Any]) -> pandas.DataFrame:
    """A frame with no rows and the dtypes a checked frame would have."""
    import numpy as np
    import pandas as pd

    dtypes = {
        "integer": np.float64,
        "number": np.float64,
        "string": object,
        "boolean": object,
        "datetime": "datetime64[ns]",
    }
    return pd.DataFrame(
        {
            f["name"]: pd.Series([], dtype=dtypes.get(f.get("type"), object))
            for f in signature["inputs"]
        }
    )


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _bound(value: datetime) -> datetime:
    """A datetime in UTC: SQLite compares the text of its wall time, which must be UTC's."""
    return value.astimezone(UTC)


def _signature(store: Store, model: str, environment: str, version: int | None) -> dict[str, Any]:
    """The signature of ``version``, else of the version the environment's alias serves."""
    with store.session() as s:
        if version is None:
            alias = s.get(m.Alias, (model, environment))
            if alias is None:
                raise MonitorError(nothing_routed(model, environment, s))
            version = alias.version
        row = s.scalar(
            select(m.ModelVersion.signature).where(
                m.ModelVersion.model == model, m.ModelVersion.version == version
            )
        )
    if row is None:
        raise MonitorError(f"Model {model!r} has no version {version}; nothing to monitor.")
    return dict(row)


def nothing_routed(model: str, environment: str, session: Any) -> str:
    """The message for an environment that serves no version of ``model``."""
    aliases = sorted(session.scalars(select(m.Alias.alias).where(m.Alias.model == model)))
    if not aliases:
        known = session.scalar(select(m.ModelVersion.id).where(m.ModelVersion.model == model))
        if known is None:
            return (
                f"No model {model!r} in the registry, so environment {environment!r} serves "
                "nothing to monitor. Check the name with 'conveyor models list'."
            )
    return (
        f"Nothing is routed to environment {environment!r}: model {model!r} has no "
        f"{environment!r} alias (it has: {', '.join(aliases) or 'none'}). Deploy a version "
        f"there with 'conveyor deploy {model} VERSION --to {environment}', or monitor another "
        "environment."
    )
