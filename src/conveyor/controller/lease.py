"""One controller per project: a named, expiring lock in the metadata store.

Two controllers over one project would both start the same release and both retrain on the
same data. The lease is a row in the store rather than a file lock so that it holds across
machines sharing a database; it expires unless renewed, and a holder on this machine whose
process is gone gives it up at once, so a killed controller is replaced without waiting out
the lease.
"""

from __future__ import annotations

import os
import socket
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy.exc import IntegrityError

from conveyor.exceptions import ReleaseError, StoreError
from conveyor.store import models as m
from conveyor.store.metadata import as_utc
from conveyor.store.records import utcnow

if TYPE_CHECKING:
    from conveyor.store.metadata import Store

__all__ = ["ControllerBusy", "Lease"]


class ControllerBusy(ReleaseError):
    """Another controller holds this project's lease."""


class Lease:
    """A named, expiring lock in the metadata store.

    Args:
        store: the open metadata store.
        name: the lease's name, ``controller:<project>`` for the controller.
        ttl: seconds the lease lasts unless renewed.
        holder: who holds it; ``<host>:<pid>`` by default, which lets a process on the same
            host see that a holder died.
    """

    def __init__(self, store: Store, name: str, *, ttl: float, holder: str | None = None) -> None:
        self.store = store
        self.name = name
        self.ttl = ttl
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}"

    def acquire(self) -> None:
        """Take the lease, or renew it if ours.

        Raises:
            ControllerBusy: someone else holds it and it has not expired.
        """
        now = utcnow()
        until = now + timedelta(seconds=self.ttl)
        try:
            with self.store.session() as s:
                row = s.get(m.Lease, self.name, with_for_update=True)
                if row is None:
                    s.add(m.Lease(name=self.name, holder=self.holder, expires_at=until))
                    return
                expires = as_utc(row.expires_at)
                assert expires is not None  # the column is NOT NULL
                if row.holder != self.holder and expires > now and not _dead(row.holder):
                    raise ControllerBusy(
                        f"Another controller ({row.holder}) runs this project until "
                        f"{expires:%H:%M:%S} UTC unless it renews; stop it first, or wait."
                    )
                row.holder, row.expires_at = self.holder, until
        except StoreError as exc:
            if isinstance(exc.__cause__, IntegrityError):  # two took a free lease at once
                raise ControllerBusy("Another controller took the lease just now.") from None
            raise

    def release(self) -> None:
        """Give the lease up, if it is still ours."""
        with self.store.session() as s:
            row = s.get(m.Lease, self.name)
            if row is not None and row.holder == self.holder:
                s.delete(row)


def _dead(holder: str) -> bool:
    """Whether a lease holder is a process of this machine that no longer exists (killed)."""
    host, _, pid = holder.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
