"""Objects at any fsspec URL (``s3://bucket/prefix``, ``memory://x``), behind a local cache.

fsspec (and its driver, such as s3fs) is imported on ``open()``, so a local store never pays for
it. The remote keeps the local layout's ``objects/<2 hex>/<62 hex>`` keys; the staged temp files
and the copies that ``local_copy`` downloads live in a local cache folder with the local layout
(``~/.cache/conveyor/artifacts`` by default). An upload is atomic because object stores (S3,
GCS, Azure) make an object visible only once it is complete.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import time
from datetime import UTC
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from conveyor.exceptions import ArtifactError, safe_url
from conveyor.store.artifacts.base import (
    DIGEST,
    READ_ONLY,
    Artifact,
    DigestMismatch,
    hash_file,
    pump,
    write_temp,
)
from conveyor.store.artifacts.local import LocalBackend

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem


class FsspecBackend:
    """Objects under an fsspec URL; ``cache`` holds local copies and temp files."""

    remote = True

    def __init__(self, url: str, storage_options: dict[str, Any], cache_dir: Path) -> None:
        self.url = url
        self.location = safe_url(url)
        self.cache = LocalBackend(cache_dir)
        self._storage_options = storage_options
        self._fs: AbstractFileSystem | None = None
        self._root = ""

    def open(self) -> None:
        """Create the cache folder and connect; the URL's own errors become ArtifactError."""
        self.cache.open()
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
        self._root = root.rstrip("/")
        fs.makedirs(f"{self._root}/objects", exist_ok=True)

    def close(self) -> None:
        self._fs = None

    @property
    def fs(self) -> AbstractFileSystem:
        if self._fs is None:
            raise ArtifactError(
                f"The artifact store at {self.location} is not open. "
                "Call open() first or use it as a context manager."
            )
        return self._fs

    def key(self, digest: str) -> str:
        """The object's path on the remote file system (without the protocol)."""
        return f"{self._root}/objects/{digest[:2]}/{digest[2:]}"

    def tmp_dir(self) -> Path:
        return self.cache.tmp_dir()

    # -- writing ---------------------------------------------------------------------------

    def put_bytes(self, digest: str, data: bytes) -> None:
        if self.size(digest) != len(data):
            self.fs.pipe_file(self.key(digest), data)

    def put_file(self, src: Path, *, move: bool, link: bool) -> Artifact:
        # ``link`` has no meaning here: the bytes are uploaded. The key is the digest, so the
        # file is hashed before the upload.
        with open(src, "rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
            size = os.fstat(f.fileno()).st_size
        if self.size(digest) != size:
            self.fs.put_file(str(src), self.key(digest))
        if move:
            self._adopt_into_cache(src, digest)
        return Artifact(digest, size)

    def _adopt_into_cache(self, src: Path, digest: str) -> None:
        # A consumed file on the cache's filesystem becomes the cached copy for free.
        st = os.lstat(src)
        cached = self.cache.object_path(digest)
        if stat.S_ISREG(st.st_mode) and st.st_nlink == 1 and not cached.exists():
            os.chmod(src, READ_ONLY)
            try:
                self.cache.install(src, digest)
                return
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
        src.unlink()

    # -- reading ---------------------------------------------------------------------------

    def exists(self, digest: str) -> bool:
        return bool(self.fs.exists(self.key(digest)))

    def size(self, digest: str) -> int | None:
        try:
            return int(self.fs.size(self.key(digest)))
        except FileNotFoundError:
            return None

    def get(self, digest: str) -> bytes:
        return bytes(self.fs.cat_file(self.key(digest)))

    def open_object(self, digest: str) -> IO[bytes]:
        f: IO[bytes] = self.fs.open(self.key(digest), "rb")
        return f

    def open_nearest(self, digest: str) -> IO[bytes]:
        try:
            return self.cache.open_object(digest)
        except FileNotFoundError:
            return self.open_object(digest)

    def local_copy(self, digest: str, *, verify: bool) -> Path:
        local = self.cache.object_path(digest)
        if local.is_file():
            if not verify or hash_file(local) == digest:
                return local
            local.unlink()  # a damaged cached copy: fetch it again from the store
        self._download(digest)
        return local

    def _download(self, digest: str) -> None:
        """Copy the object into the cache, checked as it streams: a bad copy is never kept."""

        def fill(out: IO[bytes]) -> None:
            with self.open_object(digest) as source:
                actual, _ = pump(source, out)
            if actual != digest:
                raise DigestMismatch(self.location_of(digest), actual)

        tmp, _ = write_temp(self.cache.tmp_dir(), fill, READ_ONLY)
        self.cache.install(tmp, digest)

    def list(self) -> list[str]:
        base = f"{self._root}/objects"
        if not self.fs.exists(base):
            return []
        out = []
        for key in self.fs.find(base):
            parts = key.rstrip("/").split("/")
            if len(parts) >= 2 and len(parts[-2]) == 2 and DIGEST.fullmatch(parts[-2] + parts[-1]):
                out.append(parts[-2] + parts[-1])
        return sorted(out)

    def age_s(self, digest: str) -> float:
        """The age of the last upload: re-use by a put does not renew it on a remote store."""
        try:
            modified = self.fs.modified(self.key(digest))
        except (NotImplementedError, FileNotFoundError, OSError):
            return 0.0  # unknown age: never old enough to delete
        if modified.tzinfo is None:  # fsspec's local and memory file systems answer naive UTC
            modified = modified.replace(tzinfo=UTC)
        return time.time() - float(modified.timestamp())

    def delete(self, digest: str) -> None:
        self.fs.rm_file(self.key(digest))
        self.cache.delete(digest)

    def location_of(self, digest: str) -> str:
        return str(self.fs.unstrip_protocol(self.key(digest)))

    def source_of(self, digest: str) -> str:
        if self.cache.object_path(digest).is_file():
            return str(self.cache.object_path(digest))
        return self.location_of(digest)
