"""The dashboard's reads that must stay fast at 100,000 runs and 1,000,000 events.

The actions (``actions/runs.py``) answer the CLI: the newest few rows, every column. The
dashboard pages through whole tables with filters, so its list pages are keyset queries here:
``ORDER BY`` an indexed key, ``WHERE key < :cursor``, ``LIMIT n + 1`` (the extra row says
whether a next page exists), and only the columns a page shows. Every value from a request is
a bound parameter; nothing here builds SQL text. Read-only: no function writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, exists, func, select

from conveyor.store import events as ev
from conveyor.store import models as m
from conveyor.store.metadata import Store, as_utc

__all__ = [
    "Page",
    "RunFilter",
    "EventFilter",
    "aliases",
    "alert_events",
    "rejections",
    "alert_states",
    "events_page",
    "latest_events",
    "metric_series",
    "releases_page",
    "run_row",
    "run_steps",
    "runs_page",
    "step_names",
    "traffic",
    "versions",
    "versions_of_run",
]

_RUNS = m.Run.__table__
_STEPS = m.StepRun.__table__
_EVENTS = m.Event.__table__
_VERSIONS = m.ModelVersion.__table__
_ALIASES = m.Alias.__table__
_RELEASES = m.Release.__table__
_TRAFFIC = m.Traffic.__table__
_METRICS = m.Metric.__table__


@dataclass(frozen=True)
class Page:
    """One page of rows, newest first, and the cursor of the next page (None: the last)."""

    rows: list[dict[str, Any]]
    next_cursor: str | None


@dataclass(frozen=True)
class RunFilter:
    """What the runs page was asked for; every field optional."""

    status: str | None = None
    step: str | None = None
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True)
class EventFilter:
    """What the audit log page was asked for; every field optional."""

    kind: str | None = None
    entity: str | None = None
    entity_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def _iso(value: datetime | None) -> str | None:
    value = as_utc(value)
    return value.isoformat(timespec="seconds") if value is not None else None


def _unindexed(column: Any) -> Any:
    """``column || ''``: the same value, which SQLite will not look up in the column's index.

    A page is the newest N rows by primary key. Given ``WHERE status = ?`` SQLite prefers the
    status index and then sorts every matching row (95,000 succeeded runs) to find the newest
    50; walking the primary key backwards and testing each row stops after about 50 / share.
    """
    return column.concat("")


def runs_page(
    store: Store, project: str, filters: RunFilter, *, cursor: str | None, limit: int
) -> Page:
    """Runs of ``project`` newest first (run ids sort by start time), one page of ``limit``.

    ``cursor`` is the id of the last run of the previous page. The step filter keeps runs that
    have that step (the ``(run_id, step)`` index answers each probe).
    """
    q = select(
        _RUNS.c.id,
        _RUNS.c.status,
        _RUNS.c.started_at,
        _RUNS.c.finished_at,
        _RUNS.c.git_commit,
        _RUNS.c.git_dirty,
    ).where(_unindexed(_RUNS.c.project) == project)
    if filters.status:
        q = q.where(_unindexed(_RUNS.c.status) == filters.status)
    # A run id begins with its UTC start time (``new_run_id``), so a day range is a range of
    # the primary key: walked in order, never sorted.
    if filters.since:
        q = q.where(_RUNS.c.id >= f"{filters.since:%Y%m%d}")
    if filters.until:
        q = q.where(_RUNS.c.id < f"{filters.until:%Y%m%d}")
    if filters.step:
        q = q.where(
            exists().where(and_(_STEPS.c.run_id == _RUNS.c.id, _STEPS.c.step == filters.step))
        )
    if cursor:
        q = q.where(_RUNS.c.id < cursor)
    q = q.order_by(_RUNS.c.id.desc()).limit(limit + 1)
    with store.engine.connect() as conn:
        found = conn.execute(q).all()
        more = len(found) > limit
        found = found[:limit]
        counts: dict[str, dict[str, int]] = {r.id: {} for r in found}
        if found:
            grouped = conn.execute(
                select(_STEPS.c.run_id, _STEPS.c.status, func.count())
                .where(_STEPS.c.run_id.in_(list(counts)))
                .group_by(_STEPS.c.run_id, _STEPS.c.status)
            )
            for run_id, status, n in grouped:
                counts[run_id][status] = int(n)
    rows = []
    for r in found:
        started, finished = as_utc(r.started_at), as_utc(r.finished_at)
        rows.append(
            {
                "run_id": r.id,
                "status": r.status,
                "started_at": _iso(started),
                "duration_s": (finished - started).total_seconds()
                if finished and started
                else None,
                "steps": counts[r.id],
                "git_commit": r.git_commit,
                "git_dirty": r.git_dirty,
            }
        )
    return Page(rows, found[-1].id if more else None)


def step_names(store: Store, run_ids: Sequence[str] = ()) -> list[str]:
    """The step names the runs filter offers: those of the newest runs (cheap, and current)."""
    with store.engine.connect() as conn:
        newest = select(_RUNS.c.id).order_by(_RUNS.c.id.desc()).limit(20).scalar_subquery()
        names = conn.execute(
            select(_STEPS.c.step).where(_STEPS.c.run_id.in_(newest)).distinct()
        ).scalars()
        return sorted(set(names))


def run_row(store: Store, run_id: str) -> dict[str, Any] | None:
    """One run's own columns, or None when no run has that id."""
    with store.engine.connect() as conn:
        row = conn.execute(select(_RUNS).where(_RUNS.c.id == run_id)).first()
    if row is None:
        return None
    return {
        "run_id": row.id,
        "project": row.project,
        "status": row.status,
        "started_at": _iso(row.started_at),
        "finished_at": _iso(row.finished_at),
        "host": row.host,
        "git_commit": row.git_commit,
        "git_dirty": row.git_dirty,
        "env_hash": row.env_hash,
        "error": row.error,
    }


def run_steps(store: Store, run_id: str) -> list[dict[str, Any]]:
    """The steps of a run with what each read: the ``inputs`` of its cache key name its
    upstream steps (``prepare.train``) and data sources (``data.rows``), which draws the DAG
    as the run saw it, not as conveyor.yaml says today."""
    with store.engine.connect() as conn:
        found = conn.execute(
            select(
                _STEPS.c.step,
                _STEPS.c.status,
                _STEPS.c.reason,
                _STEPS.c.duration_s,
                _STEPS.c.key_parts,
                _STEPS.c.outputs,
                _STEPS.c.error,
                _STEPS.c.log_digest,
            )
            .where(_STEPS.c.run_id == run_id)
            .order_by(_STEPS.c.id)
        ).all()
    steps = []
    for s in found:
        parts = s.key_parts or {}
        inputs = parts.get("inputs") or {}
        steps.append(
            {
                "step": s.step,
                "status": s.status,
                "reason": s.reason,
                "duration_s": s.duration_s,
                "inputs": sorted(inputs),
                "params": parts.get("params") or {},
                "outputs": {
                    name: {k: d[k] for k in ("format", "digest", "size") if k in d}
                    for name, d in (s.outputs or {}).items()
                    if isinstance(d, dict)
                },
                "error": s.error,
                "log_digest": s.log_digest,
            }
        )
    return steps


def metric_series(store: Store, run_id: str) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """Every metric a run logged, by step and key, as (index, value) pairs in index order."""
    series: dict[str, dict[str, list[tuple[int, float]]]] = {}
    with store.engine.connect() as conn:
        found = conn.execute(
            select(_METRICS.c.step, _METRICS.c.key, _METRICS.c.index, _METRICS.c.value)
            .where(_METRICS.c.run_id == run_id)
            .order_by(_METRICS.c.step, _METRICS.c.key, _METRICS.c.index, _METRICS.c.id)
        )
        for step, key, index, value in found:
            series.setdefault(step, {}).setdefault(key, []).append((int(index), float(value)))
    return series


LATE = timedelta(days=1)  # how late an event may be written after its own time and be found


def events_page(store: Store, filters: EventFilter, *, cursor: int | None, limit: int) -> Page:
    """Audit-log rows newest first by id; ``cursor`` is the last id of the previous page.

    With ``until``, walking ids down from the newest event to a day long past would read
    every event after it, and asking the ``at`` index for everything before it every event
    before: half the log for a day in its middle. Events are written in time order, give or
    take a writer's clock, so the walk starts at the first event stamped at or after
    ``until`` (one seek in the ``at`` index), and the few written after it yet stamped before
    ``until`` (a late clock) are looked for in the day before ``until`` through the ``at``
    index. An event written more than ``LATE`` after its own time is the only one a page
    filtered by ``until`` can miss.
    """
    q = select(_EVENTS)
    if filters.kind:
        q = q.where(_EVENTS.c.kind == filters.kind)
    if filters.entity:
        q = q.where(_EVENTS.c.entity == filters.entity)
    if filters.entity_id:
        q = q.where(_EVENTS.c.entity_id == filters.entity_id)
    if filters.since:
        q = q.where(_EVENTS.c.at >= filters.since)
    if filters.until:
        q = q.where(_EVENTS.c.at < filters.until)
    if cursor is not None:
        q = q.where(_EVENTS.c.id < cursor)
    q = q.order_by(_EVENTS.c.id.desc()).limit(limit + 1)
    until = filters.until
    with store.engine.connect() as conn:
        after = None
        if until is not None:
            after = conn.execute(
                select(_EVENTS.c.id).where(_EVENTS.c.at >= until).order_by(_EVENTS.c.at).limit(1)
            ).scalar()
        if until is None or after is None:  # no filter by time, or every event is before it
            found = list(conn.execute(q).all())
        else:
            found = list(conn.execute(q.where(_EVENTS.c.id < after)).all())
            late = conn.execute(  # id + 0: through the at index, not a walk of the ids
                q.where(_EVENTS.c.id + 0 > after, _EVENTS.c.at >= until - LATE)
            ).all()
            if late:
                found = sorted([*found, *late], key=lambda e: e.id, reverse=True)
    more = len(found) > limit
    rows = [_event(e) for e in found[:limit]]
    return Page(rows, str(found[limit - 1].id) if more else None)


def _event(e: Any) -> dict[str, Any]:
    return {
        "id": e.id,
        "at": _iso(e.at),
        "kind": e.kind,
        "entity": e.entity,
        "entity_id": e.entity_id,
        "actor": e.actor,
        "payload": e.payload or {},
    }


def latest_events(store: Store, kinds: Sequence[str], *, limit: int) -> list[dict[str, Any]]:
    """The newest events of these kinds (the ``kind`` index answers)."""
    with store.engine.connect() as conn:
        found = conn.execute(
            select(_EVENTS)
            .where(_EVENTS.c.kind.in_(list(kinds)))
            .order_by(_EVENTS.c.id.desc())
            .limit(limit)
        ).all()
    return [_event(e) for e in found]


def alert_states(store: Store) -> list[dict[str, Any]]:
    """The last fired-or-resolved event of every alert, newest first: those that are
    ``alert.fired`` fire now.

    The alerts are the few distinct ids of the ``alert`` entity, which the entity index lists
    without reading a row; each one's last fired or resolved event is then a short walk back
    along that index. (One ``GROUP BY`` over the alert events read every one of them from the
    table: 50 ms at a million events, on every overview and monitoring page.)
    """
    kinds = [ev.ALERT_FIRED, ev.ALERT_RESOLVED]
    found = []
    with store.engine.connect() as conn:
        alerts = conn.execute(
            select(_EVENTS.c.entity_id)
            .where(_EVENTS.c.entity == "alert")
            .group_by(_EVENTS.c.entity_id)
        ).scalars()
        for entity_id in list(alerts):
            last = conn.execute(
                select(_EVENTS)
                .where(
                    _EVENTS.c.entity == "alert",
                    _EVENTS.c.entity_id == entity_id,
                    _EVENTS.c.kind.in_(kinds),
                )
                .order_by(_EVENTS.c.id.desc())
                .limit(1)
            ).first()
            if last is not None:
                found.append(last)
    found.sort(key=lambda e: e.id, reverse=True)
    return [_event(e) for e in found]


def rejections(store: Store, run_id: str, since: datetime | None) -> list[dict[str, Any]]:
    """The candidates ``conveyor ci`` refused in this run, with their gates' verdicts.

    A refusal is an event on the model, its run id in the payload: the ``kind`` index finds
    the refusals written since the run started (a run's refusal is written before it ends),
    and the run id is matched here, on at most a hundred rows.
    """
    query = select(_EVENTS).where(_EVENTS.c.kind == ev.CANDIDATE_REJECTED)
    if since is not None:
        query = query.where(_EVENTS.c.at >= since)
    with store.engine.connect() as conn:
        found = conn.execute(query.order_by(_EVENTS.c.id).limit(100)).all()
    return [_event(e) for e in found if (e.payload or {}).get("run_id") == run_id]


def alert_events(store: Store, model: str, environment: str, *, limit: int) -> list[dict[str, Any]]:
    """The newest alert events (fired, resolved, pending) of one environment's rules.

    An alert's entity id is ``MODEL@ENVIRONMENT:RULE``, so the environment's rules are the ids
    from ``MODEL@ENVIRONMENT:`` up to (not including) ``MODEL@ENVIRONMENT;`` (the character
    after the colon): a range the entity index answers, and no pattern a name could bend.
    """
    prefix = f"{model}@{environment}"
    kinds = [ev.ALERT_FIRED, ev.ALERT_RESOLVED, ev.ALERT_PENDING]
    with store.engine.connect() as conn:
        found = conn.execute(
            select(_EVENTS)
            .where(
                _EVENTS.c.entity == "alert",
                _EVENTS.c.entity_id >= prefix + ":",
                _EVENTS.c.entity_id < prefix + ";",
                _EVENTS.c.kind.in_(kinds),
            )
            .order_by(_EVENTS.c.id.desc())
            .limit(limit)
        ).all()
    return [_event(e) for e in found]


def aliases(store: Store) -> list[dict[str, Any]]:
    """Every (model, environment) and the version it serves."""
    with store.engine.connect() as conn:
        found = conn.execute(select(_ALIASES).order_by(_ALIASES.c.model, _ALIASES.c.alias)).all()
    return [
        {
            "model": a.model,
            "environment": a.alias,
            "version": a.version,
            "since": _iso(a.updated_at),
        }
        for a in found
    ]


def traffic(store: Store) -> dict[tuple[str, str], dict[str, Any]]:
    """What each environment sends beside its alias (canary, shadow, warm), by (model, env)."""
    with store.engine.connect() as conn:
        found = conn.execute(select(_TRAFFIC)).all()
    return {
        (t.model, t.environment): {
            "mode": t.mode,
            "version": t.version,
            "weight": t.weight,
            "release_id": t.release_id,
        }
        for t in found
    }


def versions(
    store: Store, *, model: str | None, cursor: tuple[str, int] | None, limit: int
) -> Page:
    """Registered versions by model then newest version, the columns a list shows."""
    q = select(
        _VERSIONS.c.model,
        _VERSIONS.c.version,
        _VERSIONS.c.status,
        _VERSIONS.c.created_at,
        _VERSIONS.c.run_id,
        _VERSIONS.c.metrics,
    )
    if model:
        q = q.where(_VERSIONS.c.model == model)
    if cursor is not None:
        name, number = cursor
        q = q.where(
            (_VERSIONS.c.model > name)
            | and_(_VERSIONS.c.model == name, _VERSIONS.c.version < number)
        )
    q = q.order_by(_VERSIONS.c.model, _VERSIONS.c.version.desc()).limit(limit + 1)
    with store.engine.connect() as conn:
        found = conn.execute(q).all()
        more = len(found) > limit
        found = found[:limit]
        names = sorted({v.model for v in found})
        tags: dict[tuple[str, int], list[str]] = {}
        if names:
            for a in conn.execute(select(_ALIASES).where(_ALIASES.c.model.in_(names))):
                tags.setdefault((a.model, a.version), []).append(a.alias)
    rows = [
        {
            "model": v.model,
            "version": v.version,
            "status": v.status,
            "created_at": _iso(v.created_at),
            "run_id": v.run_id,
            "metrics": v.metrics or {},
            "aliases": sorted(tags.get((v.model, v.version), [])),
        }
        for v in found
    ]
    last = found[-1] if found else None
    return Page(rows, f"{last.model}:{last.version}" if more and last is not None else None)


def releases_page(
    store: Store,
    *,
    model: str | None = None,
    environment: str | None = None,
    version: int | None = None,
    state: str | None = None,
    cursor: str | None,
    limit: int,
) -> Page:
    """Releases newest first by id (ids start with their creation time)."""
    q = select(
        _RELEASES.c.id,
        _RELEASES.c.model,
        _RELEASES.c.environment,
        _RELEASES.c.from_version,
        _RELEASES.c.to_version,
        _RELEASES.c.strategy,
        _RELEASES.c.state,
        _RELEASES.c.step,
        _RELEASES.c.reason,
        _RELEASES.c.created_at,
        _RELEASES.c.finished_at,
    )
    if model:
        q = q.where(_RELEASES.c.model == model)
    if environment:
        q = q.where(_RELEASES.c.environment == environment)
    if version is not None:
        q = q.where(_RELEASES.c.to_version == version)
    if state:
        q = q.where(_unindexed(_RELEASES.c.state) == state)
    if cursor:
        q = q.where(_RELEASES.c.id < cursor)
    q = q.order_by(_RELEASES.c.id.desc()).limit(limit + 1)
    with store.engine.connect() as conn:
        found = conn.execute(q).all()
    more = len(found) > limit
    rows = [
        {
            "id": r.id,
            "model": r.model,
            "environment": r.environment,
            "from_version": r.from_version,
            "to_version": r.to_version,
            "strategy": r.strategy,
            "state": r.state,
            "step": r.step,
            "reason": r.reason,
            "created_at": _iso(r.created_at),
            "finished_at": _iso(r.finished_at),
        }
        for r in found[:limit]
    ]
    return Page(rows, found[limit - 1].id if more else None)


def versions_of_run(store: Store, run_id: str) -> list[dict[str, Any]]:
    """The versions a run registered (the ``run_id`` index answers)."""
    with store.engine.connect() as conn:
        found = conn.execute(
            select(_VERSIONS.c.model, _VERSIONS.c.version, _VERSIONS.c.status)
            .where(_VERSIONS.c.run_id == run_id)
            .order_by(_VERSIONS.c.model, _VERSIONS.c.version)
        ).all()
    return [{"model": v.model, "version": v.version, "status": v.status} for v in found]
