"""A machine-local cache of file hashes keyed by stat, so unchanged files are never re-read.

Like DVC's state database or git's index: an acceleration structure only. Deleting the file
costs time, never correctness, so every failure here degrades to a cache miss instead of an
error. It is plain ``sqlite3`` on purpose: ``conveyor run`` on an unchanged project must start
and finish in about 0.15 s, and importing SQLAlchemy alone takes longer than that.

Trade-offs, chosen knowingly:

- An entry is trusted when size, ``mtime_ns`` and inode all match (ctime is ignored, so that
  ``chmod`` or a backup tool touching metadata does not force a re-hash). A tool that rewrites a
  file in place with the same size and then restores its mtime fools the cache, as it fools git,
  make and DVC.
- Racy mtime (git's "racily clean" problem): a file written in the same timestamp granule as it
  was hashed could change again without its mtime moving. Each entry records when hashing
  started (``hashed_ns``); an entry is a hit only if the file's mtime is at least
  ``RACY_MARGIN_NS`` older than that. Entries are stored anyway: the next hash, once the file
  has aged, makes them trusted.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
# Covers coarse filesystem timestamps (FAT: 2 s, some network filesystems: 1 s) and small
# clock skew between a file server and this machine.
RACY_MARGIN_NS = 2_000_000_000
BUSY_TIMEOUT_S = 10.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS stat_cache (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    inode INTEGER NOT NULL,
    hash TEXT NOT NULL,
    hashed_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class StateDB:
    """The stat-to-hash cache and a small key/value table, in one SQLite file.

    Safe to share between processes (WAL, busy timeout) and between threads of one process
    (one connection behind a lock).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------------

    def open(self) -> StateDB:
        """Open (creating if needed) the database; a corrupt file is moved aside and rebuilt.

        If even a fresh file cannot be created (read-only directory, full disk), the cache
        lives in memory for this process and a warning is logged.
        """
        if self._conn is not None:
            return self
        try:
            self._conn = self._connect(self.path)
        except sqlite3.DatabaseError as exc:
            if _is_corruption(exc):
                logger.warning(
                    "State cache %s is unreadable (%s); moving it aside and starting a new one.",
                    self.path,
                    exc,
                )
                self._move_aside()
            try:
                self._conn = self._connect(self.path)
            except (sqlite3.DatabaseError, OSError) as exc2:
                self._fall_back_to_memory(exc2)
        except OSError as exc:
            self._fall_back_to_memory(exc)
        return self

    def close(self) -> None:
        """Close the connection; calling it twice is harmless."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> StateDB:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- stat cache ------------------------------------------------------------------------

    def get_stat(self, path: str, st: os.stat_result) -> str | None:
        """Return the cached hash of ``path`` if its stat still matches, else None.

        Args:
            path: The key the hash was stored under (the hasher uses the absolute path).
            st: A fresh ``os.stat`` of the file.
        """
        row = self._query_one(
            "SELECT size, mtime_ns, inode, hash, hashed_ns FROM stat_cache WHERE path = ?",
            (path,),
        )
        if row is None:
            return None
        size, mtime_ns, inode, digest, hashed_ns = row
        if (size, mtime_ns, inode) != (st.st_size, st.st_mtime_ns, st.st_ino):
            return None
        if mtime_ns >= hashed_ns - RACY_MARGIN_NS:
            return None  # racily clean: the file may have changed within its mtime granule
        return str(digest)

    def put_stats(
        self, rows: list[tuple[str, os.stat_result, str]], *, hashed_ns: int | None = None
    ) -> None:
        """Store many (path, stat, hash) rows in one transaction.

        Args:
            rows: The stat must be the one taken *before* the file was read.
            hashed_ns: When hashing started (``time.time_ns()``); defaults to now. Passing the
                start time keeps the racy-mtime guard exact when hashing took long.
        """
        if not rows:
            return
        when = time.time_ns() if hashed_ns is None else hashed_ns
        params = [
            (path, st.st_size, st.st_mtime_ns, st.st_ino, digest, when) for path, st, digest in rows
        ]
        self._write(
            "INSERT OR REPLACE INTO stat_cache (path, size, mtime_ns, inode, hash, hashed_ns)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            params,
        )

    # -- key/value -------------------------------------------------------------------------

    def get(self, key: str) -> str | None:
        """Return the value stored under ``key``, or None."""
        row = self._query_one("SELECT value FROM kv WHERE key = ?", (key,))
        return None if row is None else str(row[0])

    def put(self, key: str, value: str) -> None:
        """Store ``value`` under ``key``, replacing any previous value."""
        self._write("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", [(key, value)])

    def delete(self, key: str) -> None:
        """Forget ``key``; a missing key is not an error."""
        self._write("DELETE FROM kv WHERE key = ?", [(key,)])

    # -- internals -------------------------------------------------------------------------

    @staticmethod
    def _connect(path: Path | str) -> sqlite3.Connection:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode; put_stats opens its own explicit transaction.
        conn = sqlite3.connect(
            str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            if conn.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                _create_schema(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _move_aside(self) -> None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for suffix in ("", "-wal", "-shm"):
            src = Path(f"{self.path}{suffix}")
            if src.exists():
                try:
                    src.replace(Path(f"{self.path}.corrupt-{stamp}{suffix}"))
                except OSError:
                    src.unlink(missing_ok=True)

    def _fall_back_to_memory(self, exc: BaseException) -> None:
        logger.warning(
            "Cannot use state cache %s (%s); hashes are cached in memory for this run only.",
            self.path,
            exc,
        )
        self._conn = self._connect(":memory:")

    def _require(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("StateDB is not open; call open() or use it as a context manager.")
        return self._conn

    def _query_one(self, sql: str, params: tuple[object, ...]) -> tuple[Any, ...] | None:
        with self._lock:
            conn = self._require()
            try:
                row: tuple[Any, ...] | None = conn.execute(sql, params).fetchone()
                return row
            except sqlite3.ProgrammingError:
                raise
            except sqlite3.DatabaseError as exc:
                self._on_error(exc)
                return None

    def _write(self, sql: str, params: Sequence[tuple[object, ...]]) -> None:
        with self._lock:
            conn = self._require()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.executemany(sql, params)
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            except sqlite3.ProgrammingError:
                raise
            except sqlite3.DatabaseError as exc:
                self._on_error(exc)

    def _on_error(self, exc: sqlite3.DatabaseError) -> None:
        """A cache failure is a miss, never an error; a file found corrupt is rebuilt."""
        if _is_corruption(exc) and self._conn is not None:
            logger.warning("State cache %s became corrupt (%s); rebuilding it.", self.path, exc)
            self._conn.close()
            self._conn = None
            self._move_aside()
            try:
                self._conn = self._connect(self.path)
            except (sqlite3.DatabaseError, OSError) as exc2:
                self._fall_back_to_memory(exc2)
        else:
            # Locked past the busy timeout, read-only, disk full: skip caching this time.
            logger.warning(
                "State cache %s unavailable (%s); continuing without it.", self.path, exc
            )


def _create_schema(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Checked again under the write lock: another process may have just done this.
        if conn.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
            # A new file, or a cache from another Conveyor version: cheaper to drop than to
            # migrate.
            conn.execute("DROP TABLE IF EXISTS stat_cache")
            conn.execute("DROP TABLE IF EXISTS kv")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _is_corruption(exc: sqlite3.DatabaseError) -> bool:
    name = getattr(exc, "sqlite_errorname", "")
    if name in ("SQLITE_CORRUPT", "SQLITE_NOTADB") or name.startswith("SQLITE_CORRUPT_"):
        return True
    text = str(exc).lower()
    return "malformed" in text or "not a database" in text
