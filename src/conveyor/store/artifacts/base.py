"""What the artifact store asks of a backend, and the hashing and file helpers backends share.

``ArtifactStore`` names objects by digest, checks digests, times out reads and collects garbage;
a ``Backend`` only moves the bytes of objects already named. ``put_file`` is the one exception:
a backend hashes the file as it copies (or links, or uploads) it, because one pass over the
bytes is what makes storing a large model file cheap; it uses ``pump`` or ``hash_file`` from here.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol, TypeVar

CHUNK = 1024 * 1024  # 1 MiB: large enough that syscalls and hashlib overhead vanish
DIGEST = re.compile(r"[0-9a-f]{64}")
HEX = re.compile(r"[0-9a-f]+")
READ_ONLY = 0o444
WRITABLE = 0o644

_T = TypeVar("_T")


@dataclass(frozen=True)
class Artifact:
    """An object in the store: its sha256 hex digest (its name) and its size in bytes."""

    digest: str
    size: int


class DigestMismatch(Exception):
    """Bytes a backend read do not hash to the digest they are stored under.

    Raised by a backend that checks while it copies; ``ArtifactStore`` turns it into
    ``ArtifactCorrupted`` with its advice.
    """

    def __init__(self, where: str, actual: str) -> None:
        super().__init__(f"{where} hashes to {actual}")
        self.where = where
        self.actual = actual


class Backend(Protocol):
    """Where the objects' bytes live: a local folder, or any fsspec URL behind a local cache.

    Every ``digest`` passed in is already checked to be 64 lowercase hex characters. A missing
    object is ``None`` from ``size`` and ``FileNotFoundError`` from the readers; other errors
    are the file system's own, which ``ArtifactStore`` wraps.
    """

    location: str
    """The store, for messages (credentials removed from a URL)."""
    remote: bool
    """Whether a driver may raise errors that are not ``OSError`` (all are wrapped then)."""

    def open(self) -> None:
        """Create the layout if missing, and connect."""
        ...

    def close(self) -> None:
        """Drop the connection; ``open()`` may be called again."""
        ...

    def tmp_dir(self) -> Path:
        """A local directory for temp files; files there may be moved in without a copy."""
        ...

    def put_bytes(self, digest: str, data: bytes) -> None:
        """Store ``data`` under ``digest`` unless an object of that size is already there."""
        ...

    def put_file(self, src: Path, *, move: bool, link: bool) -> Artifact:
        """Hash and store the file at ``src`` (see ``ArtifactStore.put_file``)."""
        ...

    def exists(self, digest: str) -> bool:
        """Whether the object is stored."""
        ...

    def size(self, digest: str) -> int | None:
        """The stored object's size, or None when it is not stored."""
        ...

    def get(self, digest: str) -> bytes:
        """The stored object's bytes, unchecked."""
        ...

    def open_object(self, digest: str) -> IO[bytes]:
        """The stored object itself, for reading (never a cached copy)."""
        ...

    def open_nearest(self, digest: str) -> IO[bytes]:
        """The closest copy of the object: a cached local copy if there is one."""
        ...

    def local_copy(self, digest: str, *, verify: bool) -> Path:
        """A local file with the object's bytes, fetched if needed; with ``verify``, checked.

        Raises:
            DigestMismatch: the bytes (after one fresh fetch, for a remote store) do not match.
        """
        ...

    def list(self) -> list[str]:
        """Every stored digest, sorted."""
        ...

    def age_s(self, digest: str) -> float:
        """Seconds since the object was stored or last re-used; 0 when unknown."""
        ...

    def delete(self, digest: str) -> None:
        """Remove the object (and any cached copy); a missing one is not an error."""
        ...

    def location_of(self, digest: str) -> str:
        """Where the stored object is, for messages, without touching the file system."""
        ...

    def source_of(self, digest: str) -> str:
        """Where ``open_nearest`` reads the object from, for messages."""
        ...


def pump(src: IO[bytes], dst: IO[bytes] | None = None) -> tuple[str, int]:
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


def hash_file(path: Path) -> str:
    """The sha256 hex digest of the file at ``path``."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def fsync_dir(path: Path) -> None:
    """Flush a directory: a rename is durable only once the directory holding it is."""
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_temp(directory: Path, fill: Callable[[IO[bytes]], _T], mode: int) -> tuple[Path, _T]:
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
