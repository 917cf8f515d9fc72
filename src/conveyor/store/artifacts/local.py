"""Objects in a local folder: os and pathlib only, never fsspec.

Layout::

    <root>/objects/<2 hex>/<62 hex>   the objects, read-only (0o444)
    <root>/tmp/                       in-progress writes and callers' temp files

Objects are written atomically: the bytes go to a temp file in ``tmp/``, are fsynced, then
renamed into place, so a crash leaves at worst a temp file that ``gc`` removes later. A file on
the same filesystem can become an object without a copy, by a rename (``move``) or a hard link
(``link``). The fsspec backend keeps its local cache in this same layout, through this class.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import time
from pathlib import Path
from typing import IO

from conveyor.store.artifacts.base import (
    DIGEST,
    HEX,
    READ_ONLY,
    Artifact,
    DigestMismatch,
    fsync_dir,
    hash_file,
    pump,
    write_temp,
)


class LocalBackend:
    """A folder of objects named by digest; see the module docstring for its layout."""

    remote = False

    def __init__(self, root: Path) -> None:
        self.root = root
        self.location = str(root)
        self.objects_dir = root / "objects"
        self._tmp_dir = root / "tmp"
        self._objects_dev: int | None = None

    def open(self) -> None:
        for directory in (self.root, self.objects_dir, self._tmp_dir):
            directory.mkdir(parents=True, exist_ok=True)
        self._objects_dev = os.stat(self.objects_dir).st_dev

    def close(self) -> None:
        pass  # nothing held open between calls

    def tmp_dir(self) -> Path:
        return self._tmp_dir

    def object_path(self, digest: str) -> Path:
        return self.objects_dir / digest[:2] / digest[2:]

    # -- writing ---------------------------------------------------------------------------

    def put_bytes(self, digest: str, data: bytes) -> None:
        if self._present(digest, len(data)):
            return
        tmp, _ = write_temp(self._tmp_dir, lambda out: out.write(data), READ_ONLY)
        self.install(tmp, digest)

    def put_file(self, src: Path, *, move: bool, link: bool) -> Artifact:
        if move or link:
            artifact = self._rename_in(src) if move else self._link_in(src)
            if artifact is not None:
                return artifact
        with open(src, "rb", buffering=0) as source:
            tmp, (digest, size) = write_temp(
                self._tmp_dir, lambda out: pump(source, out), READ_ONLY
            )
        if self._present(digest, size):
            tmp.unlink()  # dedupe: the object is already there
        else:
            self.install(tmp, digest)
        if move:
            src.unlink()
        return Artifact(digest, size)

    def install(self, tmp: Path, digest: str) -> None:
        """Atomically rename a finished, fsynced temp file to the object's path."""
        final = self.object_path(digest)
        _ensure_dir(final.parent)
        os.replace(tmp, final)
        fsync_dir(final.parent)

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
        os.chmod(src, READ_ONLY)
        try:
            self.install(src, digest)
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
        os.chmod(tmp, READ_ONLY)
        self.install(tmp, digest)
        return Artifact(digest, size)

    def _present(self, digest: str, size: int) -> bool:
        """Whether the object is stored whole; if so, renew its age, since the caller is about
        to rely on it and a concurrent ``gc`` must see it as young (see ``ArtifactStore``)."""
        if self.size(digest) != size:
            return False
        try:
            os.chmod(self.object_path(digest), READ_ONLY)
        except FileNotFoundError:
            return False  # removed meanwhile: store it again
        except PermissionError:
            pass  # another user's object in a shared store: it keeps its own age
        return True

    # -- reading ---------------------------------------------------------------------------

    def exists(self, digest: str) -> bool:
        return self.object_path(digest).is_file()

    def size(self, digest: str) -> int | None:
        try:
            return os.stat(self.object_path(digest)).st_size
        except FileNotFoundError:
            return None

    def get(self, digest: str) -> bytes:
        return self.object_path(digest).read_bytes()

    def open_object(self, digest: str) -> IO[bytes]:
        return open(self.object_path(digest), "rb", buffering=0)

    def open_nearest(self, digest: str) -> IO[bytes]:
        return self.open_object(digest)

    def local_copy(self, digest: str, *, verify: bool) -> Path:
        local = self.object_path(digest)
        if not local.is_file():
            raise FileNotFoundError(str(local))
        if verify:
            actual = hash_file(local)
            if actual != digest:
                raise DigestMismatch(str(local), actual)
        return local

    def list(self) -> list[str]:
        out: list[str] = []
        for prefix in sorted(os.listdir(self.objects_dir)):
            folder = self.objects_dir / prefix
            if len(prefix) != 2 or not HEX.fullmatch(prefix) or not folder.is_dir():
                continue
            for rest in sorted(os.listdir(folder)):
                if DIGEST.fullmatch(prefix + rest):
                    out.append(prefix + rest)
        return out

    def age_s(self, digest: str) -> float:
        try:
            return time.time() - os.stat(self.object_path(digest)).st_ctime
        except FileNotFoundError:
            return 0.0

    def delete(self, digest: str) -> None:
        # Prefix directories stay: removing one could race a concurrent put renaming into it.
        self.object_path(digest).unlink(missing_ok=True)

    def location_of(self, digest: str) -> str:
        return str(self.object_path(digest))

    def source_of(self, digest: str) -> str:
        return self.location_of(digest)


def _ensure_dir(path: Path) -> None:
    """Create ``path`` (one level) if needed; fsync its parent when the entry is new."""
    try:
        os.mkdir(path)
    except FileExistsError:
        return
    fsync_dir(path.parent)
