"""Content-addressed artifact store: an object's name is the sha256 of its bytes.

Integrity is the point, so the hash is sha256 (not a fast non-cryptographic hash) and every read
that hands bytes to a caller can re-check it. ``ArtifactStore`` owns the naming, the checks, the
read timeouts and ``gc``; a backend (``base.Backend``) moves the bytes: ``local.LocalBackend`` for
a folder (never importing fsspec), ``fsspec.FsspecBackend`` for any other URL (``s3://bucket/
prefix``, ``memory://x``), imported on ``open()``, with a local cache for downloaded copies.

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
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Concatenate, ParamSpec, TypeVar, cast
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
from conveyor.store.artifacts.base import (
    DIGEST,
    WRITABLE,
    Artifact,
    Backend,
    DigestMismatch,
    fsync_dir,
    pump,
    write_temp,
)
from conveyor.store.artifacts.local import LocalBackend
from conveyor.store.disk import DISK_ERRNOS, explain

__all__ = ["Artifact", "ArtifactStore", "Backend", "GCReport"]

_FIX_CORRUPTED = (
    "The object was modified or damaged on disk; remove it and re-run the step that produced "
    "it with `conveyor run --force --step STEP`."
)


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
    if not isinstance(digest, str) or not DIGEST.fullmatch(digest):
        raise ArtifactError(
            f"{digest!r} is not an artifact digest: expected 64 lowercase hexadecimal characters "
            "(a sha256). Pass the digest returned by put_file or put_bytes."
        )
    return digest


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
        self._opened = False
        self.backend: Backend
        local = _local_root(url)
        self.remote = local is None
        if local is not None:
            self.root = Path(os.path.abspath(os.path.expanduser(local)))
            self.backend = LocalBackend(self.root)
        else:
            from conveyor.store.artifacts.fsspec import FsspecBackend  # fsspec itself on open()

            cache = Path(cache_dir).expanduser() if cache_dir else _default_cache_dir()
            self.cache_dir = Path(os.path.abspath(cache))
            self.backend = FsspecBackend(url, dict(storage_options or {}), self.cache_dir)
        self.location = self.backend.location

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
            self.backend.open()
        self._opened = True
        return self

    def close(self) -> None:
        """Release the connection to a remote store; the store can be opened again."""
        self.backend.close()
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
        return self.backend.tmp_dir()

    def put_bytes(self, data: bytes) -> Artifact:
        """Store ``data`` and return its artifact; storing the same bytes again is free.

        Raises:
            ArtifactError: the store cannot be written.
        """
        self._require_open()
        data = bytes(data)
        digest = hashlib.sha256(data).hexdigest()
        with self._errors(f"write artifact {digest}"):
            self.backend.put_bytes(digest, data)
        return Artifact(digest, len(data))

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
            return self.backend.put_file(src, move=move, link=link)

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
            return self.backend.exists(digest)

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
            found = self.backend.size(digest)
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
        with self._errors(f"read artifact {digest}"):
            try:
                return self.backend.local_copy(digest, verify=verify)
            except FileNotFoundError:
                raise self._not_found(digest) from None
            except DigestMismatch as bad:
                raise self._corrupted(digest, bad.where, bad.actual) from None

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
                data = self.backend.get(digest)
            except FileNotFoundError:
                raise self._not_found(digest) from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise self._corrupted(digest, self.backend.location_of(digest), actual)
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
            where = self.backend.location_of(digest)  # the store's copy, not a local cache
            with self._source(digest, self.backend.open_object) as source:
                actual, _ = pump(source)
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
            with self._source(digest, self.backend.open_nearest) as source:
                actual, _ = pump(source, out)
            if actual != digest:
                raise self._corrupted(digest, self.backend.source_of(digest), actual)

        with self._errors(f"write artifact {digest} to {str(target)!r}"):
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp, _ = write_temp(target.parent, fill, WRITABLE)
            try:
                os.replace(tmp, target)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            fsync_dir(target.parent)
        return target

    def digests(self) -> Iterator[str]:
        """Every object in the store, in sorted order.

        Raises:
            ArtifactError: the store cannot be listed.
        """
        self._require_open()
        with self._errors("list objects"):
            found = self.backend.list()
        yield from found

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
                if grace_s > 0 and self.backend.age_s(digest) < grace_s:
                    report.kept_young += 1
                    continue
                size = self.backend.size(digest)
                if not dry_run:
                    self.backend.delete(digest)
            report.removed.append(digest)
            report.freed_bytes += size or 0
        report.tmp_removed = self._gc_tmp(dry_run, tmp_older_than_s)
        return report

    def _gc_tmp(self, dry_run: bool, older_than_s: float) -> int:
        cutoff = time.time() - older_than_s
        removed = 0
        with self._errors("clean temp files"):
            for entry in os.scandir(self.backend.tmp_dir()):
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
            where = self.backend.location_of(digest)
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

    @contextmanager
    def _source(self, digest: str, opener: Callable[[str], IO[bytes]]) -> Iterator[IO[bytes]]:
        """``opener(digest)`` as a context; a missing object is ArtifactNotFound."""
        try:
            f = opener(digest)
        except FileNotFoundError:
            raise self._not_found(digest) from None
        with f:
            yield f

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
            if not self.backend.remote and not isinstance(exc, OSError):
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
