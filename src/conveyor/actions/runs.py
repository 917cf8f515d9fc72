"""Read-side views of the store for the CLI and the dashboard: runs, one run, logs, events."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from conveyor.exceptions import ConveyorError


def _iso(value: Any) -> str | None:
    from conveyor.store.metadata import as_utc

    stamp = as_utc(value) if value else None
    return stamp.isoformat(timespec="seconds") if stamp else None


def list_runs(config: Any, *, limit: int = 20) -> list[dict]:
    """The newest runs of this project with a count of steps by status."""
    from conveyor.store.stores import open_stores

    with open_stores(config) as stores:
        store = stores.metadata
        rows = []
        for run in store.runs(limit=limit, project=config.project):
            steps = store.step_runs(run.id)
            counts: dict[str, int] = {}
            for step in steps:
                counts[step.status] = counts.get(step.status, 0) + 1
            duration = (
                (run.finished_at - run.started_at).total_seconds() if run.finished_at else None
            )
            rows.append(
                {
                    "run_id": run.id,
                    "status": run.status,
                    "started_at": _iso(run.started_at),
                    "duration_s": duration,
                    "steps": counts,
                    "git_commit": run.git_commit,
                    "git_dirty": run.git_dirty,
                }
            )
        return rows


def describe_run(config: Any, run_id: str) -> dict:
    """Everything recorded about one run."""
    from conveyor.store.stores import open_stores

    with open_stores(config) as stores:
        store = stores.metadata
        run = store.run(run_id)
        metrics: dict[str, dict[str, Any]] = {}
        for metric in store.metrics(run.id):
            series = metrics.setdefault(metric.step, {})
            if metric.key in series:
                previous = series[metric.key]
                series[metric.key] = {"last": metric.value, "count": _count(previous) + 1}
            else:
                series[metric.key] = metric.value
        steps = store.step_runs(run.id)
        # A cached step did not run, so its metrics are those of the run that produced it.
        cached = store.cached([s.cache_key for s in steps if s.status == "cached"])
        for step in steps:
            hit = cached.get(step.cache_key) if step.status == "cached" else None
            if hit is not None and hit.metrics and step.step not in metrics:
                metrics[step.step] = dict(hit.metrics)
        params: dict[str, dict[str, Any]] = {}
        for param in store.params(run.id):
            params.setdefault(param.step, {})[param.key] = json.loads(param.value)
        return {
            "run_id": run.id,
            "project": run.project,
            "status": run.status,
            "started_at": _iso(run.started_at),
            "finished_at": _iso(run.finished_at),
            "host": run.host,
            "workspace": run.workspace,
            "git_commit": run.git_commit,
            "git_dirty": run.git_dirty,
            "env_hash": run.env_hash,
            "error": run.error,
            "steps": [
                {
                    "step": s.step,
                    "status": s.status,
                    "reason": s.reason,
                    "duration_s": s.duration_s,
                    "cache_key": s.cache_key,
                    "outputs": {
                        name: {k: d[k] for k in ("format", "digest", "size") if k in d}
                        for name, d in (s.outputs or {}).items()
                    },
                    "error": s.error,
                    "traceback": s.traceback,
                    "log_digest": s.log_digest,
                }
                for s in steps
            ],
            "metrics": metrics,
            "params": params,
            "artifacts": [
                {"step": a.step, "name": a.name, "digest": a.digest, "size": a.size}
                for a in store.logged_artifacts(run.id)
            ],
            "snapshots": [
                {
                    "source": snap.source,
                    "content_hash": snap.content_hash,
                    "files": len(snap.files or []),
                    "row_count": snap.row_count,
                    "columns": len(snap.schema or {}),
                }
                for snap in store.run_snapshots(run.id)
            ],
        }


def _count(previous: Any) -> int:
    return previous["count"] if isinstance(previous, dict) else 1


def step_log(config: Any, run_id: str, step: str) -> str:
    """The captured stdout/stderr of one step of a run, from the artifact store."""
    from conveyor.store.stores import open_stores

    with open_stores(config) as stores:
        run = stores.metadata.run(run_id)
        rows = {s.step: s for s in stores.metadata.step_runs(run.id)}
        if step not in rows:
            raise ConveyorError(
                f"Run {run.id} has no step {step!r}; its steps: {', '.join(rows) or 'none'}."
            )
        digest = rows[step].log_digest
        if not digest:
            return f"(step {step!r} of run {run.id} has no log: it was {rows[step].status})\n"
        return stores.artifacts.read_bytes(digest).decode(errors="replace")


def list_events(config: Any, *, limit: int = 50) -> list[dict]:
    from conveyor.store.stores import open_stores

    with open_stores(config) as stores:
        store = stores.metadata
        return [
            {
                "id": e.id,
                "at": _iso(e.at),
                "kind": e.kind,
                "entity": e.entity,
                "entity_id": e.entity_id,
                "actor": e.actor,
                "payload": e.payload,
            }
            for e in store.events(limit=limit)
        ]


#: How long an unreferenced object is kept: longer than any run takes, since a run in progress
#: (in any workspace sharing the store) records what it stored only when each step ends.
GC_GRACE_HOURS = 24.0

#: The gc lease outlives any collection; one whose holder died on this host is taken at once,
#: and a holder killed on another host blocks collection until it expires.
_GC_LEASE_TTL_S = 6 * 3600.0


def collect_garbage(
    config: Any,
    *,
    dry_run: bool = False,
    runs_older_than_days: float | None = None,
    wait_for_lock: bool = False,
    grace_hours: float = GC_GRACE_HOURS,
) -> dict:
    """Remove unreferenced artifacts older than the grace period.

    Holds this workspace's run lock (no run here writes meanwhile) and the store-wide gc lease
    (no other workspace collects at the same time). Runs of other workspaces sharing the store
    may be writing: what they stored and have not yet recorded is younger than the grace
    period, so it stays.

    Args:
        config: the project.
        dry_run: report what would go, and change nothing.
        runs_older_than_days: first delete this project's runs that started longer ago
            (never the newest), so that what only they referred to is freed too.
        wait_for_lock: queue behind a run in progress, or a gc in another workspace, instead
            of refusing, as `run --wait`.
        grace_hours: keep unreferenced objects stored or re-used less than this many hours
            ago; 0 removes them at once (safe only when nothing else uses the store).

    Raises:
        ProjectLocked: a run holds this workspace's lock (and ``wait_for_lock`` is false).
        ProjectUnwritable: the run lock cannot be written (a full disk, a read-only mount).
        StoreBusy: a gc in another workspace holds the store (and ``wait_for_lock`` is false).
    """
    from datetime import timedelta

    from conveyor.exceptions import StoreBusy
    from conveyor.store.leases import GC_LEASE, StoreLease
    from conveyor.store.records import utcnow
    from conveyor.store.stores import open_stores

    if grace_hours < 0:
        raise ConveyorError(f"The gc grace period must be 0 hours or more, not {grace_hours:g}.")
    with _run_lock(Path(config.root), wait=wait_for_lock), open_stores(config) as stores:
        store = stores.metadata
        lease = StoreLease(store, GC_LEASE, ttl=_GC_LEASE_TTL_S)
        try:
            lease.acquire(wait=wait_for_lock)
        except StoreBusy as exc:
            raise StoreBusy(
                f"Another 'conveyor gc' is collecting garbage in this store ({exc.holder}). "
                "Wait for it to finish, or pass --wait to queue behind it.",
                holder=exc.holder,
                until=exc.until,
            ) from None
        try:
            pruned: list[str] = []
            if runs_older_than_days is not None:
                cutoff = utcnow() - timedelta(days=runs_older_than_days)
                pruned = store.prunable_runs(config.project, cutoff)
            if dry_run:
                keep = store.referenced_digests(exclude_runs=pruned)
            else:
                store.delete_runs(pruned)
                keep = store.referenced_digests()
            report = stores.artifacts.gc(keep, dry_run=dry_run, grace_s=grace_hours * 3600.0)
        finally:
            lease.release()
    return {
        "runs_removed": pruned,
        "removed": report.removed,
        "freed_bytes": report.freed_bytes,
        "kept": report.kept,
        "kept_young": report.kept_young,
        "tmp_removed": report.tmp_removed,
        "dry_run": dry_run,
    }


@contextmanager
def _run_lock(root: Path, *, wait: bool) -> Iterator[None]:
    """The project's run lock for the block: no run writes while garbage is collected.

    Raises:
        ProjectUnwritable: the lock file cannot be created or written.
    """
    from conveyor.exceptions import ProjectUnwritable
    from conveyor.pipeline.lock import RunLock
    from conveyor.project import Paths
    from conveyor.store.disk import explain

    path = Paths(root).run_lock
    try:
        lock = RunLock(path).acquire(wait=wait)
    except OSError as exc:
        raise ProjectUnwritable(
            f"Cannot take the run lock {path}: " + explain(exc.errno, path, exc.strerror or "")
        ) from exc
    try:
        yield
    finally:
        lock.release()
