"""The content-addressed artifact store, on a local folder and on fsspec's memory filesystem.

S3 cannot exist here, so fsspec's in-process ``memory://`` filesystem stands in for a remote
object store: it goes through the same fsspec calls (``pipe_file``, ``put_file``, ``open``,
``find``, ``rm_file``) that s3fs implements.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import signal
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fsspec.implementations.memory import MemoryFileSystem
from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor.exceptions import ArtifactCorrupted, ArtifactError, ArtifactNotFound
from conveyor.store.artifacts import Artifact, ArtifactStore

KINDS = ["local", "memory"]


def _make_store(kind: str, base: Path) -> ArtifactStore:
    if kind == "local":
        return ArtifactStore(str(base / "artifacts"))
    return ArtifactStore(f"memory://{uuid.uuid4().hex}/artifacts", cache_dir=base / "cache")


@pytest.fixture(autouse=True)
def _clean_memory_fs() -> Iterator[None]:
    # The memory filesystem is process-global: leave it as each test found it.
    yield
    MemoryFileSystem.store.clear()
    MemoryFileSystem.pseudo_dirs.clear()
    MemoryFileSystem.pseudo_dirs.append("")


@pytest.fixture(params=KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ArtifactStore]:
    with _make_store(request.param, tmp_path) as opened:
        yield opened


@pytest.fixture
def local(tmp_path: Path) -> Iterator[ArtifactStore]:
    with ArtifactStore(str(tmp_path / "artifacts")) as opened:
        yield opened


def _flip_first_byte(path: Path) -> None:
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF
    path.write_bytes(bytes(data))


# -- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=40, deadline=None)
@given(data=st.binary(max_size=3000))
def test_put_bytes_read_bytes_round_trip(
    kind: str, tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    with _make_store(kind, tmp_path_factory.mktemp("rt")) as store:
        artifact = store.put_bytes(data)
        assert artifact == Artifact(hashlib.sha256(data).hexdigest(), len(data))
        assert store.read_bytes(artifact.digest) == data
        assert store.path(artifact.digest).read_bytes() == data
        assert store.size(artifact.digest) == len(data)


def test_put_file_round_trip(store: ArtifactStore, tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)  # spans several 1 MiB chunks
    src = tmp_path / "model.bin"
    src.write_bytes(data)

    artifact = store.put_file(src)

    assert artifact.digest == hashlib.sha256(data).hexdigest()
    assert artifact.size == len(data)
    assert src.read_bytes() == data  # not consumed without move=True
    assert store.exists(artifact.digest)
    assert store.read_bytes(artifact.digest) == data
    assert store.path(artifact.digest).read_bytes() == data
    assert list(store.digests()) == [artifact.digest]


def test_put_file_move_consumes_a_temp_file(store: ArtifactStore) -> None:
    src = store.tmp_dir() / "out.parquet"
    src.write_bytes(b"step output")

    artifact = store.put_file(src, move=True)

    assert not src.exists()
    assert store.read_bytes(artifact.digest) == b"step output"
    assert os.listdir(store.tmp_dir()) == []


def test_move_renames_without_copying(local: ArtifactStore) -> None:
    src = local.tmp_dir() / "out.bin"
    src.write_bytes(b"x" * 100_000)
    inode = os.stat(src).st_ino

    artifact = local.put_file(src, move=True)

    assert os.stat(local.path(artifact.digest)).st_ino == inode


def test_move_of_a_hard_linked_file_copies_it(local: ArtifactStore, tmp_path: Path) -> None:
    # Renaming would let the other link edit the stored object.
    src = local.tmp_dir() / "out.bin"
    src.write_bytes(b"linked")
    other = tmp_path / "other-link"
    os.link(src, other)

    artifact = local.put_file(src, move=True)

    assert not src.exists()
    other.write_bytes(b"edited")
    assert local.read_bytes(artifact.digest) == b"linked"


def test_move_of_a_symlink_stores_the_target_bytes(local: ArtifactStore, tmp_path: Path) -> None:
    target = tmp_path / "target.bin"
    target.write_bytes(b"pointed at")
    link = local.tmp_dir() / "link.bin"
    link.symlink_to(target)

    artifact = local.put_file(link, move=True)

    stored = local.path(artifact.digest)
    assert not stored.is_symlink()
    assert stored.read_bytes() == b"pointed at"
    assert not link.exists() and target.exists()


def test_same_bytes_are_stored_once(store: ArtifactStore, tmp_path: Path) -> None:
    src = tmp_path / "a.txt"
    src.write_bytes(b"same")

    first = store.put_bytes(b"same")
    second = store.put_file(src)
    third = store.put_bytes(b"same")

    assert first == second == third
    assert list(store.digests()) == [first.digest]
    assert os.listdir(store.tmp_dir()) == []


def test_objects_are_read_only(local: ArtifactStore, tmp_path: Path) -> None:
    src = tmp_path / "f"
    src.write_bytes(b"frozen")
    for artifact in (local.put_bytes(b"bytes"), local.put_file(src)):
        path = local.path(artifact.digest)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o444
        assert path == tmp_path / "artifacts" / "objects" / artifact.digest[:2] / path.name


def test_local_layout_and_file_url(tmp_path: Path) -> None:
    root = tmp_path / "in url"
    store = ArtifactStore(f"file://{root.as_posix().replace(' ', '%20')}")
    assert not root.exists()  # the constructor does no IO
    with store:
        artifact = store.put_bytes(b"abc")
    assert sorted(p.name for p in root.iterdir()) == ["objects", "tmp"]
    assert (root / "objects" / artifact.digest[:2] / artifact.digest[2:]).read_bytes() == b"abc"


def test_file_url_with_a_host_is_rejected() -> None:
    with pytest.raises(ArtifactError, match="names the host 'server'"):
        ArtifactStore("file://server/share")


def test_store_must_be_opened_first(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "artifacts"))
    with pytest.raises(ArtifactError, match="is not open"):
        store.put_bytes(b"x")
    assert not (tmp_path / "artifacts").exists()


def test_local_store_never_imports_fsspec(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from conveyor.store.artifacts import ArtifactStore\n"
        f"with ArtifactStore({str(tmp_path / 's')!r}) as s:\n"
        "    d = s.put_bytes(b'x').digest\n"
        "    s.path(d); list(s.digests()); s.gc([d])\n"
        "print('fsspec' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- integrity -----------------------------------------------------------------------------


def test_corrupted_local_object_is_detected(local: ArtifactStore, tmp_path: Path) -> None:
    artifact = local.put_bytes(b"weights" * 1000)
    path = local.path(artifact.digest)
    _flip_first_byte(path)
    actual = hashlib.sha256(path.read_bytes()).hexdigest()

    for read in (
        lambda: local.path(artifact.digest),
        lambda: local.read_bytes(artifact.digest),
        lambda: local.verify(artifact.digest),
        lambda: local.materialize(artifact.digest, tmp_path / "out" / "w.bin"),
    ):
        with pytest.raises(ArtifactCorrupted) as info:
            read()
        message = str(info.value)
        assert artifact.digest in message and str(path) in message and actual in message
        assert "conveyor run --force --step" in message
    assert not (tmp_path / "out" / "w.bin").exists()
    assert os.listdir(tmp_path / "out") == []  # the failed copy left no temp file
    assert local.path(artifact.digest, verify=False) == path


def test_corrupted_remote_object_is_detected(tmp_path: Path) -> None:
    with _make_store("memory", tmp_path) as store:
        artifact = store.put_bytes(b"weights")
        key = store.backend.key(artifact.digest)
        MemoryFileSystem().pipe_file(key, b"Weights")

        for read in (store.read_bytes, store.verify, store.path):
            with pytest.raises(ArtifactCorrupted, match=f"Artifact {artifact.digest} at memory://"):
                read(artifact.digest)
        assert not (tmp_path / "cache" / "objects" / artifact.digest[:2]).exists()


def test_damaged_cached_copy_is_fetched_again(tmp_path: Path) -> None:
    with _make_store("memory", tmp_path) as store:
        artifact = store.put_bytes(b"remote bytes")
        cached = store.path(artifact.digest)
        assert cached.is_relative_to(tmp_path / "cache")
        assert stat.S_IMODE(os.stat(cached).st_mode) == 0o444
        _flip_first_byte(cached)

        assert store.path(artifact.digest).read_bytes() == b"remote bytes"


def test_missing_artifact_names_digest_and_store(store: ArtifactStore, tmp_path: Path) -> None:
    digest = hashlib.sha256(b"never stored").hexdigest()
    assert not store.exists(digest)
    expected = f"Artifact {digest} is not in the artifact store at {store.location}"
    for read in (
        store.size,
        store.path,
        store.read_bytes,
        store.verify,
        lambda d: store.materialize(d, tmp_path / "x"),
    ):
        with pytest.raises(ArtifactNotFound) as info:
            read(digest)
        assert str(info.value).startswith(expected)


@pytest.mark.parametrize(
    "value",
    [
        "../../etc/passwd",
        "A" * 64,
        "a" * 63,
        "a" * 65,
        "a" * 64 + "\n",
        "g" * 64,
        "/" + "a" * 63,
        "",
    ],
)
def test_malformed_digest_is_rejected(store: ArtifactStore, value: str, tmp_path: Path) -> None:
    for call in (
        store.exists,
        store.size,
        store.path,
        store.read_bytes,
        store.verify,
        lambda d: store.materialize(d, tmp_path / "x"),
        lambda d: store.gc([d]),
    ):
        with pytest.raises(ArtifactError, match="is not an artifact digest") as info:
            call(value)
        assert repr(value) in str(info.value)
        assert not isinstance(info.value, ArtifactNotFound)


def test_foreign_errors_are_wrapped(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(ArtifactError, match="Cannot open") as info:
        ArtifactStore(str(tmp_path / "file" / "store")).open()
    assert isinstance(info.value.__cause__, OSError)

    with ArtifactStore(str(tmp_path / "ok")) as store:
        with pytest.raises(ArtifactError, match="missing.bin") as info:
            store.put_file(tmp_path / "missing.bin")
        assert isinstance(info.value.__cause__, FileNotFoundError)
        assert not isinstance(info.value, ArtifactNotFound)


def test_unknown_fsspec_protocol_is_wrapped(tmp_path: Path) -> None:
    store = ArtifactStore("nosuchprotocol://bucket/x", cache_dir=tmp_path)
    with pytest.raises(ArtifactError, match="nosuchprotocol://bucket/x") as info:
        store.open()
    assert info.value.__cause__ is not None


# -- materialize ---------------------------------------------------------------------------


def test_materialize_gives_a_writable_copy(store: ArtifactStore, tmp_path: Path) -> None:
    artifact = store.put_bytes(b"model v1")
    dest = tmp_path / "deep" / "er" / "model.skops"

    assert store.materialize(artifact.digest, dest) == dest
    assert dest.read_bytes() == b"model v1"
    assert os.stat(dest).st_mode & stat.S_IWUSR

    dest.write_bytes(b"edited")
    store.verify(artifact.digest)
    assert store.read_bytes(artifact.digest) == b"model v1"

    store.materialize(artifact.digest, dest)  # replaces an existing file
    assert dest.read_bytes() == b"model v1"
    assert os.listdir(dest.parent) == ["model.skops"]


# -- garbage collection --------------------------------------------------------------------


def test_gc_keeps_the_keep_set_and_removes_the_rest(store: ArtifactStore) -> None:
    keep = [store.put_bytes(b"keep me"), store.put_bytes(b"and me")]
    drop = [store.put_bytes(b"drop"), store.put_bytes(b"x" * 5000)]

    report = store.gc([a.digest for a in keep])

    assert sorted(report.removed) == sorted(a.digest for a in drop)
    assert report.freed_bytes == 4 + 5000
    assert report.kept == 2
    assert sorted(store.digests()) == sorted(a.digest for a in keep)
    for artifact in drop:
        assert not store.exists(artifact.digest)
    assert store.read_bytes(keep[0].digest) == b"keep me"
    assert store.put_bytes(b"drop") == drop[0]  # a removed object can be stored again


def test_gc_dry_run_removes_nothing(store: ArtifactStore) -> None:
    kept = store.put_bytes(b"kept")
    dropped = store.put_bytes(b"dropped")
    stale = store.tmp_dir() / "put-crashed.tmp"
    stale.write_bytes(b"half")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))

    report = store.gc([kept.digest], dry_run=True)

    assert report.removed == [dropped.digest]
    assert report.freed_bytes == len(b"dropped")
    assert report.tmp_removed == 1
    assert store.exists(dropped.digest) and stale.exists()


def test_gc_removes_leftover_temp_files_only_when_old(store: ArtifactStore) -> None:
    leftover = store.tmp_dir() / "put-crashed.tmp"  # what a crash mid-write leaves behind
    leftover.write_bytes(b"partial")

    assert store.gc([]).tmp_removed == 0
    assert leftover.exists()

    old = time.time() - 7200
    os.utime(leftover, (old, old))
    assert store.gc([]).tmp_removed == 1
    assert not leftover.exists()


def test_digests_ignores_stray_files(local: ArtifactStore, tmp_path: Path) -> None:
    artifact = local.put_bytes(b"real")
    objects = tmp_path / "artifacts" / "objects"
    (objects / ".DS_Store").write_text("")
    (objects / artifact.digest[:2] / "notes.txt").write_text("")
    assert list(local.digests()) == [artifact.digest]


# -- concurrency and crashes (real processes) ----------------------------------------------


def _put_file_worker(root: str, src: str, barrier: object, results: object) -> None:
    with ArtifactStore(root) as store:
        barrier.wait()  # type: ignore[attr-defined]
        results.put(store.put_file(src).digest)  # type: ignore[attr-defined]


@pytest.mark.slow
def test_two_processes_put_the_same_bytes_at_once(tmp_path: Path) -> None:
    data = os.urandom(32 * 1024 * 1024)
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    root = str(tmp_path / "artifacts")
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [
        ctx.Process(target=_put_file_worker, args=(root, str(src), barrier, results))
        for _ in range(2)
    ]
    for proc in procs:
        proc.start()
    digests = [results.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0

    expected = hashlib.sha256(data).hexdigest()
    assert digests == [expected, expected]
    with ArtifactStore(root) as store:
        assert list(store.digests()) == [expected]
        store.verify(expected)
        assert os.listdir(store.tmp_dir()) == []


def _put_fifo_worker(root: str, fifo: str) -> None:
    with ArtifactStore(root) as store:
        store.put_file(fifo)


def _open_writer(fifo: Path, reader: multiprocessing.process.BaseProcess) -> int:
    # Non-blocking open fails until the reader has opened its end, so a dead reader cannot hang us.
    deadline = time.monotonic() + 30
    while True:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            if not reader.is_alive() or time.monotonic() > deadline:
                raise
            time.sleep(0.01)
            continue
        os.set_blocking(fd, True)
        return fd


@pytest.mark.slow
def test_crash_mid_write_leaves_only_a_temp_file(tmp_path: Path) -> None:
    # The source is a FIFO, so the writer blocks mid-copy at a point this test controls.
    fifo = tmp_path / "source.fifo"
    os.mkfifo(fifo)
    root = tmp_path / "artifacts"
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=_put_fifo_worker, args=(str(root), str(fifo)))
    proc.start()
    try:
        with open(_open_writer(fifo, proc), "wb") as pipe:
            pipe.write(os.urandom(3 * 1024 * 1024))
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                temps = list((root / "tmp").iterdir())
                if temps and temps[0].stat().st_size >= 2 * 1024 * 1024:
                    break
                time.sleep(0.01)
            assert proc.pid is not None
            os.kill(proc.pid, signal.SIGKILL)
            proc.join(timeout=30)
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join()

    assert proc.exitcode == -signal.SIGKILL
    assert len(list((root / "tmp").iterdir())) == 1
    with ArtifactStore(str(root)) as store:
        assert list(store.digests()) == []
        assert store.gc([], tmp_older_than_s=0).tmp_removed == 1
    assert list((root / "tmp").iterdir()) == []


def test_put_file_with_link_makes_the_file_the_object_and_read_only(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "store")).open()
    out = tmp_path / "out.csv"
    out.write_bytes(b"a,b\n1,2\n")
    artifact = store.put_file(out, link=True)
    assert artifact.digest == hashlib.sha256(b"a,b\n1,2\n").hexdigest()
    assert out.read_bytes() == b"a,b\n1,2\n"  # the caller keeps its file
    assert os.stat(out).st_ino == os.stat(store.path(artifact.digest)).st_ino  # no copy
    assert not os.stat(out).st_mode & 0o222  # protected: an edit cannot reach the store
    again = tmp_path / "again.csv"
    again.write_bytes(b"a,b\n1,2\n")
    assert store.put_file(again, link=True) == artifact  # already stored: left as it was
    assert os.stat(again).st_mode & 0o200
