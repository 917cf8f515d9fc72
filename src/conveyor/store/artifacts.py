"""Content-addressed artifact store: an object's name is the sha256 of its bytes.

Integrity is the point, so the hash is sha256 (not a fast non-cryptographic hash) and every read
that hands bytes to a caller can re-check it. Objects are immutable and written atomically: the
bytes go to a temp file, are fsynced, then renamed into place, so a crash leaves at worst a temp
file that ``gc`` removes later. A local store uses os/pathlib directly and never imports fsspec;
any other URL (``s3://bucket/prefix``, ``memory://x``) goes through fsspec, imported on ``open()``.

Local layout::

    <root>/objects/<2 hex>/<62 hex>   the objects, read-only (0o444)
    <root>/tmp/                       in-progress writes and callers' temp files

A remote store keeps the same ``objects/`` keys remotely; its ``tmp/`` and the copies that
``path()`` downloads live in a local cache directory (``~/.cache/conveyor/artifacts`` by default).

An object's age, for ``gc``'s grace period, is its inode change time: set when it is written,
linked or renamed in, and renewed (by a no-op chmod) each time a put finds it already stored, so
an object a run in progress has just stored or re-used is young, whichever workspace ran it. A
chmod, unlike a touch, leaves the mtime alone, which the fast path's stat stamps of hard-linked
outs rely on.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import os
import re
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar, cast
from urllib.parse import unquote, urlsplit

from conveyor.exceptions import (
    ArtifactCorrupted,
    ArtifactError,
    ArtifactNotFound,
    ArtifactTimeout,
    ArtifactUnwritable,
    ConveyorError,
    safe_url,
)
from conveyor.store.disk import DISK_ERRNOS, explain

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

__all__ = ["Artifact", "ArtifactStore", "GCReport"]

CHUNK = 1024 * 1024  # 1 MiB: large enough that syscalls and hashlib overhead vanish
_DIGEST = re.compile(r"[0-9a-f]{64}")
_HEX = re.compile(r"[0-9a-f]+")
_READ_ONLY = 0o444
_WRITABLE = 0o644
_FIX_CORRUPTED = (
    "The object was modified or damaged on disk; remove it and re-run the step that produced "
    "it with `conveyor run --force --step STEP`."
)


@dataclass(frozen=True)
class Artifact:
    """An object in the store: its sha256 hex digest (its name) and its size in bytes."""

    digest: str
    size: int


@dataclass
class GCReport:
    """What ``ArtifactStore.gc`` removed (or, with ``dry_run``, would remove)."""

    removed: list[str] = field(default_factory=list)
    freed_bytes: int = 0
    kept: int = 0
    tmp_removed: int = 0
    #: unreferenced objects kept because they are younger than the grace period
    kept_young: int = 0


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _bounded(
    method: Callable[Concatenate[ArtifactStore, str, _P], _R],
) -> Callable[Concatenate[ArtifactStore, str, _P], _R]:
    """Run a read of one object within the store's ``read_timeout_s``, if it has one."""

    @functools.wraps(method)
    def read(self: ArtifactStore, digest: str, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        if self.read_timeout_s is None:
            return method(self, digest, *args, **kwargs)
        return self._within_deadline(
            functools.partial(method, self, digest, *args, **kwargs), digest
        )

    return read


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "conveyor" / "artifacts"


def _check_digest(digest: object) -> str:
    # Also the guard that keeps a caller's string from ever becoming an arbitrary path.
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise ArtifactError(
            f"{digest!r} is not an artifact digest: expected 64 lowercase hexadecimal characters "
            "(a sha256). Pass the digest returned by put_file or put_bytes."
        )
    return digest


def _pump(src: IO[bytes], dst: IO[bytes] | None = None) -> tuple[str, int]:
    """Hash ``src`` to its end, copying it to ``dst`` in the same pass; return (hex, size)."""
    hasher = hashlib.sha256()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    readinto: Callable[[Any], int | None] | None = getattr(src, "readinto", None)
    size = 0
    while True:
        if readinto is not None:
            n = readinto(view) or 0
            chunk: Any = view[:n]
        else:
            chunk = src.read(CHUNK)
            n = len(chunk)
        if not n:
            break
        hasher.update(chunk)
        if dst is not None:
            dst.write(chunk)
        size += n
    return hasher.hexdigest(), size


def _fsync_dir(path: Path) -> None:
    # A rename is durable only once the directory holding the new entry is flushed.
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _ensure_dir(path: Path) -> None:
    """Create ``path`` (one level) if needed; fsync its parent when the entry is new."""
    try:
        os.mkdir(path)
    except FileExistsError:
        return
    _fsync_dir(path.parent)


def _write_temp(directory: Path, fill: Callable[[IO[bytes]], Any], mode: int) -> tuple[Path, Any]:
    """Create a temp file in ``directory``, ``fill`` it, chmod and fsync it; return (path, result).

    The temp file is removed if ``fill`` or the flush fails, so only a hard crash leaves one.
    """
    fd, name = tempfile.mkstemp(dir=directory, prefix="put-", suffix=".tmp")
    tmp = Path(name)
    try:
        with open(fd, "wb", buffering=0) as out:
            result = fill(out)
            os.fchmod(out.fileno(), mode)
            os.fsync(out.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp, result


class ArtifactStore:
    """Immutable objects named by the sha256 of their bytes, in a local folder or any fsspec URL.

    Nothing touches disk or network until ``open()`` (or ``with ArtifactStore(url) as store:``).
    ``gc`` must not run while other processes put objects into the same store: an object that a
    concurrent put found already present may be removed under it.
    """

    def __init__(
        self,
        url: str,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        storage_options: dict[str, Any] | None = None,
        read_timeout_s: float | None = None,
    ) -> None:
        """Describe a store; no IO happens here.

        Args:
            url: a local directory (relative or absolute), a ``file://`` URL, or any fsspec URL
                such as ``s3://bucket/prefix``.
            cache_dir: for a remote store, the local directory for downloaded copies and staged
                temp files. Defaults to ``$XDG_CACHE_HOME/conveyor/artifacts`` or
                ``~/.cache/conveyor/artifacts``. Unused by a local store.
            storage_options: keyword arguments for the fsspec filesystem (credentials, endpoint).
            read_timeout_s: give up on a read (``read_bytes``, ``path``, ``verify``,
                ``materialize``, ``size``, ``exists``) that has not finished after this many
                seconds, with ArtifactTimeout, instead of blocking the caller for ever on a
                FIFO or a hung network mount. The read goes on in a daemon thread until the
                file system answers. None (the default) reads in the caller's thread.

        Raises:
            ArtifactError: a ``file://`` URL names a remote host.
        """
        self.url = url
        self.read_timeout_s = read_timeout_s
        self._storage_options = dict(storage_options or {})
        self._fs: AbstractFileSystem | None = None
        self._opened = False
        self._objects_dev: int | None = None
        local = _local_root(url)
        self.remote = local is None
        if local is not None:
            self.root = Path(os.path.abspath(os.path.expanduser(local)))
            self.location = str(self.root)
            self._objects_dir = self.root / "objects"
            self._tmp_dir = self.root / "tmp"
        else:
            self.location = safe_url(url)
            cache = Path(cache_dir).expanduser() if cache_dir else _default_cache_dir()
            self.cache_dir = Path(os.path.abspath(cache))
            self._objects_dir = self.cache_dir / "objects"
            self._tmp_dir = self.cache_dir / "tmp"
            self._remote_root = ""

    def __repr__(self) -> str:
        return f"ArtifactStore({safe_url(self.url)!r})"

    # -- lifecycle -------------------------------------------------------------------------

    def open(self) -> ArtifactStore:
        """Create the layout (``objects/``, ``tmp/``) if missing and connect to a remote store.

        Returns:
            The store itself, so that ``store = ArtifactStore(url).open()`` reads naturally.

        Raises:
            ArtifactError: the directory cannot be created, or the fsspec URL cannot be opened
                (unknown protocol, missing driver such as s3fs, refused credentials).
        """
        with self._errors("open"):
            for directory in (self._objects_dir.parent, self._objects_dir, self._tmp_dir):
                directory.mkdir(parents=True, exist_ok=True)
            self._objects_dev = os.stat(self._objects_dir).st_dev
        if self.remote:
            self._connect()
        self._opened = True
        return self

    def _connect(self) -> None:
        import fsspec.core  # imported here: ~0.1 s that a local store never pays

        try:
            fs, root = fsspec.core.url_to_fs(self.url, **self._storage_options)
        except ImportError as exc:
            raise ArtifactError(
                f"Cannot open the artifact store at {self.location!r}: its fsspec driver is "
                f"missing ({exc}). Install it, e.g. `pip install 'conveyor-ml[s3]'` for s3://."
            ) from exc
        except Exception as exc:
            raise ArtifactError(
                f"Cannot open the artifact store at {self.location!r}: {exc}. "
                "Check the URL's protocol and storage options."
            ) from exc
        self._fs = fs
        self._remote_root = root.rstrip("/")
        with self._errors("open"):
            fs.makedirs(f"{self._remote_root}/objects", exist_ok=True)

    def close(self) -> None:
        """Release the connection to a remote store; the store can be opened again."""
        self._fs = None
        self._opened = False

    def __enter__(self) -> ArtifactStore:
        return self.open()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- writing ---------------------------------------------------------------------------

    def tmp_dir(self) -> Path:
        """A local directory where callers create files to hand to ``put_file(move=True)``.

        Raises:
            ArtifactError: the store is not open.
        """
        self._require_open()
        return self._tmp_dir

    def put_bytes(self, data: bytes) -> Artifact:
        """Store ``data`` and return its artifact; storing the same bytes again is free.

        Raises:
            ArtifactError: the store cannot be written.
        """
        self._require_open()
        data = bytes(data)
        digest = hashlib.sha256(data).hexdigest()
        artifact = Artifact(digest, len(data))
        if self._fs is not None:
            with self._errors(f"write artifact {digest}"):
                if self._remote_size(digest) != len(data):
                    self._fs.pipe_file(self._key(digest), data)
            return artifact
        with self._errors(f"write artifact {digest}"):
            if self._present(digest, len(data)):
                return artifact
            tmp, _ = _write_temp(self._tmp_dir, lambda out: out.write(data), _READ_ONLY)
            self._install(tmp, digest)
        return artifact

    def put_file(
        self, path: str | os.PathLike[str], *, move: bool = False, link: bool = False
    ) -> Artifact:
        """Store the file at ``path`` and return its artifact.

        The bytes are hashed while they are copied, in one pass. With ``move=True`` the file is
        consumed: on the store's filesystem it is hashed and renamed into place without a copy
        (create it inside ``tmp_dir()`` to be sure of that). With ``link=True`` a file on the
        store's filesystem becomes the object through a hard link instead of a copy, and so
        turns read-only where it is (as DVC's protected hard links do): a step's declared out.

        Args:
            path: the file to store.
            move: remove the file once it is stored.
            link: hard-link rather than copy where possible; the file stays, read-only.

        Raises:
            ArtifactError: ``path`` cannot be read or the store cannot be written.
        """
        self._require_open()
        src = Path(path)
        with self._errors(f"store {str(src)!r}"):
            if self._fs is not None:
                return self._put_remote(src, move)
            if move or link:
                artifact = self._rename_in(src) if move else self._link_in(src)
                if artifact is not None:
                    return artifact
            with open(src, "rb", buffering=0) as source:
                tmp, (digest, size) = _write_temp(
                    self._tmp_dir, lambda out: _pump(source, out), _READ_ONLY
                )
            if self._present(digest, size):
                tmp.unlink()  # dedupe: the object is already there
            else:
                self._install(tmp, digest)
            if move:
                src.unlink()
            return Artifact(digest, size)

    def _hash_in_place(self, src: Path) -> tuple[str, int, os.stat_result] | None:
        """(digest, size, stat) of a file that can become an object without a copy, else None.

        A symlink would be stored as a link, a file with other hard links could still be edited
        through them, and a file on another filesystem cannot be renamed or linked in.
        """
        st = os.lstat(src)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or st.st_dev != self._objects_dev:
            return None
        with open(src, "rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
            size = os.fstat(f.fileno()).st_size
            os.fsync(f.fileno())
        return digest, size, st

    def _rename_in(self, src: Path) -> Artifact | None:
        """Hash ``src`` in place and rename it into ``objects/``; None if it must be copied."""
        hashed = self._hash_in_place(src)
        if hashed is None:
            return None
        digest, size, _st = hashed
        if self._present(digest, size):
            src.unlink()
            return Artifact(digest, size)
        os.chmod(src, _READ_ONLY)
        try:
            self._install(src, digest)
        except OSError as exc:
            if exc.errno == errno.EXDEV:  # e.g. a bind mount of the same filesystem
                return None
            raise
        return Artifact(digest, size)

    def _link_in(self, src: Path) -> Artifact | None:
        """Hash ``src`` in place and hard-link it into ``objects/``; None if it must be copied."""
        hashed = self._hash_in_place(src)
        if hashed is None:
            return None
        digest, size, st = hashed
        if self._present(digest, size):
            return Artifact(digest, size)  # already stored; the file stays the caller's
        tmp = self._tmp_dir / f"link-{os.getpid()}-{digest[:16]}-{time.monotonic_ns()}"
        try:
            os.link(src, tmp)
        except OSError:
            return None  # no hard links here (some filesystems, mounts): copy instead
        after = os.lstat(tmp)
        if (after.st_size, after.st_mtime_ns) != (size, st.st_mtime_ns):
            tmp.unlink()  # written to while we hashed it: take a copy instead
            return None
        os.chmod(tmp, _READ_ONLY)
        self._install(tmp, digest)
        return Artifact(digest, size)

    def _present(self, digest: str, size: int) -> bool:
        """Whether the object is stored whole; if so, renew its age, since the caller is about
        to rely on it and a concurrent ``gc`` must see it as young (see the module docstring)."""
        if self._local_size(digest) != size:
            return False
        try:
            os.chmod(self._object_path(digest), _READ_ONLY)
        except FileNotFoundError:
            return False  # removed meanwhile: store it again
        except PermissionError:
            pass  # another user's object in a shared store: it keeps its own age
        return True

    def _install(self, tmp: Path, digest: str) -> None:
        """Atomically rename a finished, fsynced temp file to the object's path."""
        final = self._object_path(digest)
        _ensure_dir(final.parent)
        os.replace(tmp, final)
        _fsync_dir(final.parent)

    def _put_remote(self, src: Path, move: bool) -> Artifact:
        assert self._fs is not None
        # The key is the digest, so the file is hashed before upload. Object stores (S3, GCS,
        # Azure) make an upload visible only once complete, which is what makes this atomic.
        with open(src, "rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
            size = os.fstat(f.fileno()).st_size
        if self._remote_size(digest) != size:
            self._fs.put_file(str(src), self._key(digest))
        if move:
            self._adopt_into_cache(src, digest)
        return Artifact(digest, size)

    def _adopt_into_cache(self, src: Path, digest: str) -> None:
        # A consumed file on the cache's filesystem becomes the cached copy for free.
        st = os.lstat(src)
        cached = self._object_path(digest)
        if stat.S_ISREG(st.st_mode) and st.st_nlink == 1 and not cached.exists():
            os.chmod(src, _READ_ONLY)
            try:
                self._install(src, digest)
                return
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
        src.unlink()

    # -- reading ---------------------------------------------------------------------------

    @_bounded
    def exists(self, digest: str) -> bool:
        """Whether the object is in the store.

        Raises:
            ArtifactError: ``digest`` is malformed or the store cannot be read.
        """
        _check_digest(digest)
        self._require_open()
        with self._errors(f"look up artifact {digest}"):
            if self._fs is not None:
                return bool(self._fs.exists(self._key(digest)))
            return self._object_path(digest).is_file()

    @_bounded
    def size(self, digest: str) -> int:
        """The object's size in bytes.

        Raises:
            ArtifactNotFound: the object is not in the store.
            ArtifactError: ``digest`` is malformed or the store cannot be read.
        """
        _check_digest(digest)
        self._require_open()
        with self._errors(f"look up artifact {digest}"):
            found = self._remote_size(digest) if self._fs is not None else self._local_size(digest)
        if found is None:
            raise self._not_found(digest)
        return found

    @_bounded
    def path(self, digest: str, *, verify: bool = True) -> Path:
        """A local file holding the object's bytes; do not write to it.

        For a local store this is the object itself; for a remote store, a copy in the cache
        directory, downloaded (and checked) on first use.

        Args:
            digest: the object's sha256 hex digest.
            verify: recompute the sha256 of the file and check that it matches.

        Raises:
            ArtifactNotFound: the object is not in the store.
            ArtifactCorrupted: the bytes do not match ``digest``.
            ArtifactError: ``digest`` is malformed or the store cannot be read.
        """
        _check_digest(digest)
        self._require_open()
        local = self._object_path(digest)
        with self._errors(f"read artifact {digest}"):
            if self._fs is None:
                if not local.is_file():
                    raise self._not_found(digest)
                if verify:
                    self._check_file(local, digest)
                return local
            if local.is_file():
                if not verify or self._hash_file(local) == digest:
                    return local
                local.unlink()  # a damaged cached copy: fetch it again from the store
            self._download(digest)
        return local

    def _download(self, digest: str) -> None:
        assert self._fs is not None

        def fill(out: IO[bytes]) -> None:
            with self._open_remote(digest) as source:
                actual, _ = _pump(source, out)
            if actual != digest:
                raise self._corrupted(digest, self._remote_location(digest), actual)

        tmp, _ = _write_temp(self._tmp_dir, fill, _READ_ONLY)
        self._install(tmp, digest)

    @_bounded
    def read_bytes(self, digest: str) -> bytes:
        """The object's bytes, always checked against ``digest``.

        Raises:
            ArtifactNotFound: the object is not in the store.
            ArtifactCorrupted: the bytes do not match ``digest``.
            ArtifactError: ``digest`` is malformed or the store cannot be read.
        """
        _check_digest(digest)
        self._require_open()
        with self._errors(f"read artifact {digest}"):
            try:
                if self._fs is not None:
                    data = bytes(self._fs.cat_file(self._key(digest)))
                else:
                    data = self._object_path(digest).read_bytes()
            except FileNotFoundError:
                raise self._not_found(digest) from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != digest:
            where = self._remote_location(digest) if self._fs else str(self._object_path(digest))
            raise self._corrupted(digest, where, actual)
        return data

    @_bounded
    def verify(self, digest: str) -> None:
        """Recompute the stored object's sha256 and check that it matches ``digest``.

        Raises:
            ArtifactNotFound: the object is not in the store.
            ArtifactCorrupted: the bytes do not match ``digest``.
            ArtifactError: ``digest`` is malformed or the store cannot be read.
        """
        _check_digest(digest)
        self._require_open()
        with self._errors(f"read artifact {digest}"):
            if self._fs is not None:  # check the store's copy, not the local cache
                where = self._remote_location(digest)
                with self._open_remote(digest) as source:
                    actual, _ = _pump(source)
            else:
                where = str(self._object_path(digest))
                with self._open_source(digest) as source:
                    actual, _ = _pump(source)
        if actual != digest:
            raise self._corrupted(digest, where, actual)

    @_bounded
    def materialize(self, digest: str, dest: str | os.PathLike[str]) -> Path:
        """Put a checked, writable copy of the object at ``dest``, atomically.

        The copy goes to a temp file beside ``dest`` and is renamed over it, so ``dest`` is
        never seen half-written; edits to it never reach the store.

        Args:
            digest: the object's sha256 hex digest.
            dest: the file to create or replace; missing parent directories are created.

        Returns:
            ``dest`` as a Path.

        Raises:
            ArtifactNotFound: the object is not in the store.
            ArtifactCorrupted: the bytes do not match ``digest`` (``dest`` is left untouched).
            ArtifactError: ``digest`` is malformed, or ``dest`` cannot be written.
        """
        _check_digest(digest)
        self._require_open()
        target = Path(dest)

        def fill(out: IO[bytes]) -> None:
            with self._open_source(digest) as source:
                actual, _ = _pump(source, out)
            if actual != digest:
                raise self._corrupted(digest, self._source_location(digest), actual)

        with self._errors(f"write artifact {digest} to {str(target)!r}"):
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp, _ = _write_temp(target.parent, fill, _WRITABLE)
            try:
                os.replace(tmp, target)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            _fsync_dir(target.parent)
        return target

    def digests(self) -> Iterator[str]:
        """Every object in the store, in sorted order.

        Raises:
            ArtifactError: the store cannot be listed.
        """
        self._require_open()
        with self._errors("list objects"):
            found = self._remote_digests() if self._fs is not None else self._local_digests()
        yield from found

    def _local_digests(self) -> list[str]:
        out: list[str] = []
        for prefix in sorted(os.listdir(self._objects_dir)):
            folder = self._objects_dir / prefix
            if len(prefix) != 2 or not _HEX.fullmatch(prefix) or not folder.is_dir():
                continue
            for rest in sorted(os.listdir(folder)):
                if _DIGEST.fullmatch(prefix + rest):
                    out.append(prefix + rest)
        return out

    def _remote_digests(self) -> list[str]:
        assert self._fs is not None
        base = f"{self._remote_root}/objects"
        if not self._fs.exists(base):
            return []
        out = []
        for key in self._fs.find(base):
            parts = key.rstrip("/").split("/")
            if len(parts) >= 2 and len(parts[-2]) == 2 and _DIGEST.fullmatch(parts[-2] + parts[-1]):
                out.append(parts[-2] + parts[-1])
        return sorted(out)

    # -- garbage collection ----------------------------------------------------------------

    def gc(
        self,
        keep: Iterable[str],
        *,
        dry_run: bool = False,
        tmp_older_than_s: float = 3600.0,
        grace_s: float = 0.0,
    ) -> GCReport:
        """Remove every object not in ``keep`` and older than ``grace_s``, and temp files left
        by crashes.

        ``keep`` is what the records refer to; an object a process has stored but not yet
        recorded (a run in progress, in any workspace sharing the store) is in no record, so
        only a grace period covering the longest run protects it. Pass one whenever anything
        else may be writing to the store.

        Args:
            keep: digests that must stay; every one must be well formed.
            dry_run: report what would be removed and remove nothing.
            tmp_older_than_s: remove temp files not modified for this many seconds; younger
                ones may belong to a write in progress.
            grace_s: keep unreferenced objects stored, or re-used by a put, less than this
                many seconds ago (counted in ``kept_young``). A remote store's age is its
                last upload: re-use by a put does not renew it there.

        Returns:
            What was (or would be) removed, the bytes freed, and how many objects were kept.

        Raises:
            ArtifactError: a digest in ``keep`` is malformed, or the store cannot be changed.
        """
        self._require_open()
        # A typo in the keep-set must not silently delete the object it meant to keep.
        keep_set = {_check_digest(d) for d in keep}
        report = GCReport()
        for digest in list(self.digests()):
            if digest in keep_set:
                report.kept += 1
                continue
            with self._errors(f"remove artifact {digest}"):
                # Asked per object, just before removing it, so an object re-used while the
                # listing was walked is seen as young.
                if grace_s > 0 and self._age_s(digest) < grace_s:
                    report.kept_young += 1
                    continue
                size = (
                    self._remote_size(digest) if self._fs is not None else self._local_size(digest)
                )
                if not dry_run:
                    self._remove(digest)
            report.removed.append(digest)
            report.freed_bytes += size or 0
        report.tmp_removed = self._gc_tmp(dry_run, tmp_older_than_s)
        return report

    def _age_s(self, digest: str) -> float:
        """Seconds since the object was stored or last re-used; 0 when the store cannot say."""
        if self._fs is None:
            try:
                return time.time() - os.stat(self._object_path(digest)).st_ctime
            except FileNotFoundError:
                return 0.0
        try:
            modified = self._fs.modified(self._key(digest))
        except (NotImplementedError, FileNotFoundError, OSError):
            return 0.0  # unknown age: never old enough to delete
        if modified.tzinfo is None:  # fsspec's local and memory file systems answer naive UTC
            modified = modified.replace(tzinfo=UTC)
        return time.time() - modified.timestamp()

    def _remove(self, digest: str) -> None:
        # Prefix directories stay: removing one could race a concurrent put renaming into it.
        if self._fs is not None:
            self._fs.rm_file(self._key(digest))
        self._object_path(digest).unlink(missing_ok=True)

    def _gc_tmp(self, dry_run: bool, older_than_s: float) -> int:
        cutoff = time.time() - older_than_s
        removed = 0
        with self._errors("clean temp files"):
            for entry in os.scandir(self._tmp_dir):
                try:
                    if entry.stat(follow_symlinks=False).st_mtime > cutoff:
                        continue
                    if not dry_run:
                        os.unlink(entry.path)
                except FileNotFoundError:
                    continue  # finished or removed by someone else meanwhile
                except IsADirectoryError:
                    continue  # a caller's directory: not ours to remove
                removed += 1
        return removed

    # -- helpers ---------------------------------------------------------------------------

    def _within_deadline(self, read: Callable[[], _R], digest: str) -> _R:
        """``read()`` in a daemon thread; ArtifactTimeout if it has not returned in time.

        A read blocked in the kernel (open() of a FIFO, a hung NFS server) cannot be cancelled
        from Python: the thread is left to finish, or to wait until the process exits.
        """
        timeout = self.read_timeout_s
        assert timeout is not None
        outcome: list[Any] = []

        def target() -> None:
            try:
                outcome.append((True, read()))
            except BaseException as exc:  # handed to the caller's thread below
                outcome.append((False, exc))

        worker = threading.Thread(
            target=target, name=f"conveyor-artifact-read-{digest[:12]}", daemon=True
        )
        worker.start()
        worker.join(timeout)
        if not outcome:
            # Named without touching the file system, which may be what hangs.
            where = self._remote_location(digest) if self._fs else str(self._object_path(digest))
            raise ArtifactTimeout(
                f"Reading artifact {digest} from {where} did not finish "
                f"within {timeout:g} s: the file blocks (a FIFO in place of the object, or a hung "
                "network file system). Check the store's mount; the read was abandoned."
            )
        ok, value = outcome[0]
        if not ok:
            raise value
        return cast(_R, value)

    def _require_open(self) -> None:
        if not self._opened:
            raise ArtifactError(
                f"The artifact store at {self.location} is not open. "
                "Call open() first or use it as a context manager."
            )

    def _object_path(self, digest: str) -> Path:
        """Where the object (local store) or its cached copy (remote store) lives."""
        return self._objects_dir / digest[:2] / digest[2:]

    def _key(self, digest: str) -> str:
        return f"{self._remote_root}/objects/{digest[:2]}/{digest[2:]}"

    def _remote_location(self, digest: str) -> str:
        assert self._fs is not None
        return str(self._fs.unstrip_protocol(self._key(digest)))

    def _source_location(self, digest: str) -> str:
        if self._fs is None or self._object_path(digest).is_file():
            return str(self._object_path(digest))
        return self._remote_location(digest)

    def _local_size(self, digest: str) -> int | None:
        try:
            return os.stat(self._object_path(digest)).st_size
        except FileNotFoundError:
            return None

    def _remote_size(self, digest: str) -> int | None:
        assert self._fs is not None
        try:
            return int(self._fs.size(self._key(digest)))
        except FileNotFoundError:
            return None

    @contextmanager
    def _open_remote(self, digest: str) -> Iterator[IO[bytes]]:
        assert self._fs is not None
        try:
            f = self._fs.open(self._key(digest), "rb")
        except FileNotFoundError:
            raise self._not_found(digest) from None
        with f:
            yield f

    @contextmanager
    def _open_source(self, digest: str) -> Iterator[IO[bytes]]:
        """The object's bytes: the local object, a remote store's cached copy, or the remote."""
        local = self._object_path(digest)
        try:
            f = open(local, "rb", buffering=0)
        except FileNotFoundError:
            if self._fs is None:
                raise self._not_found(digest) from None
            with self._open_remote(digest) as remote:
                yield remote
            return
        with f:
            yield f

    def _hash_file(self, path: Path) -> str:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()

    def _check_file(self, path: Path, digest: str) -> None:
        actual = self._hash_file(path)
        if actual != digest:
            raise self._corrupted(digest, str(path), actual)

    def _not_found(self, digest: str) -> ArtifactNotFound:
        return ArtifactNotFound(
            f"Artifact {digest} is not in the artifact store at {self.location}. Check that this "
            "is the store the project was run with, or re-run the step that produced it with "
            "`conveyor run --force --step STEP`."
        )

    def _corrupted(self, digest: str, where: str, actual: str) -> ArtifactCorrupted:
        return ArtifactCorrupted(
            f"Artifact {digest} at {where} is corrupted: its bytes hash to {actual}. "
            + _FIX_CORRUPTED
        )

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Wrap foreign errors (OSError, and anything an fsspec driver raises) in ArtifactError."""
        try:
            yield
        except ConveyorError:
            raise
        except Exception as exc:
            if self._fs is None and not isinstance(exc, OSError):
                raise
            code = getattr(exc, "errno", None)
            reads = action.startswith(("read", "look up", "list"))
            if code in DISK_ERRNOS and not (reads and code in (errno.EACCES, errno.EPERM)):
                where = getattr(exc, "filename", None) or self.location
                raise ArtifactUnwritable(
                    f"Cannot {action} in the artifact store at {self.location}: "
                    + explain(code, where, str(exc))
                ) from exc
            raise ArtifactError(
                f"Cannot {action} in the artifact store at {self.location}: {exc}. "
                "Check that the path exists and its permissions."
            ) from exc


def _local_root(url: str) -> str | None:
    """The local directory a URL names, or None for a URL that needs fsspec."""
    if url.startswith("file://"):
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise ArtifactError(
                f"Artifact store URL {url!r} names the host {parts.netloc!r}; a file:// URL "
                "must be local. Use file:///absolute/path or a plain path."
            )
        return unquote(parts.path)
    if "://" in url or "::" in url:
        return None
    return url
