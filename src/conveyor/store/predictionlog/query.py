"""The one place that reads the prediction log: windows of requests, their feedback, known ids.

The engine is DuckDB, chosen by ``benchmarks/prediction_log_bench.py`` (see
``docs/prediction-log.md`` for the figures against PyArrow datasets): it reads the typed columns
of a million-row window into Arrow in well under a second, unions files whose columns differ (a
signature that changed between versions) by name, and pushes the role, version and time filters
into the Parquet scan. Files are listed here, not by the engine: the day partitions outside the
window are never opened, and a compacted file's inputs are never read twice (``files.py``).

DuckDB and PyArrow are imported inside the functions: the CLI's fast path imports nothing heavy.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from conveyor.exceptions import StoreError
from conveyor.store.predictionlog import layout
from conveyor.store.predictionlog.files import LogFiles, with_retry

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

__all__ = [
    "LOG_ORDER",
    "find_requests",
    "gather_requests",
    "read_all",
    "latest_labels",
    "log_of",
    "read_feedback",
    "read_requests",
    "request_files",
]


_T = TypeVar("_T")

LOG_ORDER = ("at", "request_id", "version", "role", "row")  # the requests' order, ascending


def log_of(store: Any) -> LogFiles:
    """The prediction log of the project whose metadata store is ``store``.

    Raises:
        StoreError: the store was opened without its log (not through ``open_stores``).
    """
    url = layout.location(store)
    if url is None:
        raise StoreError(
            "This metadata store was opened without its prediction log; open the project "
            "with open_stores(), or attach <artifacts>/prediction-log/v1 to the store "
            "(conveyor.store.predictionlog.layout.attach)."
        )
    return LogFiles(url)


def latest_labels(
    files: LogFiles, request_ids: Sequence[str], since: datetime | None = None
) -> tuple[dict[str, list[Any]], dict[str, datetime]]:
    """The latest labels sent for each request (its JSON array, parsed), and when they came;
    feedback that is not a JSON array is ignored."""
    import orjson

    table = read_feedback(files, request_ids, since)
    labels: dict[str, list[Any]] = {}
    when: dict[str, datetime] = {}
    for rid, at, text in zip(
        table.column("request_id").to_pylist(),
        table.column("at").to_pylist(),
        table.column("labels").to_pylist(),
        strict=True,
    ):
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError:
            continue
        if isinstance(value, list):
            labels[rid], when[rid] = value, at.astimezone(UTC)
    return labels, when


def request_files(
    files: LogFiles,
    model: str,
    environment: str,
    since: datetime | None,
    until: datetime | None,
) -> list[str]:
    """The data files of one model and environment whose day overlaps [since, until]."""
    base = layout.requests_dir(files.root, model, environment)
    first = layout.day_of(since) if since is not None else None
    last = layout.day_of(until) if until is not None else None
    out: list[str] = []
    for folder in files.day_folders(base, first, last):
        out.extend(files.list_files(folder))
    return out


def read_requests(
    files: LogFiles,
    model: str,
    environment: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    versions: Sequence[int] | None = None,
    roles: Sequence[str] | None = None,
    inputs: Sequence[str] = (),
    last: int | None = None,
    columns: Sequence[str] | None = None,
    ordered: bool = True,
) -> pa.Table:
    """Rows of logged requests in log order (time, then request, then row).

    Args:
        files: the log.
        model: the model's name.
        environment: the environment whose traffic to read.
        since: rows at or after this time (None: from the first).
        until: rows at or before this time (None: to the last).
        versions: only these versions (None: every version).
        roles: only these roles (None: every role).
        inputs: the signature's input fields to read as ``in.<name>`` columns; a field no file
            has is a column of nulls.
        last: only the last ``last`` requests (by time) of those selected.
        columns: the request-level columns to read (default: all of ``REQUEST_COLUMNS`` that
            exist).
        ordered: False: the rows in no particular order, for a caller that puts them in log
            order itself (``LOG_ORDER``). DuckDB's ORDER BY materialises every selected column
            once more: on a million rows of 25 inputs, 1.4 s and 250 MB that the monitor's
            window saves by sorting the key columns' indices with Arrow and gathering its
            inputs once, in that order.
    """

    def read() -> pa.Table:
        paths = request_files(files, model, environment, since, until)
        if not paths:
            return _empty(inputs, columns)
        con = _connect(files)
        try:
            sql, params = _requests_sql(
                files, paths, since, until, versions, roles, inputs, last, columns, ordered
            )
            return con.sql(sql, params=params).to_arrow_table()
        finally:
            _release(con)

    return with_retry(read)


def gather_requests(
    files: LogFiles,
    model: str,
    environment: str,
    gather: Callable[[int, pa.Schema, Iterator[pa.RecordBatch]], _T],
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    versions: Sequence[int] | None = None,
    roles: Sequence[str] | None = None,
    inputs: Sequence[str] = (),
    last: int | None = None,
    columns: Sequence[str] | None = None,
    batch_rows: int = 131_072,
    threads: int | None = None,
) -> _T:
    """The rows ``read_requests(ordered=False)`` selects, streamed in record batches to
    ``gather(rows, schema, batches)``, which returns what it kept; ``rows`` is the exact number
    of rows the batches will hold (counted first), so that the caller can allocate its arrays
    once. The batches are DuckDB's memory, released as soon as the caller drops them: a batch
    column kept (even one) holds the whole batch, so keep copies (``RecordBatch.copy_to``).

    Why: ``read_requests`` hands over one Arrow table, which DuckDB's allocator holds twice
    over while building it. On a million rows of 25 float inputs (a 260 MB table) the window
    grew RSS by 450-490 MB before its own float64 block (200 MB) was gathered from it; streaming
    the inputs straight into the caller's block holds one batch at a time.

    ``gather`` may be called again from the start if a file vanished under the read (a
    compaction replaced it, as for ``read_requests``): it must not keep state across calls.

    ``threads``: DuckDB's threads for the stream (default: one up to ``_ONE_THREAD_ROWS``
    rows, else the connection's two). A second thread costs about 120 MB whatever the size
    and its gain depends on it: on the million-row window (2 CPUs, load 2.5, five runs each)
    one thread held 590 MB at the window's peak where two held 700-770, in 1.3-1.7 CPU
    seconds where two took 1.4-3.5; the report over ten million rows took 71 s with one
    thread and 37 s with two, at the same peak (5.9 GB).
    """

    def read() -> _T:
        paths = request_files(files, model, environment, since, until)
        if not paths:
            empty = _empty(inputs, columns)
            return gather(0, empty.schema, iter(empty.to_batches()))
        con = _connect(files)
        try:
            sql, params = _requests_sql(
                files, paths, since, until, versions, roles, inputs, last, columns, False
            )
            rows = int(con.sql(f"SELECT count(*) FROM ({sql})", params=params).fetchall()[0][0])
            if threads is not None:
                use = int(threads)
            else:
                use = 1 if rows <= _ONE_THREAD_ROWS else _THREADS
            con.execute(f"SET threads={use}")
            try:
                reader = con.sql(sql, params=params).to_arrow_reader(batch_rows)
                try:
                    return gather(rows, reader.schema, iter(reader))
                finally:
                    reader.close()  # a result left unread would block the kept connection
            finally:
                con.execute(f"SET threads={_THREADS}")
        finally:
            _release(con)

    return with_retry(read)


def _requests_sql(
    files: LogFiles,
    paths: list[str],
    since: datetime | None,
    until: datetime | None,
    versions: Sequence[int] | None,
    roles: Sequence[str] | None,
    inputs: Sequence[str],
    last: int | None,
    columns: Sequence[str] | None,
    ordered: bool,
) -> tuple[str, list[Any]]:
    """The query of ``read_requests`` over these files, and its parameters."""
    scan = _scan(paths)
    present = _columns(files, paths)
    wanted = [c for c in (columns or layout.REQUEST_COLUMNS) if c in present]
    select = [_q(c) for c in wanted]
    for name in inputs:
        col = layout.INPUT_PREFIX + name
        select.append(_q(col) if col in present else f"NULL AS {_q(col)}")
    where, params = _where(since, until, versions, roles)
    if not ordered:
        order = ""
    elif "row" in present:
        order = "ORDER BY " + ", ".join(_q(c) for c in LOG_ORDER)
    else:
        order = 'ORDER BY "at"'
    if last is not None:
        picked = (
            f'SELECT "request_id" FROM {scan} {where} AND "row" = 0 '
            f'ORDER BY "at" DESC, "request_id" DESC LIMIT {int(last)}'
        )
        where += f" AND request_id IN ({picked})"
        params = params + params
    return f"SELECT {', '.join(select)} FROM {scan} {where} {order}", params


def read_all(files: LogFiles, kind: str = layout.REQUESTS) -> pa.Table:
    """Every row of the log's requests (with their ``model``, ``environment`` and ``date``
    partition columns) or feedback, in log order: for tests, migrations and exports."""
    import pyarrow as pa

    def folders(base: str) -> list[str]:
        out = []
        for name in files.folders(base):
            path = layout.join(base, name)
            out.extend(folders(path) if not name.startswith("date=") else [path])
        return out

    def read() -> pa.Table:
        paths = [p for f in folders(layout.join(files.root, kind)) for p in files.list_files(f)]
        if not paths:
            return pa.table({})
        con = _connect(files)
        try:
            order = (
                '"at", "request_id", "version", "role", "row"'
                if kind == layout.REQUESTS
                else '"at", filename, file_row_number'
            )
            scan = _scan(paths, order=True).replace(
                "hive_partitioning=false", "hive_partitioning=true"
            )
            return con.sql(
                f"SELECT * EXCLUDE (filename, file_row_number) FROM {scan} ORDER BY {order}"
            ).to_arrow_table()
        finally:
            _release(con)

    return with_retry(read)


def read_feedback(
    files: LogFiles, request_ids: Sequence[str], since: datetime | None = None
) -> pa.Table:
    """The feedback rows sent for these request ids (at or after ``since``'s day), oldest
    first, so the last row of a request id is its latest labels."""
    import pyarrow as pa

    empty = pa.table(
        {
            "request_id": pa.array([], pa.string()),
            "at": pa.array([], pa.timestamp("us", tz="UTC")),
            "labels": pa.array([], pa.string()),
        }
    )
    if not request_ids:
        return empty

    def read() -> pa.Table:
        base = layout.feedback_dir(files.root)
        first = layout.day_of(since) if since is not None else None
        paths = [p for d in files.day_folders(base, first, None) for p in files.list_files(d)]
        if not paths:
            return empty
        con = _connect(files)
        try:
            con.register("wanted", pa.table({"rid": pa.array(list(set(request_ids)), pa.string())}))
            sql = (
                f'SELECT "request_id", "at", "labels" FROM {_scan(paths, order=True)} '
                "WHERE request_id IN (SELECT rid FROM wanted) "
                'ORDER BY "at", filename, file_row_number'
            )
            return con.sql(sql).to_arrow_table()
        finally:
            _release(con)

    return with_retry(read)


def find_requests(
    files: LogFiles, request_ids: Sequence[str], *, days: int = 7, now: datetime | None = None
) -> set[str]:
    """Which of these request ids the log holds, looking at the newest days first (feedback
    mostly names recent requests) and stopping once all are found."""
    import pyarrow as pa

    wanted = set(request_ids)
    found: set[str] = set()
    if not wanted:
        return found
    end = now or datetime.now(UTC)
    first = layout.day_of(end - timedelta(days=days))
    base = layout.join(files.root, layout.REQUESTS)
    folders_by_day: dict[str, list[str]] = {}
    for model in files.folders(base):
        for env in files.folders(layout.join(base, model)):
            for folder in files.day_folders(layout.join(base, model, env), first, None):
                day = layout.partition_value(_last(folder))
                folders_by_day.setdefault(day, []).append(folder)
    for day in sorted(folders_by_day, reverse=True):

        def read(day: str = day, found: set[str] = found) -> set[str]:
            paths = [p for f in folders_by_day[day] for p in files.list_files(f)]
            if not paths:
                return set()
            con = _connect(files)
            try:
                con.register("wanted", pa.table({"rid": pa.array(sorted(wanted - found))}))
                sql = (
                    f"SELECT DISTINCT request_id FROM {_scan(paths)} "
                    "WHERE request_id IN (SELECT rid FROM wanted)"
                )
                return {r[0] for r in con.execute(sql).fetchall()}
            finally:
                _release(con)

        found |= with_retry(read)
        if found >= wanted:
            break
    return found


# -- helpers -----------------------------------------------------------------------------------


def _connect(files: LogFiles) -> duckdb.DuckDBPyConnection:
    """This thread's DuckDB connection for the log's file system, kept open: its object cache
    keeps the footers of files already read (they never change), so a long-lived reader such as
    the controller reads each file's metadata once, not at every turn."""
    import duckdb

    connections: dict[str, duckdb.DuckDBPyConnection] = getattr(_LOCAL, "connections", {})
    key = files.root if files.remote else ""
    con = connections.get(key)
    if con is None:
        con = duckdb.connect(config={"threads": _THREADS, "enable_object_cache": True})
        if files.remote:
            con.register_filesystem(files.fs)
        connections[key] = con
        _LOCAL.connections = connections
    return con


def _release(con: duckdb.DuckDBPyConnection) -> None:
    """Drop what a read registered on the kept connection (the ids it joined against)."""
    try:
        con.unregister("wanted")
    except Exception:  # nothing was registered
        pass


_LOCAL = threading.local()
_THREADS = 2  # DuckDB's threads on a kept connection
_ONE_THREAD_ROWS = 1_500_000  # gather_requests streams up to this many rows on one thread
_SCHEMAS: dict[str, frozenset[str]] = {}  # file -> its column names (files never change)
_SCHEMAS_MAX = 200_000


def _columns(files: LogFiles, paths: list[str]) -> set[str]:
    """The union of the files' column names, each file's footer read once per process."""
    import pyarrow.parquet as pq

    present: set[str] = set()
    for path in paths:
        names = _SCHEMAS.get(path)
        if names is None:
            handle = files.fs.open(path, "rb") if files.remote else open(path, "rb")  # noqa: SIM115
            with handle:
                names = frozenset(pq.read_schema(handle).names)
            if len(_SCHEMAS) >= _SCHEMAS_MAX:
                _SCHEMAS.clear()
            _SCHEMAS[path] = names
        present |= names
    return present


def _scan(paths: list[str], *, order: bool = False) -> str:
    listed = ", ".join("'" + p.replace("'", "''") + "'" for p in paths)
    extra = ", filename=true, file_row_number=true" if order else ""
    return f"read_parquet([{listed}], union_by_name=true, hive_partitioning=false{extra})"


def _where(
    since: datetime | None,
    until: datetime | None,
    versions: Sequence[int] | None,
    roles: Sequence[str] | None,
) -> tuple[str, list[Any]]:
    clauses = ["TRUE"]
    params: list[Any] = []
    if since is not None:
        clauses.append('"at" >= ?')
        params.append(since.astimezone(UTC))
    if until is not None:
        clauses.append('"at" <= ?')
        params.append(until.astimezone(UTC))
    if versions is not None:
        clauses.append(f"version IN ({', '.join(str(int(v)) for v in versions) or 'NULL'})")
    if roles is not None:
        clauses.append(f"role IN ({', '.join('?' for _ in roles) or 'NULL'})")
        params.extend(roles)
    return "WHERE " + " AND ".join(clauses), params


def _last(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1].rsplit(os.sep, 1)[-1]


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _empty(inputs: Sequence[str], columns: Sequence[str] | None) -> pa.Table:
    import pyarrow as pa

    types = {
        "request_id": pa.string(),
        "row": pa.int32(),
        "rows": pa.int32(),
        "at": pa.timestamp("us", tz="UTC"),
        "version": pa.int32(),
        "role": pa.string(),
        "status": pa.int16(),
        "latency_ms": pa.float32(),
        "gateway": pa.string(),
        "prediction": pa.null(),
        "probabilities": pa.list_(pa.float32()),
        "raw_inputs": pa.string(),
        "raw_outputs": pa.string(),
    }
    fields = [pa.field(c, types[c]) for c in (columns or layout.REQUEST_COLUMNS)]
    fields += [pa.field(layout.INPUT_PREFIX + n, pa.null()) for n in inputs]
    return pa.schema(fields).empty_table()
