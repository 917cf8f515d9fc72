"""The log's files: written whole or not at all, listed without temp files or replaced inputs.

A local folder gets a temp file (``.<name>.tmp``, which readers skip) renamed into place, so a
writer killed mid-write leaves at most a temp file, never a truncated ``.parquet``; an object
store gets one put, which S3, GCS and Azure make visible only once complete. Nothing is ever
appended to an existing file.

Listing is where compaction stays invisible to readers: a compacted file ``c-*.parquet`` names
the files it replaces in its footer, and ``list_files`` drops those names, so a reader that
lists while the inputs still exist sees each row once; one whose listed file was deleted under it
gets ``FileNotFoundError`` and lists again (``with_retry``).
"""

from __future__ import annotations

import io
import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from conveyor.store.predictionlog import layout

if TYPE_CHECKING:
    import pyarrow as pa
    from fsspec import AbstractFileSystem

__all__ = [
    "LogFiles",
    "bool_array",
    "float32_lists",
    "inferred_array",
    "number_array",
    "string_array",
    "time_array",
]

_T = TypeVar("_T")


class LogFiles:
    """The files under one log root (a local folder or an fsspec URL)."""

    def __init__(self, root: str, storage_options: dict[str, Any] | None = None) -> None:
        self.root = root
        self.remote = layout.is_url(root) and not root.startswith("file://")
        if root.startswith("file://"):
            self.root = root[len("file://") :]
        self._storage_options = storage_options or {}
        self._fs: AbstractFileSystem | None = None
        self._replaced: dict[tuple[str, int], list[str]] = {}  # (path, size) -> names it replaces

    @property
    def fs(self) -> AbstractFileSystem:
        """The fsspec file system of a remote root (imported on first use)."""
        if self._fs is None:
            import fsspec.core

            self._fs, _ = fsspec.core.url_to_fs(self.root, **self._storage_options)
        return self._fs

    # -- writing ---------------------------------------------------------------------------------

    def write_table(
        self, folder: str, name: str, table: pa.Table, metadata: dict[bytes, bytes] | None = None
    ) -> str:
        """Write ``table`` as the Parquet file ``folder/name``, atomically; returns its path."""
        import pyarrow.parquet as pq

        if metadata:
            table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
        path = layout.join(folder, name)
        options = _parquet_options(table)
        if self.remote:
            buffer = io.BytesIO()
            pq.write_table(table, buffer, **options)
            self.fs.pipe_file(path, buffer.getvalue())  # one put: visible only when complete
            return path
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f".{name}.{secrets.token_hex(4)}.tmp")
        try:
            pq.write_table(table, tmp, **options)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        return path

    def delete(self, paths: Iterable[str]) -> None:
        for path in paths:
            try:
                if self.remote:
                    self.fs.rm_file(path)
                else:
                    os.unlink(path)
            except FileNotFoundError:
                pass

    def remove_folder(self, folder: str) -> None:
        """Remove a folder and what is left in it (temp files of a writer that died)."""
        if self.remote:
            try:
                self.fs.rm(folder, recursive=True)
            except FileNotFoundError:
                pass
        else:
            shutil.rmtree(folder, ignore_errors=True)

    # -- listing ---------------------------------------------------------------------------------

    def folders(self, base: str) -> list[str]:
        """Names of the ``key=value`` folders directly under ``base`` (none if it is missing)."""
        try:
            if self.remote:
                return sorted(
                    p.rstrip("/").rsplit("/", 1)[-1]
                    for p in self.fs.ls(base, detail=False)
                    if self.fs.isdir(p)
                )
            return sorted(e.name for e in os.scandir(base) if e.is_dir() and "=" in e.name)
        except FileNotFoundError:
            return []

    def entries(self, folder: str) -> list[tuple[str, int, float]]:
        """(name, size, modified time) of every data file in ``folder``, temp files excluded."""
        try:
            if self.remote:
                out = []
                for info in self.fs.ls(folder, detail=True):
                    name = str(info["name"]).rstrip("/").rsplit("/", 1)[-1]
                    if info.get("type") == "file" and layout.data_file(name):
                        out.append((name, int(info.get("size") or 0), _mtime(info)))
                return sorted(out)
            out = []
            with os.scandir(folder) as it:
                for e in it:
                    if layout.data_file(e.name) and e.is_file():
                        st = e.stat()
                        out.append((e.name, st.st_size, st.st_mtime))
            return sorted(out)
        except FileNotFoundError:
            return []

    def list_files(self, folder: str) -> list[str]:
        """The data files a reader reads in ``folder``: without those a compacted file replaces."""
        entries = self.entries(folder)
        replaced: set[str] = set()
        for name, size, _m in entries:
            if name.startswith(layout.COMPACTED_PREFIX):
                replaced.update(self.replaces(layout.join(folder, name), size))
        return [layout.join(folder, n) for n, _s, _m in entries if n not in replaced]

    def replaces(self, path: str, size: int) -> list[str]:
        """The file names a compacted file replaces (read once from its footer, then cached)."""
        key = (path, size)
        if key not in self._replaced:
            import pyarrow.parquet as pq

            handle = self.fs.open(path, "rb") if self.remote else open(path, "rb")  # noqa: SIM115
            with handle:
                meta = pq.read_metadata(handle).metadata or {}
            self._replaced[key] = list(json.loads(meta.get(layout.REPLACES_KEY, b"[]")))
        return self._replaced[key]

    def day_folders(self, base: str, first: str | None, last: str | None) -> list[str]:
        """The ``date=`` folders under ``base`` between two days (inclusive, None: open)."""
        out = []
        for name in self.folders(base):
            day = layout.partition_value(name)
            if (first is None or day >= first) and (last is None or day <= last):
                out.append(layout.join(base, name))
        return out


def with_retry(read: Callable[[], _T], attempts: int = 5) -> _T:
    """Run a read that lists then opens files again if a file vanished between the two (a
    compaction or retention run deleted it): the next listing has its replacement."""
    for i in range(attempts):
        try:
            return read()
        except FileNotFoundError:
            if i == attempts - 1:
                raise
        except Exception as exc:  # DuckDB reports a vanished file as an IOException
            text = str(exc)
            vanished = "No such file" in text or "No files found" in text
            if not vanished or i == attempts - 1:
                raise
    raise AssertionError("unreachable")


def _parquet_options(table: pa.Table) -> dict[str, Any]:
    """zstd everywhere; dictionaries for the columns whose values repeat (versions, roles,
    statuses, predicted labels, categorical inputs); byte-stream-split for floats, whose bytes
    compress better grouped by position. Measured in benchmarks/prediction_log_bench.py: a
    dictionary on 20 float64 inputs costs 48 bytes a request more than this and writes 3x
    slower."""
    import pyarrow as pa

    plain = {"request_id", "raw_inputs", "raw_outputs", "labels"}
    dictionary = []
    split = []
    for f in table.schema:
        if pa.types.is_floating(f.type):
            split.append(f.name)
        elif f.name not in plain and not (
            pa.types.is_list(f.type) or pa.types.is_timestamp(f.type) or pa.types.is_null(f.type)
        ):
            dictionary.append(f.name)
    return {
        "compression": "zstd",
        "compression_level": 3,
        "use_dictionary": dictionary,
        "column_encoding": dict.fromkeys(split, "BYTE_STREAM_SPLIT"),
        "row_group_size": 256 * 1024,
    }


def _mtime(info: dict[str, Any]) -> float:
    value = info.get("mtime") or info.get("LastModified") or info.get("created") or 0.0
    if hasattr(value, "timestamp"):
        return float(value.timestamp())
    return float(value)


# -- columns without PyArrow's pandas shim -------------------------------------------------------
#
# Every ``pa.array()`` call asks PyArrow's pandas shim whether its argument is a pandas object,
# and that imports pandas: +46 MB of RSS in a gateway worker that otherwise never needs it
# (tests/gateway/test_lean_worker.py pins it). These build the log's columns from NumPy buffers
# with ``pa.Array.from_buffers``, which never asks; each handles the values the gateway logs and
# hands anything else to ``pa.array`` unchanged, so a column is the same array either way
# (tests/store/predictionlog/test_arrays.py compares them).

_NUMPY = {"int16": "int16", "int32": "int32", "int64": "int64", "float": "float32",
          "double": "float64", "bool": "bool"}  # fmt: skip


def _validity(valid: Any) -> Any:
    """The validity bitmap of a boolean mask, or None when every value is valid."""
    import numpy as np
    import pyarrow as pa

    if valid is None or valid.all():
        return None
    return pa.py_buffer(np.packbits(valid, bitorder="little"))


def number_array(values: Any, type_: pa.DataType, *, nan_is_null: bool = False) -> pa.Array:
    """A numeric column (int16/32/64, float32/64) from a NumPy array or a list of numbers.

    ``nan_is_null`` makes NaN a null, as ``pa.array(..., from_pandas=True)`` does.
    """
    import numpy as np
    import pyarrow as pa

    arr = np.ascontiguousarray(np.asarray(values, dtype=_NUMPY[str(type_)]))
    valid = ~np.isnan(arr) if nan_is_null and arr.dtype.kind == "f" else None
    return pa.Array.from_buffers(type_, len(arr), [_validity(valid), pa.py_buffer(arr)])


def time_array(micros: Any) -> pa.Array:
    """A ``timestamp[us, UTC]`` column from int64 microseconds since the epoch."""
    import numpy as np
    import pyarrow as pa

    arr = np.ascontiguousarray(np.asarray(micros, dtype=np.int64))
    return pa.Array.from_buffers(pa.timestamp("us", tz="UTC"), len(arr), [None, pa.py_buffer(arr)])


def _null(value: Any, nan_is_null: bool) -> bool:
    return value is None or (nan_is_null and type(value) is float and value != value)


def string_array(values: Any, *, nan_is_null: bool = False) -> pa.Array:
    """A string column from str values and None (NaN too with ``nan_is_null``); other values go
    to ``pa.array``, which converts or raises as it always did."""
    import numpy as np
    import pyarrow as pa

    n = len(values)
    valid = np.ones(n, dtype=bool)
    encoded: list[bytes] = []
    kinds = set(map(type, values))
    if kinds == {type(None)}:  # a column no row uses (raw inputs of rows that fit, no error)
        return pa.nulls(n, pa.string())
    if kinds == {str}:  # the usual column: every row a str, no Python loop
        try:
            encoded = list(map(str.encode, values))
        except UnicodeEncodeError:  # a lone surrogate: pa.array raises as it always did
            return pa.array(values, pa.string(), from_pandas=nan_is_null)
        values = ()
    for i, value in enumerate(values):
        if type(value) is str:
            try:
                encoded.append(value.encode())
            except UnicodeEncodeError:  # a lone surrogate: pa.array raises as it always did
                return pa.array(values, pa.string(), from_pandas=nan_is_null)
        elif _null(value, nan_is_null):
            valid[i] = False
            encoded.append(b"")
        else:
            return pa.array(values, pa.string(), from_pandas=nan_is_null)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, encoded), dtype=np.int64, count=n), out=offsets[1:])
    if offsets[-1] > 2**31 - 1:  # past 2 GB pa.array splits a string column into chunks
        return pa.array(values, pa.string(), from_pandas=nan_is_null)
    return pa.Array.from_buffers(
        pa.string(),
        n,
        [_validity(valid), pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(b"".join(encoded))],
    )


def bool_array(values: Any, *, nan_is_null: bool = False) -> pa.Array:
    """A boolean column from True/False and None (NaN too with ``nan_is_null``)."""
    import numpy as np
    import pyarrow as pa

    n = len(values)
    valid = np.ones(n, dtype=bool)
    bits = np.zeros(n, dtype=bool)
    for i, value in enumerate(values):
        if value is True:
            bits[i] = True
        elif value is False:
            pass
        elif _null(value, nan_is_null):
            valid[i] = False
        else:
            return pa.array(values, pa.bool_(), from_pandas=nan_is_null)
    data = pa.py_buffer(np.packbits(bits, bitorder="little"))
    return pa.Array.from_buffers(pa.bool_(), n, [_validity(valid), data])


def inferred_array(values: list[Any]) -> pa.Array:
    """The column ``pa.array(values)`` infers, built without it when every value is None or of
    one JSON scalar kind (ints become int64, ints and floats float64)."""
    import numpy as np
    import pyarrow as pa

    kinds = {type(v) for v in values} - {type(None)}
    n = len(values)
    if not kinds:
        return pa.nulls(n)
    if kinds == {str}:
        return string_array(values)
    if kinds == {bool}:
        return bool_array(values)
    if kinds <= {int, float}:
        valid = np.fromiter((v is not None for v in values), dtype=bool, count=n)
        filled = [0 if v is None else v for v in values]
        type_ = pa.int64() if kinds == {int} else pa.float64()
        try:
            arr = np.asarray(filled, dtype=_NUMPY[str(type_)])
        except OverflowError:
            return pa.array(values)
        if arr.dtype.kind == "f" and any(type(v) is int and abs(v) > 2**53 for v in filled):
            return pa.array(values)  # pyarrow refuses such an int in a float column
        return pa.Array.from_buffers(type_, n, [_validity(valid), pa.py_buffer(arr)])
    return pa.array(values)


def float32_lists(values: list[Any]) -> pa.Array:
    """A ``list<float32>`` column from lists of numbers and None (the probabilities)."""
    import numpy as np
    import pyarrow as pa

    type_ = pa.list_(pa.float32())
    n = len(values)
    valid = np.ones(n, dtype=bool)
    lengths = np.zeros(n, dtype=np.int64)
    flat: list[Any] = []
    for i, value in enumerate(values):
        if value is None:
            valid[i] = False
        elif type(value) is list and all(type(x) is float or type(x) is int for x in value):
            lengths[i] = len(value)
            flat.extend(value)
        else:
            return pa.array(values, type_)
    try:
        items = np.asarray(flat, dtype=np.float32)
    except OverflowError:
        return pa.array(values, type_)
    if len(flat) > 2**31 - 1 or any(type(x) is int and abs(x) > 2**24 for x in flat):
        return pa.array(values, type_)
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:], dtype=np.int32)
    child = pa.Array.from_buffers(pa.float32(), len(items), [None, pa.py_buffer(items)])
    return pa.Array.from_buffers(
        type_, n, [_validity(valid), pa.py_buffer(offsets)], children=[child]
    )
