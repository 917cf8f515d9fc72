"""Releases as read from the store: :class:`ReleaseView`, and :class:`PlainReader`, which reads
them with ``sqlite3``.

Kept apart from ``releases.py`` (the state machine, with SQLAlchemy, the deploy settings and
the live analysis) so that `conveyor releases` and `release show` can answer without importing
any of those: SQLAlchemy and NumPy alone take longer to import than the 0.2 s such a read has.
"""

from __future__ import annotations

import builtins
import json
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from conveyor.exceptions import ReleaseError

__all__ = ["ACTIVE", "PlainReader", "ReleaseView"]

ACTIVE = ("running", "paused")


@dataclass(frozen=True)
class ReleaseView:
    """A release as read from the store."""

    id: str
    model: str
    environment: str
    from_version: int | None
    to_version: int
    strategy: str
    state: str
    step: int
    step_started_at: datetime
    plan: dict
    verdicts: list
    reason: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    @property
    def weight(self) -> float:
        """The candidate's current share of requests, in percent."""
        if self.state == "promoted":
            return 100.0
        if not self.active:
            return 0.0
        from conveyor.release.strategies import strategy_for

        return strategy_for(self.strategy).weight(self)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "model": self.model,
            "environment": self.environment,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "strategy": self.strategy,
            "state": self.state,
            "step": self.step,
            "weight": self.weight,
            "step_started_at": self.step_started_at.isoformat(),
            "reason": self.reason,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "last_verdict": self.verdicts[-1] if self.verdicts else None,
        }


_COLUMNS = (
    "id, model, environment, from_version, to_version, strategy, state, step, step_started_at, "
    "plan, verdicts, reason, created_at, updated_at, finished_at"
)


class PlainReader:
    """``Releases.get``, ``list`` and ``timeline`` over a read-only ``sqlite3`` connection to a
    store at head: the same releases, in the same order, with the same errors. A
    ``sqlite3.Error`` is let through for the caller to retry through ``Releases``."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def get(self, release_id: str) -> ReleaseView:
        """Raises: ReleaseError: no release has that id."""
        row = self.conn.execute(
            f"SELECT {_COLUMNS} FROM releases WHERE id = ?", (release_id,)
        ).fetchone()
        if row is None:
            raise ReleaseError(f"No release {release_id!r}; `conveyor releases` lists them.")
        return _view(row)

    def list(self, *, model: str | None = None, limit: int = 50) -> list[ReleaseView]:
        where, args = (" WHERE model = ?", [model]) if model else ("", [])
        rows = self.conn.execute(
            f"SELECT {_COLUMNS} FROM releases{where} ORDER BY created_at DESC LIMIT ?",
            (*args, limit),
        ).fetchall()
        return [_view(row) for row in rows]

    def timeline(self, release_id: str) -> builtins.list[dict[str, Any]]:
        """The release's events, oldest first: at (as the store hands it back), kind, payload.

        Raises:
            ReleaseError: no release has that id.
        """
        self.get(release_id)
        rows = self.conn.execute(
            "SELECT at, kind, payload FROM events WHERE entity = 'release' AND entity_id = ? "
            "ORDER BY id DESC LIMIT 10000",
            (release_id,),
        ).fetchall()
        return [
            {
                # SQLAlchemy hands SQLite's times back naive; the timeline shows them as it does
                "at": datetime.fromisoformat(at).isoformat(),
                "kind": kind,
                "payload": (json.loads(payload) if payload is not None else None) or {},
            }
            for at, kind, payload in reversed(rows)
        ]


def _utc(text: str | None) -> Any:
    if text is None:
        return None
    value = datetime.fromisoformat(text)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _view(row: tuple[Any, ...]) -> ReleaseView:
    (id_, model, env, from_v, to_v, strategy, state, step, step_at, plan, verdicts, reason,
     created, updated, finished) = row  # fmt: skip
    return ReleaseView(
        id=id_,
        model=model,
        environment=env,
        from_version=from_v,
        to_version=to_v,
        strategy=strategy,
        state=state,
        step=step,
        step_started_at=_utc(step_at),
        plan=json.loads(plan),
        verdicts=list((json.loads(verdicts) if verdicts is not None else None) or []),
        reason=reason,
        created_at=_utc(created),
        updated_at=_utc(updated),
        finished_at=_utc(finished),
    )
