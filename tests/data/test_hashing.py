from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import xxhash

from conveyor.data.hashing import CHUNK_SIZE, FileHasher, combine, hash_file
from conveyor.data.state import StateDB
from conveyor.exceptions import DataError


def _age(path: Path, seconds: int = 60) -> None:
    """Move a file's mtime into the past, out of the racy-mtime window."""
    old = time.time_ns() - seconds * 1_000_000_000
    os.utime(path, ns=(old, old))


@pytest.fixture
def state(tmp_path: Path):
    with StateDB(tmp_path / "state.db") as db:
        yield db


@pytest.mark.parametrize("size", [0, 1, CHUNK_SIZE, CHUNK_SIZE * 2 + 12345])
def test_hash_file_is_xxh3_128_of_the_bytes(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    f = tmp_path / "f.bin"
    f.write_bytes(data)
    assert hash_file(f) == xxhash.xxh3_128(data).hexdigest()


def test_hash_file_missing_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nope.csv' does not exist"):
        hash_file(tmp_path / "nope.csv")


def test_hash_many_equals_hash_file_per_file(tmp_path: Path, state: StateDB) -> None:
    paths = []
    for i in range(7):
        p = tmp_path / f"part-{i}.csv"
        p.write_bytes(os.urandom(1000 * i + CHUNK_SIZE // (i + 1)))
        paths.append(p)
    expected = {p: hash_file(p) for p in paths}
    assert FileHasher(None).hash_many(paths, threads=3) == expected
    assert FileHasher(state).hash_many(paths, threads=2) == expected
    assert FileHasher(state).hash_many(paths, threads=1) == expected  # now from the cache
    assert list(FileHasher(state).hash_many(paths)) == paths  # keeps the caller's order


def test_hash_many_writes_misses_back_to_the_cache(tmp_path: Path, state: StateDB) -> None:
    paths = [tmp_path / "a.csv", tmp_path / "b.csv"]
    for p in paths:
        p.write_text(p.name)
        _age(p)
    hashes = FileHasher(state).hash_many(paths)
    for p in paths:
        assert state.get_stat(os.path.abspath(p), os.stat(p)) == hashes[p]


def test_unchanged_stat_is_trusted_without_reading(tmp_path: Path, state: StateDB) -> None:
    # The documented trade-off: same size, same inode and a restored mtime look unchanged,
    # so the cached hash comes back and the new bytes are never read.
    f = tmp_path / "loans.csv"
    f.write_bytes(b"id,amount\n1,100\n")
    _age(f)
    hasher = FileHasher(state)
    first = hasher.hash(f)

    st = os.stat(f)
    with open(f, "r+b") as fh:  # rewrite in place: the inode stays
        fh.write(b"id,amount\n1,999\n")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(f).st_ino == st.st_ino
    assert hasher.hash(f) == first
    assert hash_file(f) != first  # the bytes did change


def test_normal_edit_is_detected(tmp_path: Path, state: StateDB) -> None:
    f = tmp_path / "loans.csv"
    f.write_bytes(b"id,amount\n1,100\n")
    _age(f, 120)
    hasher = FileHasher(state)
    first = hasher.hash(f)
    f.write_bytes(b"id,amount\n1,999\n")  # same size, new mtime
    _age(f, 60)
    assert hasher.hash(f) != first
    assert hasher.hash(f) == hash_file(f)


def test_file_edited_in_the_same_granule_it_was_hashed_is_not_unchanged(
    tmp_path: Path, state: StateDB
) -> None:
    f = tmp_path / "loans.csv"
    f.write_bytes(b"id,amount\n1,100\n")  # mtime is now: racily clean once hashed
    hasher = FileHasher(state)
    first = hasher.hash(f)
    st = os.stat(f)
    with open(f, "r+b") as fh:
        fh.write(b"id,amount\n1,999\n")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # as if within one timestamp granule
    second = hasher.hash(f)
    assert second != first
    assert second == hash_file(f)


def test_hash_many_missing_file_is_a_data_error(tmp_path: Path, state: StateDB) -> None:
    with pytest.raises(DataError, match="gone.csv"):
        FileHasher(state).hash_many([tmp_path / "gone.csv"])
    with pytest.raises(DataError, match="gone.csv"):
        FileHasher(None).hash_many([tmp_path / "gone.csv"])


def test_combine_is_order_free_and_sees_renames_additions_and_edits() -> None:
    items = [("data/a.csv", "1" * 32), ("data/b.csv", "2" * 32)]
    base = combine(items)
    assert combine(reversed(items)) == base
    assert combine([("data/a.csv", "1" * 32), ("data/c.csv", "2" * 32)]) != base
    assert combine([*items, ("data/c.csv", "3" * 32)]) != base
    assert combine([("data/a.csv", "1" * 32), ("data/b.csv", "4" * 32)]) != base
    assert combine([]) != base
    # Path and hash cannot bleed into each other.
    assert combine([("a", "bc")]) != combine([("ab", "c")])
