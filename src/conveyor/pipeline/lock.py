"""One `conveyor run` per workspace at a time, held with an OS file lock.

The kernel drops the lock when its process dies, even by ``kill -9``, so a crash never leaves
the project locked; the file's content only says who holds it, for the error message.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from conveyor.exceptions import ProjectLocked, ProjectUnwritable
from conveyor.store.disk import explain


class RunLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self, *, wait: bool = False) -> RunLock:
        """Take the lock, or raise ProjectLocked naming the holder (or wait for it).

        Raises:
            ProjectLocked: another process holds it and ``wait`` is false.
            ProjectUnwritable: the lock file cannot be created or written (a full disk, a
                read-only mount, missing permissions); the descriptor is never leaked.
        """
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise self._unwritable(exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise ProjectLocked(
                f"Another 'conveyor run' is running in this project ({holder}). Wait for it to "
                "finish, or pass --wait to queue behind it."
            ) from None
        try:
            os.ftruncate(fd, 0)
            info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
            os.pwrite(fd, json.dumps(info).encode(), 0)
        except OSError as exc:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            raise self._unwritable(exc) from None
        self._fd = fd
        return self

    def _unwritable(self, exc: OSError) -> ProjectUnwritable:
        return ProjectUnwritable(
            f"Cannot take the run lock {self.path}: "
            + explain(exc.errno, self.path, exc.strerror or "")
        )

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        since = time.strftime("%H:%M:%S", time.localtime(info["since"]))
        return f"pid {info['pid']} on {info['host']}, started {since}"
    except (ValueError, KeyError, OSError):
        return "holder unknown"
