"""Store-wide leases: a named, expiring lock held as a row of the ``leases`` table.

A file lock holds only within one workspace's ``.conveyor/``; two workspaces (or two machines)
sharing one metadata database share only its tables. So what must run alone across everything
that shares the store (``conveyor gc``, which deletes objects every workspace may use) takes a
lease here. A lease expires unless renewed, and one whose holder is a dead process of this
machine is taken over at once, so a killed holder never blocks the store for long.

The controller's lease (``controller/lease.py``) is this class with its own refusal message.
"""

from __future__ import annotations

import os
import socket
import time
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy.exc import IntegrityError

from conveyor.exceptions import StoreBusy, StoreError
from conveyor.store import models as m
from conveyor.store.metadata import as_utc
from conveyor.store.records import utcnow

if TYPE_CHECKING:
    from conveyor.store.metadata import Store

__all__ = ["GC_LEASE", "StoreLease"]

#: The lease `conveyor gc` holds, store-wide, while it decides and deletes.
GC_LEASE = "store:gc"


class StoreLease:
    """A named, expiring lock in the metadata store, for use as a context manager.

    Args:
        store: the open metadata store.
        name: the lease's name (:data:`GC_LEASE` for garbage collection).
        ttl: seconds the lease lasts; another host takes it over once it has expired.
        holder: who holds it; ``<host>:<pid>`` by default, which lets a process of the same
            host see that a holder died.
    """

    def __init__(self, store: Store, name: str, *, ttl: float, holder: str | None = None) -> None:
        self.store = store
        self.name = name
        self.ttl = ttl
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}"

    def acquire(self, *, wait: bool = False, poll_s: float = 0.5) -> StoreLease:
        """Take the lease (or renew it, if ours).

        Args:
            wait: poll until the holder lets go instead of refusing.
            poll_s: seconds between two tries while waiting.

        Raises:
            StoreBusy: another live holder has it and ``wait`` is false; ``.holder`` and
                ``.until`` on the error say who and until when.
        """
        while True:
            try:
                self._take()
                return self
            except StoreBusy:
                if not wait:
                    raise
            time.sleep(poll_s)

    def _take(self) -> None:
        now = utcnow()
        until = now + timedelta(seconds=self.ttl)
        try:
            with self.store.session() as s:
                row = s.get(m.Lease, self.name, with_for_update=True)
                if row is None:
                    s.add(m.Lease(name=self.name, holder=self.holder, expires_at=until))
                    return
                expires = as_utc(row.expires_at)
                if expires is None:  # the column is NOT NULL; a hand-edited row is free
                    expires = now
                if row.holder != self.holder and expires > now and not _dead(row.holder):
                    raise _busy(self.name, row.holder, expires)
                row.holder, row.expires_at = self.holder, until
        except StoreError as exc:
            if isinstance(exc.__cause__, IntegrityError):  # two took a free lease at once
                raise _busy(self.name, "another process", until) from None
            raise

    def release(self) -> None:
        """Give the lease up, if it is still ours."""
        with self.store.session() as s:
            row = s.get(m.Lease, self.name)
            if row is not None and row.holder == self.holder:
                s.delete(row)

    def __enter__(self) -> StoreLease:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def _busy(name: str, holder: str, until: datetime) -> StoreBusy:
    return StoreBusy(
        f"The store-wide lease {name!r} is held by {holder} until {until:%Y-%m-%d %H:%M:%S} "
        "UTC unless released; wait for it to finish.",
        holder=holder,
        until=until,
    )


def _dead(holder: str) -> bool:
    """Whether a holder is a process of this machine that no longer exists (it was killed)."""
    host, _, pid = holder.rpartition(":")
    if host != socket.gethostname() or not (pid.isascii() and pid.isdigit()):
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
