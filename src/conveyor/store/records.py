"""Small helpers shared by the SQLAlchemy store and the SQLAlchemy-free fast path.

Kept free of heavy imports: a no-op `conveyor run` must finish in well under 0.15 s.
"""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime

#: The newest Alembic revision; the store skips importing Alembic when the database is at it.
HEAD_REVISION = "0005"


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_run_id(now: datetime | None = None) -> str:
    """Sortable, readable and unique: ``20261122-230455-3f9a1c``."""
    now = now or utcnow()
    return f"{now:%Y%m%d-%H%M%S}-{os.urandom(3).hex()}"


def actor() -> str:
    """Who did it: the OS user at the host, so the audit log says who moved what."""
    try:
        user = os.getlogin()
    except OSError:
        user = os.environ.get("USER") or str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def sqlite_timestamp(value: datetime) -> str:
    """The text form SQLAlchemy's SQLite dialect stores a DateTime in (UTC, no offset)."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
