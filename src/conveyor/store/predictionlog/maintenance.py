"""Keeping the prediction log small: compaction of small files, retention by age and size.

**Compaction** merges the small files of one day partition into one ``c-<token>.parquet`` whose
footer lists the names it replaces (``conveyor.replaces``), then deletes them. A reader never
sees a row twice or misses one: before the rename it lists only the inputs; after it, the
compacted file hides the inputs still present (``LogFiles.list_files``); a reader that listed an
input deleted before it opened it gets ``FileNotFoundError`` and lists again
(``files.with_retry``). A compacted file that replaces another compacted file lists that file's
inputs too, so inputs left behind by a crash between rename and delete stay hidden. No file is
merged by two at once: each gateway merges the files it wrote itself while they are young
(every five minutes, ``RequestLog.merge_own``), ``conveyor log compact`` only files older than
an hour, and it holds the store lease ``prediction-log``.

**Retention** deletes whole day partitions older than ``serve.log.retain``, then the oldest days
until the log fits in ``serve.log.max_gb``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from conveyor.store.predictionlog import layout
from conveyor.store.predictionlog.files import LogFiles

__all__ = [
    "CompactionResult",
    "apply_retention",
    "compact",
    "day_folders",
    "log_bytes",
    "merge_files",
]

log = logging.getLogger("conveyor.store")

SMALL_BYTES = 32 * 1024 * 1024  # a file under this is merged with its neighbours
MIN_FILES = 4  # a day with fewer small files is left alone
MIN_AGE_S = 3600.0  # younger files may still be merged by the gateway that wrote them


@dataclass
class CompactionResult:
    """What a compaction or retention run did."""

    folders: int = 0  # day partitions compacted
    files_in: int = 0  # files merged (and deleted)
    files_out: int = 0  # compacted files written
    rows: int = 0  # rows moved into compacted files
    days_deleted: list[str] = field(default_factory=list)  # "<path>" of each deleted day
    bytes_deleted: int = 0


def day_folders(files: LogFiles) -> list[str]:
    """Every ``date=`` folder of the log, requests and feedback."""
    out: list[str] = []

    def walk(base: str) -> None:
        for name in files.folders(base):
            path = layout.join(base, name)
            if name.startswith("date="):
                out.append(path)
            else:
                walk(path)

    walk(layout.join(files.root, layout.REQUESTS))
    walk(layout.join(files.root, layout.FEEDBACK))
    return out


def compact(
    files: LogFiles,
    *,
    small_bytes: int = SMALL_BYTES,
    min_files: int = MIN_FILES,
    min_age_s: float = MIN_AGE_S,
) -> CompactionResult:
    """Merge the small files of every day partition older than ``min_age_s`` (younger ones
    are still the gateways' to merge; see the module's docstring).

    Raises:
        OSError: (or the fsspec driver's error) a file cannot be read, written or deleted;
            what was done stays correct, and the next run finishes the job.
    """
    result = CompactionResult()
    for folder in day_folders(files):
        _compact_folder(files, folder, small_bytes, min_files, min_age_s, result)
    return result


def _compact_folder(
    files: LogFiles,
    folder: str,
    small_bytes: int,
    min_files: int,
    min_age_s: float,
    result: CompactionResult,
) -> None:
    entries = files.entries(folder)
    sizes = {name: size for name, size, _m in entries}
    mtimes = {name: mtime for name, _s, mtime in entries}
    replaced: set[str] = set()
    for name, size, _m in entries:
        if name.startswith(layout.COMPACTED_PREFIX):
            replaced.update(files.replaces(layout.join(folder, name), size))
    leftovers = [n for n in sizes if n in replaced]
    if leftovers:  # a crash between a rename and its deletes: finish them
        files.delete(layout.join(folder, n) for n in leftovers)
    now = time.time()
    live = [n for n in sizes if n not in replaced and now - mtimes[n] >= min_age_s]
    small = sorted(n for n in live if sizes[n] < small_bytes)
    if len(small) < min_files:
        return
    rows = merge_files(files, folder, small, sizes)
    if rows is None:
        return
    result.folders += 1
    result.files_in += len(small)
    result.files_out += 1
    result.rows += rows


def merge_files(
    files: LogFiles, folder: str, names: list[str], sizes: dict[str, int] | None = None
) -> int | None:
    """Merge data files of one folder into one compacted file, then delete them; returns the
    rows merged, or None when their columns do not merge (they are left as they are).

    The caller makes sure no one else merges the same files at once (the store lease for
    ``conveyor log compact``; a gateway merges only the files it wrote itself, while young).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = []
    for name in names:
        path = layout.join(folder, name)
        handle = files.fs.open(path, "rb") if files.remote else open(path, "rb")  # noqa: SIM115
        with handle:
            tables.append(pq.read_table(handle))
    try:
        merged = pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        log.warning("prediction log: %s not compacted, its files do not merge: %s", folder, exc)
        return None
    if "at" in merged.column_names:
        merged = merged.sort_by([("at", "ascending")])
    replaces = set(names)
    for name in names:
        if name.startswith(layout.COMPACTED_PREFIX):
            size = (sizes or {}).get(name)
            if size is None:
                size = next((s for n, s, _m in files.entries(folder) if n == name), 0)
            replaces.update(files.replaces(layout.join(folder, name), size))
    meta = {layout.REPLACES_KEY: json.dumps(sorted(replaces)).encode()}
    files.write_table(folder, layout.compacted_name(), merged.replace_schema_metadata(None), meta)
    files.delete(layout.join(folder, n) for n in sorted(replaces))
    return merged.num_rows


def log_bytes(files: LogFiles) -> dict[str, int]:
    """Bytes of data files per day folder."""
    return {f: sum(size for _n, size, _m in files.entries(f)) for f in day_folders(files)}


def apply_retention(
    files: LogFiles,
    *,
    retain_seconds: float,
    max_bytes: int | None = None,
    now: datetime | None = None,
) -> CompactionResult:
    """Delete the day partitions older than ``retain_seconds``, then the oldest days until the
    log holds at most ``max_bytes`` (today's partition is never deleted for size)."""
    result = CompactionResult()
    end = now or datetime.now(UTC)
    oldest_kept = layout.day_of(end - timedelta(seconds=retain_seconds))
    today = layout.day_of(end)
    sizes = log_bytes(files)

    def day(folder: str) -> str:
        return layout.partition_value(folder.rstrip("/").replace("\\", "/").rsplit("/", 1)[-1])

    for folder in sorted(sizes, key=day):
        if day(folder) < oldest_kept:
            _delete_folder(files, folder, sizes.pop(folder), result)
    if max_bytes is not None:
        for folder in sorted(sizes, key=day):
            if sum(sizes.values()) <= max_bytes or day(folder) >= today:
                break
            _delete_folder(files, folder, sizes.pop(folder), result)
    return result


def _delete_folder(files: LogFiles, folder: str, size: int, result: CompactionResult) -> None:
    files.delete(layout.join(folder, n) for n, _s, _m in files.entries(folder))
    files.remove_folder(folder)
    result.days_deleted.append(folder)
    result.bytes_deleted += size
