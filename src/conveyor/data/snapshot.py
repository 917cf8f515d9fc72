"""What ``conveyor run`` records about each data source: a content hash, then a profile.

Two speeds on purpose. :func:`fingerprint_files` runs on every ``conveyor run`` and only hashes
bytes (through the stat cache, so an unchanged project costs a few stat calls); it decides
whether anything downstream must run again. :func:`profile` parses the data to record schema,
row count and per-column statistics; it streams record batches so memory stays bounded, and it
spends its time in Arrow's C++ code with the GIL released, so it can run in a background thread
beside the pipeline's steps.

pyarrow and pandas are imported inside the functions that parse data, never at import time.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import xxhash

from conveyor.data.hashing import FileHasher, combine
from conveyor.data.sources import FileScan, Rescan, query_sql, read_frame, resolve_files
from conveyor.exceptions import DataError

if TYPE_CHECKING:
    import pandas
    import pyarrow

KINDS = ("files", "sql")
TOP_VALUES = 5
# Exact distinct counting stops here, to bound memory on id-like text columns; past it the
# profile reports a lower bound and approximate top values.
MAX_DISTINCT = 100_000
GROUP_ROWS = 128 * 1024


@dataclass
class FileEntry:
    """One file of a snapshot."""

    path: str  # relative to the project root, posix; absolute if outside the root
    size: int
    hash: str


@dataclass
class Snapshot:
    """The recorded state of one data source at one run."""

    source: str
    kind: str  # "files" | "sql"
    content_hash: str
    files: list[FileEntry] = field(default_factory=list)
    schema: dict[str, str] | None = None  # column -> Arrow type string
    row_count: int | None = None
    profile: dict[str, dict[str, Any]] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dict (only dicts, lists, str, int, float, bool and None)."""
        return {
            "source": self.source,
            "kind": self.kind,
            "content_hash": self.content_hash,
            "files": [{"path": f.path, "size": f.size, "hash": f.hash} for f in self.files],
            "schema": None if self.schema is None else dict(self.schema),
            "row_count": self.row_count,
            "profile": self.profile,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Snapshot:
        """Rebuild a snapshot from :meth:`to_dict` output.

        Raises:
            DataError: A required key is missing or the kind is unknown.
        """
        try:
            snapshot = cls(
                source=data["source"],
                kind=data["kind"],
                content_hash=data["content_hash"],
                files=[
                    FileEntry(path=f["path"], size=int(f["size"]), hash=f["hash"])
                    for f in data.get("files") or []
                ],
                schema=data.get("schema"),
                row_count=data.get("row_count"),
                profile=data.get("profile"),
            )
        except KeyError as exc:
            raise DataError(
                f"Snapshot record lacks the key {exc.args[0]!r}; it was not written by Conveyor."
            ) from exc
        if snapshot.kind not in KINDS:
            raise DataError(
                f"Snapshot of {snapshot.source!r} has unknown kind {snapshot.kind!r};"
                f" expected one of {', '.join(KINDS)}."
            )
        return snapshot


# -- fingerprints ---------------------------------------------------------------------------


def fingerprint_files(name: str, pattern: str, root: Path, hasher: FileHasher) -> Snapshot:
    """Hash a file source without parsing it; cheap enough for every ``conveyor run``.

    Args:
        name: The source's name in conveyor.yaml.
        pattern: Its path or glob, relative to ``root`` unless absolute.
        root: The project directory.
        hasher: Hashes through the stat cache, so unchanged files are not read.

    Raises:
        DataError: Nothing matches, or a file is unreadable.
    """
    root = Path(root).resolve()
    paths = resolve_files(name, pattern, root)
    digests = hasher.hash_many(paths)
    files = []
    for path in paths:
        try:
            size = os.stat(path).st_size
        except OSError as exc:
            raise DataError(f"Data source {name!r}: cannot stat {str(path)!r}: {exc}.") from exc
        files.append(FileEntry(path=_relative(path, root), size=size, hash=digests[path]))
    content_hash = combine((f.path, f.hash) for f in files)
    return Snapshot(source=name, kind="files", content_hash=content_hash, files=files)


def fingerprint_sql(name: str, url: str, query: str) -> tuple[Snapshot, pyarrow.Table]:
    """Run a SQL source's query and hash its result.

    The hash is xxh3-128 over the Arrow IPC stream of the result, so it changes with any value,
    column name, type or row order.

    Args:
        name: The source's name in conveyor.yaml.
        url: A SQLAlchemy database URL.
        query: The SELECT to run.

    Raises:
        DataError: The query cannot be run or its result cannot be typed.
    """
    table = query_sql(name, url, query)
    snapshot = Snapshot(
        source=name,
        kind="sql",
        content_hash=_hash_table(table),
        schema={f.name: str(f.type) for f in table.schema},
        row_count=table.num_rows,
    )
    return snapshot, table


# -- profile --------------------------------------------------------------------------------


def profile(
    snapshot: Snapshot,
    root: Path,
    fmt: str | None = None,
    table: pyarrow.Table | None = None,
) -> Snapshot:
    """Return a copy of ``snapshot`` with schema, row count and per-column statistics.

    Per column: ``null_count`` (NaN counts as null, as in pandas); for numbers ``min``, ``max``,
    ``mean`` and ``std`` (sample, ddof=1); for text and categories ``distinct``,
    ``distinct_exact`` and ``top`` (the 5 commonest values with counts); for booleans
    ``true_count``; for dates and times ``min`` and ``max`` as ISO strings. Non-finite floats
    are stored as None so the result stays strict JSON.

    Args:
        snapshot: From :func:`fingerprint_files` or :func:`fingerprint_sql`.
        root: The project directory the snapshot's relative paths start from.
        fmt: ``"csv"`` or ``"parquet"`` for every file, instead of the extensions.
        table: For a SQL snapshot, the table :func:`fingerprint_sql` returned.

    Raises:
        DataError: A file cannot be parsed, changed since the snapshot, or the files of the
            source disagree on columns or types.
        ValueError: A SQL snapshot was given without its table.
    """
    if snapshot.kind == "sql":
        if table is None:
            raise ValueError(
                "profile() of a SQL snapshot needs the table fingerprint_sql returned."
            )
        stats = _Profiler(table.schema)
        for batch in table.to_batches():
            stats.add(batch)
        return _with_profile(snapshot, stats)

    root = Path(root).resolve()
    paths = _check_unchanged(snapshot, root)
    labelled = [(path, entry.path) for path, entry in zip(paths, snapshot.files, strict=True)]
    scan = FileScan(snapshot.source, labelled, fmt)
    scan.open()
    while True:
        stats = _Profiler(scan.schema)
        try:
            for batch in scan.batches():
                stats.add(batch)
        except Rescan:
            continue  # a column was widened: count again from scratch
        return _with_profile(snapshot, stats)


def load(
    snapshot: Snapshot,
    root: Path,
    fmt: str | None = None,
    options: dict[str, Any] | None = None,
    *,
    table: pyarrow.Table | None = None,
    hasher: FileHasher | None = None,
) -> pandas.DataFrame:
    """Read a snapshot's data as one DataFrame, for steps that take a source as input.

    The files read are exactly those the snapshot lists (the glob is not resolved again).

    Args:
        snapshot: The snapshot to load.
        root: The project directory the snapshot's relative paths start from.
        fmt: ``"csv"`` or ``"parquet"`` for every file, instead of the extensions.
        options: Keyword arguments for ``pandas.read_csv`` / ``pandas.read_parquet``.
        table: For a SQL snapshot, the table :func:`fingerprint_sql` returned.
        hasher: If given, each file's hash is checked against the snapshot first (cheap via
            the stat cache); otherwise only its size is.

    Raises:
        DataError: A file is missing, changed since the snapshot, or cannot be parsed.
        ValueError: A SQL snapshot was given without its table.
    """
    if snapshot.kind == "sql":
        if table is None:
            raise ValueError("load() of a SQL snapshot needs the table fingerprint_sql returned.")
        return table.to_pandas()
    paths = _check_unchanged(snapshot, Path(root).resolve())
    if hasher is not None:
        digests = hasher.hash_many(paths)
        for path, entry in zip(paths, snapshot.files, strict=True):
            if digests[path] != entry.hash:
                raise _changed(snapshot.source, entry.path)
    return read_frame(paths, fmt, options)


# -- internals ------------------------------------------------------------------------------


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _absolute(rel: str, root: Path) -> Path:
    path = Path(rel)
    return path if path.is_absolute() else root / path


def _changed(source: str, rel: str) -> DataError:
    return DataError(
        f"Data source {source!r}: file {rel!r} changed since the snapshot was taken."
        " Run again to take a new snapshot."
    )


def _check_unchanged(snapshot: Snapshot, root: Path) -> list[Path]:
    """The snapshot's files as absolute paths, after checking each still has its size."""
    if not snapshot.files:
        raise DataError(f"Data source {snapshot.source!r}: the snapshot lists no files.")
    paths = []
    for entry in snapshot.files:
        path = _absolute(entry.path, root)
        try:
            size = os.stat(path).st_size
        except OSError as exc:
            raise _gone(snapshot.source, entry.path) from exc
        if size != entry.size:
            raise _changed(snapshot.source, entry.path)
        paths.append(path)
    return paths


def _gone(source: str, rel: str) -> DataError:
    return DataError(
        f"Data source {source!r}: file {rel!r} is gone since the snapshot was taken."
        " Run again to take a new snapshot."
    )


def _hash_table(table: pyarrow.Table) -> str:
    """xxh3-128 of the table's Arrow IPC stream, fed to the hasher as it is written."""
    import pyarrow as pa
    import pyarrow.ipc

    h = xxhash.xxh3_128()

    class _Sink:
        closed = False

        def write(self, data: bytes) -> int:
            h.update(data)
            return len(data)

        def flush(self) -> None:
            pass

        def close(self) -> None:
            self.closed = True

    # One chunk per column, so equal tables serialize identically whatever their chunking.
    table = table.combine_chunks().replace_schema_metadata(None)
    with pa.PythonFile(_Sink(), mode="w") as sink:
        with pyarrow.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
    return h.hexdigest()


# -- statistics -----------------------------------------------------------------------------


def _with_profile(snapshot: Snapshot, stats: _Profiler) -> Snapshot:
    return replace(
        snapshot,
        schema={f.name: str(f.type) for f in stats.schema},
        row_count=stats.rows,
        profile=stats.result(),
    )


class _Profiler:
    """Per-column running statistics over record batches.

    Every ~128k rows cost one Acero aggregation (all columns at once, NaN projected to null)
    and one ``value_counts`` per text column. Each call releases the GIL, and they are few,
    because each hand-off back to a busy Python thread can cost a 5 ms switch interval.
    Groups merge exactly (Chan et al. for the variance).
    """

    def __init__(self, schema: pyarrow.Schema) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.types as t

        self.schema = schema
        self.rows = 0
        self.pending: list[pa.RecordBatch] = []
        self.pending_rows = 0
        self.columns: list[_Column] = []
        self.exprs: list[Any] = []
        self.aggregates: list[tuple[str, str, Any, str]] = []
        for i, f in enumerate(schema):
            key = str(i)
            type_ = f.type.value_type if t.is_dictionary(f.type) else f.type
            expr = pc.field(f.name)
            if t.is_dictionary(f.type):
                expr = expr.cast(type_)
            if t.is_decimal(type_):
                type_ = pa.float64()
                expr = expr.cast(type_)
            if t.is_floating(type_):  # NaN is missing, as pandas sees it
                expr = pc.if_else(pc.is_nan(expr), pa.scalar(None, type_), expr)
            self.exprs.append(expr)
            self.aggregates.append((key, "count", pc.CountOptions("only_null"), f"{key}.nulls"))
            column: _Column
            if t.is_boolean(type_):
                column = _BoolColumn(key)
                self.aggregates.append((key, "sum", None, f"{key}.true"))
            elif t.is_integer(type_) or t.is_floating(type_):
                column = _NumericColumn(key)
                self.aggregates += [
                    (key, "count", pc.CountOptions("only_valid"), f"{key}.n"),
                    (key, "min_max", None, f"{key}.minmax"),
                    (key, "mean", None, f"{key}.mean"),
                    (key, "variance", pc.VarianceOptions(ddof=0), f"{key}.var"),
                ]
            elif t.is_temporal(type_):
                column = _TemporalColumn(key)
                self.aggregates.append((key, "min_max", None, f"{key}.minmax"))
            elif t.is_string(type_) or t.is_large_string(type_):
                column = _TextColumn(key, i)
            else:
                column = _Column(key)
            self.columns.append(column)

    def add(self, batch: pyarrow.RecordBatch) -> None:
        """Queue a batch; statistics are computed per ~128k rows to keep GIL hand-offs few."""
        if batch.num_rows == 0:
            return
        self.rows += batch.num_rows
        self.pending.append(batch)
        self.pending_rows += batch.num_rows
        if self.pending_rows >= GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa
        from pyarrow import acero

        if not self.pending:
            return
        table = pa.Table.from_batches(self.pending)
        self.pending, self.pending_rows = [], 0
        plan = acero.Declaration.from_sequence(
            [
                acero.Declaration("table_source", acero.TableSourceNodeOptions(table)),
                acero.Declaration(
                    "project",
                    acero.ProjectNodeOptions(self.exprs, [str(i) for i in range(len(self.exprs))]),
                ),
                acero.Declaration("aggregate", acero.AggregateNodeOptions(self.aggregates)),
            ]
        )
        row = plan.to_table(use_threads=False).to_pylist()[0]
        for column in self.columns:
            column.add(row, table)

    def result(self) -> dict[str, dict[str, Any]]:
        self._flush()
        return {f.name: c.result() for f, c in zip(self.schema, self.columns, strict=True)}


class _Column:
    def __init__(self, key: str) -> None:
        self.key = key
        self.null_count = 0

    def add(self, row: dict[str, Any], table: pyarrow.Table) -> None:
        self.null_count += row[f"{self.key}.nulls"]

    def result(self) -> dict[str, Any]:
        return {"null_count": self.null_count}


class _NumericColumn(_Column):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.n = 0
        self.mean = 0.0
        self.m2 = 0.0  # sum of squared deviations from the mean
        self.min: Any = None
        self.max: Any = None

    def add(self, row: dict[str, Any], table: pyarrow.Table) -> None:
        super().add(row, table)
        n = row[f"{self.key}.n"]
        if not n:
            return
        bounds = row[f"{self.key}.minmax"]
        self.min = bounds["min"] if self.min is None else min(self.min, bounds["min"])
        self.max = bounds["max"] if self.max is None else max(self.max, bounds["max"])
        # Chan, Golub and LeVeque's pairwise merge: exact, and stable over many batches.
        mean, m2 = row[f"{self.key}.mean"], row[f"{self.key}.var"] * n
        total = self.n + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta * delta * self.n * n / total
        self.n = total

    def result(self) -> dict[str, Any]:
        return {
            "null_count": self.null_count,
            "min": _json_number(self.min),
            "max": _json_number(self.max),
            "mean": _json_number(self.mean) if self.n else None,
            "std": _json_number(math.sqrt(self.m2 / (self.n - 1))) if self.n > 1 else None,
        }


class _BoolColumn(_Column):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.true_count = 0

    def add(self, row: dict[str, Any], table: pyarrow.Table) -> None:
        super().add(row, table)
        self.true_count += row[f"{self.key}.true"] or 0

    def result(self) -> dict[str, Any]:
        return {"null_count": self.null_count, "true_count": self.true_count}


class _TemporalColumn(_Column):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.min: Any = None
        self.max: Any = None

    def add(self, row: dict[str, Any], table: pyarrow.Table) -> None:
        super().add(row, table)
        bounds = row[f"{self.key}.minmax"]
        if bounds["min"] is None:
            return
        self.min = bounds["min"] if self.min is None else min(self.min, bounds["min"])
        self.max = bounds["max"] if self.max is None else max(self.max, bounds["max"])

    def result(self) -> dict[str, Any]:
        return {"null_count": self.null_count, "min": _iso(self.min), "max": _iso(self.max)}


class _TextColumn(_Column):
    """Exact value counts, merged in Arrow (a group-by) every few batches."""

    MERGE_EVERY = 16

    def __init__(self, key: str, index: int) -> None:
        super().__init__(key)
        self.index = index
        self.pending: list[pyarrow.StructArray] = []
        self.counts: pyarrow.Table | None = None
        self.exact = True

    def add(self, row: dict[str, Any], table: pyarrow.Table) -> None:
        import pyarrow.compute as pc

        super().add(row, table)
        array = table.column(self.index)
        if array.null_count == len(array):
            return
        # A null value gets counted too; _merge drops it (it is in null_count already).
        self.pending.append(pc.value_counts(array))
        if len(self.pending) >= self.MERGE_EVERY:
            self._merge()

    def _merge(self) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc

        parts = []
        for counts in self.pending:
            values = counts.field("values")
            if values.type != pa.large_string():
                values = values.cast(pa.large_string())  # also decodes dictionaries
            parts.append(pa.table({"value": values, "n": counts.field("counts")}))
        self.pending = []
        if self.counts is not None:
            parts.append(self.counts)
        grouped = pa.concat_tables(parts).group_by("value").aggregate([("n", "sum")])
        merged = pa.table({"value": grouped["value"], "n": grouped["n_sum"]})
        merged = merged.filter(pc.is_valid(merged["value"]))
        if merged.num_rows > MAX_DISTINCT:
            # Keep the commonest values only (lossy counting): the top values stay right for
            # any value common enough to matter, and the distinct count becomes a lower bound.
            self.exact = False
            merged = merged.sort_by([("n", "descending")]).slice(0, MAX_DISTINCT // 2)
        self.counts = merged

    def result(self) -> dict[str, Any]:
        if self.pending:
            self._merge()
        counts = self.counts
        if counts is None:
            return {"null_count": self.null_count, "distinct": 0, "distinct_exact": True, "top": []}
        top = counts.sort_by([("n", "descending"), ("value", "ascending")]).slice(0, TOP_VALUES)
        return {
            "null_count": self.null_count,
            "distinct": counts.num_rows if self.exact else MAX_DISTINCT,
            "distinct_exact": self.exact,
            "top": [
                {"value": v, "count": c}
                for v, c in zip(
                    top.column("value").to_pylist(), top.column("n").to_pylist(), strict=True
                )
            ],
        }


def _json_number(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    isoformat: Callable[[], str] | None = getattr(value, "isoformat", None)
    return isoformat() if isoformat is not None else str(value)
