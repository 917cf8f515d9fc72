"""`conveyor watch`: the reconcile loop that keeps releases moving without a human.

One controller per project at a time: it holds a lease in the store (renewed every turn,
taken over by another controller only after it expired), so two `conveyor watch` processes
never act twice. Everything it does goes through the same functions the CLI calls
(``Releases.step()``), and everything it changes is an event; its own state is all in the
store, so it can be killed and restarted at any moment.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError

from conveyor.exceptions import ReleaseError, StoreError
from conveyor.store import models as m
from conveyor.store.records import utcnow

__all__ = ["ControllerBusy", "Lease", "run_controller"]

log = logging.getLogger("conveyor.controller")


class ControllerBusy(ReleaseError):
    """Another controller holds this project's lease."""


class Lease:
    """A named, expiring lock in the metadata store."""

    def __init__(self, store: Any, name: str, *, ttl: float, holder: str | None = None) -> None:
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
                expires = (
                    row.expires_at
                    if row.expires_at.tzinfo
                    else row.expires_at.replace(tzinfo=now.tzinfo)
                )
                if row.holder != self.holder and expires > now:
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
        with self.store.session() as s:
            row = s.get(m.Lease, self.name)
            if row is not None and row.holder == self.holder:
                s.delete(row)


def run_controller(
    config: Any,
    *,
    checks: Any = None,
    interval: float = 1.0,
    once: bool = False,
    stop: threading.Event | None = None,
    report: Callable[[dict], None] | None = None,
) -> int:
    """Advance releases every ``interval`` seconds until stopped; returns the turns run.

    Raises:
        ControllerBusy: another controller runs this project.
    """
    from conveyor.catalog import open_registry
    from conveyor.release.releases import Releases

    stop = stop or threading.Event()
    turns = 0
    with open_registry(config) as registry:
        lease = Lease(registry.store, f"controller:{config.project}", ttl=max(10.0, 5 * interval))
        lease.acquire()
        releases = Releases(config, registry, checks=checks)
        try:
            while True:
                lease.acquire()  # renew; raises if someone took it over meanwhile
                try:
                    for outcome in releases.step():
                        if report is not None and outcome.get("action") != "wait":
                            report(outcome)
                except StoreError as exc:  # the store hiccuped: try again next turn
                    log.warning("controller turn failed: %s", exc)
                turns += 1
                if once or stop.wait(interval):
                    return turns
        finally:
            lease.release()
