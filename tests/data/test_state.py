from __future__ import annotations

import logging
import os
import sqlite3
import time
from pathlib import Path

import pytest

from conveyor.data.state import RACY_MARGIN_NS, StateDB


def _old_file(path: Path, content: bytes = b"data") -> os.stat_result:
    """A file whose mtime is a minute old, safely outside the racy-mtime window."""
    path.write_bytes(content)
    old = time.time_ns() - 60 * 1_000_000_000
    os.utime(path, ns=(old, old))
    return os.stat(path)


def test_constructor_does_no_io(tmp_path: Path) -> None:
    db = StateDB(tmp_path / "sub" / "state.db")
    assert not (tmp_path / "sub").exists()
    with db:
        assert (tmp_path / "sub" / "state.db").exists()


def test_uses_wal_and_creates_both_tables(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with StateDB(path):
        conn = sqlite3.connect(path)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        conn.close()
    assert {"stat_cache", "kv"} <= tables


def test_stat_hit_needs_size_mtime_and_inode(tmp_path: Path) -> None:
    f = tmp_path / "a.csv"
    st = _old_file(f)
    with StateDB(tmp_path / "state.db") as db:
        db.put_stats([(str(f), st, "h1")])
        assert db.get_stat(str(f), st) == "h1"
        assert db.get_stat(str(tmp_path / "other"), st) is None

        f.write_bytes(b"longer data")  # size and mtime change
        assert db.get_stat(str(f), os.stat(f)) is None

        _old_file(f, b"datA")  # same size, different (but old) mtime
        assert db.get_stat(str(f), os.stat(f)) is None

        g = tmp_path / "b.csv"
        st_g = _old_file(g)
        os.utime(g, ns=(st.st_atime_ns, st.st_mtime_ns))
        moved = os.stat(g)  # same size and mtime as the cached entry, other inode
        assert moved.st_ino != st.st_ino
        assert db.get_stat(str(f), moved) is None
        assert st_g.st_size == st.st_size


def test_racy_mtime_entry_is_not_a_hit_until_hashed_again_later(tmp_path: Path) -> None:
    f = tmp_path / "a.csv"
    f.write_bytes(b"fresh")
    st = os.stat(f)
    with StateDB(tmp_path / "state.db") as db:
        # Hashed right after writing: the file could still change within its mtime granule.
        db.put_stats([(str(f), st, "h1")])
        assert db.get_stat(str(f), st) is None
        # Hashed again once the file is older than the margin: now trusted.
        db.put_stats([(str(f), st, "h1")], hashed_ns=st.st_mtime_ns + RACY_MARGIN_NS + 1)
        assert db.get_stat(str(f), st) == "h1"
        db.put_stats([(str(f), st, "h1")], hashed_ns=st.st_mtime_ns + RACY_MARGIN_NS)
        assert db.get_stat(str(f), st) is None


def test_entries_survive_reopening(tmp_path: Path) -> None:
    f = tmp_path / "a.csv"
    st = _old_file(f)
    with StateDB(tmp_path / "state.db") as db:
        db.put_stats([(str(f), st, "h1")])
        db.put("k", "v")
    with StateDB(tmp_path / "state.db") as db:
        assert db.get_stat(str(f), st) == "h1"
        assert db.get("k") == "v"


def test_kv_put_get_delete(tmp_path: Path) -> None:
    with StateDB(tmp_path / "state.db") as db:
        assert db.get("missing") is None
        db.put("k", "v1")
        db.put("k", "v2")
        assert db.get("k") == "v2"
        db.delete("k")
        db.delete("k")
        assert db.get("k") is None


def test_two_connections_share_the_file(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with StateDB(path) as a, StateDB(path) as b:
        a.put("k", "from a")
        assert b.get("k") == "from a"
        b.delete("k")
        assert a.get("k") is None


def test_corrupt_file_is_moved_aside_and_recreated(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not a sqlite database" * 100)
    with caplog.at_level(logging.WARNING, logger="conveyor.data.state"):
        with StateDB(path) as db:
            db.put("k", "v")
            assert db.get("k") == "v"
    assert "moving it aside" in caplog.text
    aside = [p.name for p in tmp_path.iterdir() if ".corrupt-" in p.name]
    assert len(aside) == 1
    with StateDB(path) as db:
        assert db.get("k") == "v"


def test_cache_from_another_schema_version_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE kv (key TEXT, value TEXT, extra INTEGER)")
    conn.execute("INSERT INTO kv VALUES ('k', 'old', 1)")
    conn.execute("PRAGMA user_version = 99")
    conn.commit()
    conn.close()
    with StateDB(path) as db:
        assert db.get("k") is None
        db.put("k", "new")
        assert db.get("k") == "new"


def test_unusable_location_falls_back_to_memory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache folder should be")
    with caplog.at_level(logging.WARNING, logger="conveyor.data.state"):
        with StateDB(blocker / "state.db") as db:
            db.put("k", "v")
            assert db.get("k") == "v"
    assert "in memory" in caplog.text


def test_use_before_open_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="not open"):
        StateDB(tmp_path / "state.db").get("k")
