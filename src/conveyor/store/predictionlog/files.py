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

__all__ = ["LogFiles"]

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
