"""Damaged and hostile store files: an empty or malformed SQLite file is refused with the way
back, a store-wide lease serialises gc, young objects survive gc, and a read that blocks gives up.
"""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from conveyor.exceptions import (
    ArtifactNotFound,
    ArtifactTimeout,
    StoreBusy,
    StoreCorrupted,
)
from conveyor.store import metadata
from conveyor.store import models as m
from conveyor.store.artifacts import ArtifactStore
from conveyor.store.leases import GC_LEASE, StoreLease
from conveyor.store.metadata import Store
from conveyor.store.records import utcnow


def _aged(path: Path, seconds: float = 60.0) -> Path:
    stamp = time.time() - seconds
    os.utime(path, (stamp, stamp))
    return path


def _fresh_store(path: Path) -> Path:
    """A real store file with one run in it, closed."""
    with Store(f"sqlite:///{path}") as store:
        store.start_run(
            project="p",
            workspace="/w",
            env_hash="e",
            config_hash="c",
            args={},
            git_commit=None,
            git_dirty=None,
            steps={"train": "k"},
        )
    for suffix in ("-wal", "-shm"):  # checkpointed on close: the file alone is the store
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    return path


@pytest.fixture(autouse=True)
def _check_every_open(monkeypatch: pytest.MonkeyPatch) -> None:
    # The quick check runs once per process per file; each test starts as a new process would.
    monkeypatch.setattr(metadata, "_CHECKED", set())


# -- a damaged metadata store -------------------------------------------------------------------


def test_an_empty_store_file_is_refused_not_silently_started_again(tmp_path: Path) -> None:
    db = tmp_path / "conveyor.db"
    db.touch()
    _aged(db)  # older than a store another process is creating at this moment

    with pytest.raises(StoreCorrupted) as caught:
        Store(f"sqlite:///{db}").open()

    assert str(caught.value) == (
        f"The metadata store {db} is an empty file (0 bytes): it was truncated, or created by "
        f"something other than Conveyor. No backup was found beside it (conveyor.db.bak). Try "
        f"`sqlite3 {db} .recover | sqlite3 {db}.recovered` and move the result in its place, "
        "or move conveyor.db aside to start an empty store (runs and registered versions are "
        "lost; artifacts stay)."
    )
    assert db.stat().st_size == 0  # nothing was written into it


def test_an_empty_store_file_names_the_newest_backup_to_restore(tmp_path: Path) -> None:
    db = tmp_path / "conveyor.db"
    _aged(shutil.copy(_fresh_store(db), tmp_path / "conveyor.db.bak-1"), 3600)
    newest = shutil.copy(db, tmp_path / "conveyor.db.bak-2")
    db.write_bytes(b"")
    _aged(db)

    with pytest.raises(StoreCorrupted, match=rf"Restore the newest backup: cp {newest} {db}$"):
        Store(f"sqlite:///{db}").open()


def test_a_malformed_store_file_is_refused_naming_the_file(tmp_path: Path) -> None:
    db = _fresh_store(tmp_path / "conveyor.db")
    page = sqlite3.connect(db).execute("PRAGMA page_size").fetchone()[0]
    data = bytearray(db.read_bytes())
    for number in range(1, len(data) // page):  # every b-tree page header but the first
        data[number * page : number * page + 8] = b"\x0d" + b"\xff" * 7
    db.write_bytes(bytes(data))

    with pytest.raises(StoreCorrupted, match=r"is damaged .*No backup was found beside it") as e:
        Store(f"sqlite:///{db}").open()

    assert str(db) in str(e.value)


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "conveyor.db"
    db.write_bytes(b"not a database " * 512)

    with pytest.raises(StoreCorrupted, match=r"is damaged \(file is not a database\)"):
        Store(f"sqlite:///{db}").open()


def test_a_new_store_and_one_being_created_right_now_still_open(tmp_path: Path) -> None:
    with Store(f"sqlite:///{tmp_path / 'new' / 'conveyor.db'}") as store:
        assert store.runs() == []
    creating = tmp_path / "creating.db"
    creating.touch()  # another process's brand-new file, still empty: not damage
    with Store(f"sqlite:///{creating}") as store:
        assert store.runs() == []


def test_a_healthy_store_is_quick_checked_once_per_process(tmp_path: Path) -> None:
    db = _fresh_store(tmp_path / "conveyor.db")

    with Store(f"sqlite:///{db}") as store:
        assert len(store.runs()) == 1

    assert metadata._CHECKED == {os.path.realpath(db)}


# -- the store-wide gc lease --------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(f"sqlite:///{tmp_path / 'meta.db'}") as opened:
        yield opened


def test_a_live_holder_on_another_host_keeps_the_lease(store: Store) -> None:
    other = StoreLease(store, GC_LEASE, ttl=60, holder="elsewhere:4242").acquire()

    with pytest.raises(StoreBusy, match=r"'store:gc' is held by elsewhere:4242 until ") as e:
        StoreLease(store, GC_LEASE, ttl=60).acquire()

    assert e.value.holder == "elsewhere:4242"
    other.release()
    StoreLease(store, GC_LEASE, ttl=60).acquire().release()


def test_a_dead_or_expired_holder_loses_the_lease(store: Store) -> None:
    dead = f"{socket.gethostname()}:{2**22 + 12345}"  # above pid_max: no such process
    StoreLease(store, GC_LEASE, ttl=3600, holder=dead).acquire()
    mine = StoreLease(store, GC_LEASE, ttl=60).acquire()
    mine.release()
    with store.session() as s:
        s.add(m.Lease(name=GC_LEASE, holder="elsewhere:1", expires_at=utcnow() - timedelta(1)))

    StoreLease(store, GC_LEASE, ttl=60).acquire()

    with store.session() as s:
        assert s.get(m.Lease, GC_LEASE).holder == mine.holder


def test_waiting_for_the_lease_takes_it_once_released(store: Store) -> None:
    other = StoreLease(store, GC_LEASE, ttl=60, holder="elsewhere:4242").acquire()
    releaser = threading.Timer(0.5, other.release)
    releaser.start()
    started = time.monotonic()

    StoreLease(store, GC_LEASE, ttl=60).acquire(wait=True, poll_s=0.05)

    releaser.join()
    assert time.monotonic() - started >= 0.5


# -- gc's grace period --------------------------------------------------------------------------


@pytest.fixture
def artifacts(tmp_path: Path) -> Iterator[ArtifactStore]:
    with ArtifactStore(str(tmp_path / "artifacts")) as opened:
        yield opened


def test_gc_keeps_unreferenced_objects_younger_than_the_grace(artifacts: ArtifactStore) -> None:
    old = artifacts.put_bytes(b"stored before the grace period")
    time.sleep(0.6)
    young = artifacts.put_bytes(b"stored by a run still in progress")

    report = artifacts.gc([], grace_s=0.5)

    assert (report.removed, report.kept_young) == ([old.digest], 1)
    assert artifacts.read_bytes(young.digest) == b"stored by a run still in progress"


def test_a_put_that_finds_its_object_stored_renews_its_age(
    artifacts: ArtifactStore, tmp_path: Path
) -> None:
    by_bytes = artifacts.put_bytes(b"re-used by bytes")
    source = tmp_path / "out.bin"
    source.write_bytes(b"re-used by file")
    by_file = artifacts.put_file(source)
    out = tmp_path / "declared.bin"
    out.write_bytes(b"a declared out, hard-linked in")
    by_link = artifacts.put_file(out, link=True)
    stamp = out.stat().st_mtime_ns
    time.sleep(0.6)

    artifacts.put_bytes(b"re-used by bytes")
    artifacts.put_file(source)
    artifacts.put_file(out, link=True)
    report = artifacts.gc([], grace_s=0.5)

    assert (report.removed, report.kept_young) == ([], 3)
    assert {by_bytes.digest, by_file.digest, by_link.digest} == set(artifacts.digests())
    assert out.stat().st_mtime_ns == stamp  # the fast path's stamp of the out still holds


# -- reads that block -------------------------------------------------------------------------


def test_a_read_that_blocks_gives_up_after_the_timeout(tmp_path: Path) -> None:
    digest = "ab" * 32
    fifo = tmp_path / "artifacts" / "objects" / digest[:2] / digest[2:]
    with ArtifactStore(str(tmp_path / "artifacts"), read_timeout_s=0.3) as store:
        fifo.parent.mkdir()
        os.mkfifo(fifo)  # opening it for reading blocks until a writer comes: forever
        started = time.monotonic()
        try:
            with pytest.raises(ArtifactTimeout) as caught:
                store.read_bytes(digest)
        finally:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # let the reader go

    assert 0.3 <= time.monotonic() - started < 5
    assert str(caught.value) == (
        f"Reading artifact {digest} from {fifo} did not finish within 0.3 s: the file blocks "
        "(a FIFO in place of the object, or a hung network file system). Check the store's "
        "mount; the read was abandoned."
    )


def test_reads_with_a_timeout_answer_and_fail_as_without(tmp_path: Path) -> None:
    with ArtifactStore(str(tmp_path / "artifacts"), read_timeout_s=5) as store:
        stored = store.put_bytes(b"model bytes")

        assert store.read_bytes(stored.digest) == b"model bytes"
        assert store.size(stored.digest) == len(b"model bytes")
        assert store.exists(stored.digest)
        assert store.path(stored.digest).read_bytes() == b"model bytes"
        with pytest.raises(ArtifactNotFound):
            store.read_bytes("cd" * 32)
