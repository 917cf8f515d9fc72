"""One controller per project: the store-wide lease ``controller:<project>``.

Two controllers over one project would both start the same release and both retrain on the
same data. The lease is a row in the store (``store/leases.py``, the same mechanism `conveyor
gc` holds) rather than a file lock, so that it holds across machines sharing a database; it
expires unless renewed, and a holder on this machine whose process is gone gives it up at once,
so a killed controller is replaced without waiting out the lease.
"""

from __future__ import annotations

from conveyor.exceptions import ReleaseError, StoreBusy
from conveyor.store.leases import StoreLease

__all__ = ["ControllerBusy", "Lease"]


class ControllerBusy(ReleaseError):
    """Another controller holds this project's lease."""


class Lease(StoreLease):
    """The controller's lease: a :class:`StoreLease` whose refusal names the other controller.

    ``acquire()`` takes the lease or renews it if ours, and raises :class:`ControllerBusy`
    while another live controller holds it.
    """

    def _take(self) -> None:
        try:
            super()._take()
        except StoreBusy as exc:
            until = f" until {exc.until:%H:%M:%S} UTC unless it renews" if exc.until else ""
            raise ControllerBusy(
                f"Another controller ({exc.holder}) runs this project{until}; stop it first, "
                "or wait."
            ) from None
