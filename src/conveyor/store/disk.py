"""Why a path cannot be written, in words a user can act on: a full disk, a read-only mount, a
missing permission.

The stores meet the operating system in two ways: through ``OSError`` (the artifact folder,
lock files), which carries an errno, and through SQLite, which reports "disk I/O error" or
"unable to open database file" for the same causes without one. :func:`diagnose` recovers the
cause by asking the file system, so both kinds of failure end in the same message: what is wrong,
where, and the fix.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

__all__ = ["DISK_ERRNOS", "diagnose", "explain"]

#: The causes worth a specific message; any other OSError is reported as the OS words it.
DISK_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR}
)


#: Free space under which a failed write is blamed on the disk: SQLite needs a few pages for its
#: journal, so a write fails before the last block is taken. Only asked after a failure.
_NEARLY_FULL = 1024 * 1024


def explain(code: int | None, path: str | os.PathLike[str], detail: str = "") -> str:
    """One or two sentences: why ``path`` cannot be written (by errno ``code``) and the fix.

    Args:
        code: the errno of the failure (from an OSError, or from :func:`diagnose`).
        path: the file or folder that could not be written.
        detail: the OS's or the driver's own words, quoted when the errno is not one we know.
    """
    where = str(path)
    if code in (errno.ENOSPC, errno.EDQUOT):
        return (
            f"the disk holding {where} is full. Free space there (`conveyor gc` removes "
            "artifacts nothing refers to), or move the store to a larger disk."
        )
    if code == errno.EROFS:
        return (
            f"{where} is on a read-only file system. Remount it read-write, or point the store "
            "at a writable place (store.url and store.artifacts in conveyor.yaml, or "
            "CONVEYOR_STORE_URL and CONVEYOR_ARTIFACTS)."
        )
    if code in (errno.EACCES, errno.EPERM):
        return (
            f"this user may not write {where}. Give it write access (chown or chmod), or run "
            "Conveyor as the user who owns it."
        )
    if code == errno.ENOTDIR:
        return f"a parent of {where} is a file, not a folder. Move that file out of the way."
    reason = detail or (os.strerror(code) if code else "unknown error")
    return f"{reason} ({where})."


def diagnose(path: str | os.PathLike[str]) -> int | None:
    """The errno that explains why ``path`` (a file, or a folder to create) cannot be written,
    found by asking the file system; None when nothing there looks wrong.

    Checks, nearest existing ancestor first: a file where a folder should be (ENOTDIR), a
    read-only mount (EROFS), less than 1 MiB free (ENOSPC), no write permission (EACCES).
    """
    target = Path(path)
    probe = target
    while not probe.exists():
        if probe.parent == probe:
            return None
        probe = probe.parent
    if probe != target and not probe.is_dir():
        return errno.ENOTDIR
    folder = probe if probe.is_dir() else probe.parent
    try:
        fs = os.statvfs(folder)
    except OSError as exc:
        return exc.errno
    if fs.f_flag & os.ST_RDONLY:
        return errno.EROFS
    if fs.f_bavail * fs.f_frsize < _NEARLY_FULL:
        return errno.ENOSPC
    if not os.access(folder, os.W_OK) or (probe.is_file() and not os.access(probe, os.W_OK)):
        return errno.EACCES
    return None
