"""What a dashboard request can do wrong, each with the HTTP status its page answers with."""

from __future__ import annotations

from conveyor.exceptions import ConveyorError

__all__ = ["BadRequest", "DashboardError", "Forbidden", "NotFound", "Unauthorized"]


class DashboardError(ConveyorError):
    """A request the dashboard refuses; ``status`` is the HTTP status of its error page."""

    status = 400


class BadRequest(DashboardError):
    """A query parameter or form field that is unknown, repeated or out of range."""

    status = 400


class Unauthorized(DashboardError):
    """An act asked for without the dashboard's token (or on a dashboard started without one)."""

    status = 401


class Forbidden(DashboardError):
    """A form posted from another site (its Origin is not this dashboard)."""

    status = 403


class NotFound(DashboardError):
    """A run, version, release or environment that the store does not have."""

    status = 404
