"""Read-side views of the store for the CLI and the dashboard: runs, one run, logs, events.

`conveyor runs`, `show` and `events` must answer at once, and SQLAlchemy alone takes longer to
import than that budget. So when the store is a SQLite file already at the newest revision,
these views read it with plain ``sqlite3``, read-only; anything else (another database, a file
to create or migrate, any SQLite error) goes through the full store, which also reports what is
wrong. Both give the same rows. ``quick_project`` likewise spares pydantic: the fast path's
witness records the validated config's project and database, and holds while conveyor.yaml and
the ``CONVEYOR_*`` variables are unchanged.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.exceptions import ConveyorError, RunNotFound

if TYPE_CHECKING:
    from conveyor.config import ProjectConfig


def _iso(value: Any) -> str | None:
    if not value:
        return None
    if isinstance(value, str):  # sqlite3 hands back SQLAlchemy's text form
        value = datetime.fromisoformat(value)
    stamp = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return stamp.isoformat(timespec="seconds")


@dataclass(frozen=True)
class QuickModel:
    """``model:`` of conveyor.yaml as far as the read views need it: its name."""

    name: str


@dataclass(frozen=True)
class QuickProject:
    """What the read views need of a project, taken from the fast path's witness."""

    root: Path
    project: str
    db: str
    artifacts: str
    model: QuickModel | None
    #: False when the witness predates recording the model: ``model`` is then unknown
    model_known: bool = True

    def store_url(self) -> str:
        return f"sqlite:///{self.db}"

    def artifacts_url(self) -> str:
        return self.artifacts


def quick_project(root: Path) -> QuickProject | None:
    """The project's name and SQLite file as last validated, or None: load conveyor.yaml.

    Trusted only while conveyor.yaml keeps the stamp (size, mtime, inode) it had when a
    successful run wrote the witness, with the same ``CONVEYOR_*`` variables, and was not
    modified within the racy margin of that moment: then the config validates to the same
    project and store URL.
    """
    if os.environ.get("CONVEYOR_NO_FASTPATH"):
        return None
    from conveyor.pipeline import fastpath
    from conveyor.project import CONFIG_FILE, Paths

    paths = Paths(root)
    if not paths.state_db.exists():
        return None
    from conveyor.data.state import StateDB

    with StateDB(paths.state_db) as state:
        raw = state.get(fastpath.KEY)
    if not raw:
        return None
    try:
        witness = json.loads(raw)
        config_file = str(root / CONFIG_FILE)
        stamp = witness["files"][config_file]
        if (
            witness.get("version") != fastpath.VERSION
            or witness["root"] != str(root)
            or witness["env_vars"] != {k: os.environ.get(k) for k in fastpath.ENV_VARS}
            or stamp[1] >= witness["written_ns"] - fastpath.RACY_NS
        ):
            return None
        st = os.stat(config_file)
        if [st.st_size, st.st_mtime_ns, st.st_ino] != stamp:
            return None
        model = witness.get("model")
        return QuickProject(
            root,
            str(witness["project"]),
            str(witness["db"]),
            str(witness["artifacts"]),
            QuickModel(str(model)) if model is not None else None,
            model_known="model" in witness,
        )
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None


def read_project(project: Path | None, *, need_model: bool = False) -> Any:
    """The project for a read command: its witness when it holds, else the loaded config.

    Args:
        project: the project folder (default: found upwards from here).
        need_model: the command reads ``model.name``: load the config unless the witness
            recorded it.

    Raises:
        ProjectError: no conveyor.yaml there or above.
        ConfigError: conveyor.yaml cannot be used as written.
    """
    from conveyor.project import CONFIG_FILE, find_root

    root = find_root(project)
    quick = quick_project(root)
    if quick is not None and (quick.model_known or not need_model):
        return quick
    from conveyor.config import load_config

    return load_config(root / CONFIG_FILE)


@contextmanager
def plain_store(config: ProjectConfig | QuickProject) -> Iterator[sqlite3.Connection | None]:
    """A read-only sqlite3 connection to the store when it is a SQLite file at head, else None."""
    from conveyor.store.records import HEAD_REVISION

    url = config.store_url()
    path = url[len("sqlite:///") :].split("?", 1)[0] if url.startswith("sqlite:///") else ""
    conn = None
    try:
        if path and path != ":memory:" and os.path.getsize(path) > 0:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
            if row is None or row[0] != HEAD_REVISION:
                conn.close()
                conn = None
    except (OSError, sqlite3.Error):
        if conn is not None:
            conn.close()
        conn = None
    try:
        yield conn
    finally:
        if conn is not None:
            conn.close()


def full_config(config: ProjectConfig | QuickProject) -> Any:
    """The loaded config for the full store, when the read started from the witness."""
    if not isinstance(config, QuickProject):
        return config
    from conveyor.config import load_config
    from conveyor.project import CONFIG_FILE

    return load_config(config.root / CONFIG_FILE)


def _json(text: str | None) -> Any:
    return json.loads(text) if text is not None else None


def list_runs(config: ProjectConfig, *, limit: int = 20) -> list[dict]:
    """The newest runs of this project with a count of steps by status."""
    with plain_store(config) as conn:
        if conn is not None:
            try:
                return _plain_runs(conn, config.project, limit)
            except sqlite3.Error:
                pass  # the full store says what is wrong
    config = full_config(config)
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


def describe_run(config: ProjectConfig, run_id: str) -> dict:
    """Everything recorded about one run.

    Raises:
        RunNotFound: no run, or more than one, matches ``run_id``.
    """
    with plain_store(config) as conn:
        if conn is not None:
            try:
                return _plain_describe(conn, run_id)
            except sqlite3.Error:
                pass  # the full store says what is wrong
    config = full_config(config)
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


_RUN_COLUMNS = (
    "id, project, status, started_at, finished_at, host, workspace, git_commit, git_dirty, "
    "env_hash, error"
)


def _plain_runs(conn: sqlite3.Connection, project: str, limit: int) -> list[dict]:
    """``list_runs`` in plain SQL: the same rows, in the same order, with the same counts."""
    runs = conn.execute(
        "SELECT id, status, started_at, finished_at, git_commit, git_dirty FROM runs "
        "WHERE project = ? ORDER BY started_at DESC, id DESC LIMIT ?",
        (project, limit),
    ).fetchall()
    counts: dict[str, dict[str, int]] = {run[0]: {} for run in runs}
    if runs:
        marks = ",".join("?" * len(runs))
        for run_id, status in conn.execute(
            f"SELECT run_id, status FROM step_runs WHERE run_id IN ({marks}) ORDER BY id",
            list(counts),
        ):
            counts[run_id][status] = counts[run_id].get(status, 0) + 1
    rows = []
    for run_id, status, started, finished, commit, dirty in runs:
        duration = (
            (datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds()
            if finished
            else None
        )
        rows.append(
            {
                "run_id": run_id,
                "status": status,
                "started_at": _iso(started),
                "duration_s": duration,
                "steps": counts[run_id],
                "git_commit": commit,
                "git_dirty": None if dirty is None else bool(dirty),
            }
        )
    return rows


def _plain_run(conn: sqlite3.Connection, run_id: str) -> tuple:
    """``Store.run`` in plain SQL: by id or unique prefix, ``latest`` or ``-1`` the newest."""
    if run_id in ("latest", "-1"):
        found = conn.execute(
            f"SELECT {_RUN_COLUMNS} FROM runs ORDER BY started_at DESC LIMIT 1"
        ).fetchall()
    elif run_id and run_id.isascii() and not any(c in run_id for c in "%_"):
        # The store matches with LIKE (ASCII case-insensitive); run ids are lower case, so a
        # range on the primary key finds the same runs without reading them all.
        low = run_id.lower()
        found = conn.execute(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE id >= ? AND id < ? LIMIT 2",
            (low, low + "\uffff"),
        ).fetchall()
    else:
        found = conn.execute(
            f"SELECT {_RUN_COLUMNS} FROM runs WHERE id LIKE ? || '%' LIMIT 2", (run_id,)
        ).fetchall()
    if len(found) == 1:
        return found[0]
    if not found:
        raise RunNotFound(f"No run matches {run_id!r}. Run 'conveyor runs' to list them.")
    raise RunNotFound(
        f"Run id prefix {run_id!r} is ambiguous; give more characters (see 'conveyor runs')."
    )


def _plain_describe(conn: sqlite3.Connection, run_id: str) -> dict:
    """``describe_run`` in plain SQL."""
    (rid, project, status, started, finished, host, workspace, commit, dirty, env_hash, error) = (
        _plain_run(conn, run_id)
    )
    metrics: dict[str, dict[str, Any]] = {}
    for step, key, value in conn.execute(
        "SELECT step, key, value FROM metrics WHERE run_id = ? ORDER BY id", (rid,)
    ):
        series = metrics.setdefault(step, {})
        if key in series:
            series[key] = {"last": value, "count": _count(series[key]) + 1}
        else:
            series[key] = value
    steps = conn.execute(
        "SELECT step, status, reason, duration_s, cache_key, outputs, error, traceback, "
        "log_digest FROM step_runs WHERE run_id = ? ORDER BY id",
        (rid,),
    ).fetchall()
    keys = sorted({s[4] for s in steps if s[1] == "cached"})
    cached: dict[str, Any] = {}
    if keys:
        marks = ",".join("?" * len(keys))
        cached = dict(
            conn.execute(
                f"SELECT cache_key, metrics FROM step_cache WHERE cache_key IN ({marks})", keys
            ).fetchall()
        )
    for step in steps:
        hit = _json(cached.get(step[4])) if step[1] == "cached" else None
        if hit and step[0] not in metrics:
            metrics[step[0]] = dict(hit)
    params: dict[str, dict[str, Any]] = {}
    for step, key, value in conn.execute(
        "SELECT step, key, value FROM params WHERE run_id = ? ORDER BY step, key", (rid,)
    ):
        params.setdefault(step, {})[key] = json.loads(value)
    artifacts = conn.execute(
        "SELECT step, name, digest, size FROM logged_artifacts WHERE run_id = ? ORDER BY id",
        (rid,),
    ).fetchall()
    snapshots = conn.execute(
        "SELECT snapshots.source, snapshots.content_hash, snapshots.files, "
        "snapshots.row_count, snapshots.schema FROM snapshots JOIN run_snapshots "
        "ON run_snapshots.snapshot_id = snapshots.id WHERE run_snapshots.run_id = ?",
        (rid,),
    ).fetchall()
    return {
        "run_id": rid,
        "project": project,
        "status": status,
        "started_at": _iso(started),
        "finished_at": _iso(finished),
        "host": host,
        "workspace": workspace,
        "git_commit": commit,
        "git_dirty": None if dirty is None else bool(dirty),
        "env_hash": env_hash,
        "error": error,
        "steps": [
            {
                "step": step,
                "status": status,
                "reason": reason,
                "duration_s": duration,
                "cache_key": key,
                "outputs": {
                    name: {k: d[k] for k in ("format", "digest", "size") if k in d}
                    for name, d in (_json(outputs) or {}).items()
                },
                "error": error,
                "traceback": traceback,
                "log_digest": log_digest,
            }
            for (
                step,
                status,
                reason,
                duration,
                key,
                outputs,
                error,
                traceback,
                log_digest,
            ) in steps
        ],
        "metrics": metrics,
        "params": params,
        "artifacts": [
            {"step": step, "name": name, "digest": digest, "size": size}
            for step, name, digest, size in artifacts
        ],
        "snapshots": [
            {
                "source": source,
                "content_hash": content_hash,
                "files": len(_json(files) or []),
                "row_count": row_count,
                "columns": len(_json(schema) or {}),
            }
            for source, content_hash, files, row_count, schema in snapshots
        ],
    }


def _plain_events(conn: sqlite3.Connection, limit: int, entity_id: str | None) -> list[dict]:
    """``list_events`` in plain SQL: the newest ``limit`` matching events, oldest first."""
    where, args = (" WHERE entity_id = ?", [entity_id]) if entity_id else ("", [])
    rows = conn.execute(
        "SELECT id, at, kind, entity, entity_id, actor, payload FROM events"
        f"{where} ORDER BY id DESC LIMIT ?",
        (*args, limit),
    ).fetchall()
    return [
        {
            "id": id_,
            "at": _iso(at),
            "kind": kind,
            "entity": entity,
            "entity_id": entity_id_,
            "actor": actor,
            "payload": _json(payload),
        }
        for id_, at, kind, entity, entity_id_, actor, payload in reversed(rows)
    ]


def _count(previous: Any) -> int:
    return previous["count"] if isinstance(previous, dict) else 1


def step_log(config: ProjectConfig, run_id: str, step: str) -> str:
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


def list_events(
    config: ProjectConfig, *, limit: int = 50, entity_id: str | None = None
) -> list[dict]:
    """The newest ``limit`` events, oldest first; only those about ``entity_id`` (a run id,
    release id, ...) if given."""
    with plain_store(config) as conn:
        if conn is not None:
            try:
                return _plain_events(conn, limit, entity_id)
            except sqlite3.Error:
                pass  # the full store says what is wrong
    config = full_config(config)
    from conveyor.store.stores import open_stores

    with open_stores(config) as stores:
        found = stores.metadata.events(entity_id=entity_id, limit=limit)
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
            for e in found
        ]


#: How long an unreferenced object is kept: longer than any run takes, since a run in progress
#: (in any workspace sharing the store) records what it stored only when each step ends.
GC_GRACE_HOURS = 24.0

#: The gc lease outlives any collection; one whose holder died on this host is taken at once,
#: and a holder killed on another host blocks collection until it expires.
_GC_LEASE_TTL_S = 6 * 3600.0


def collect_garbage(
    config: ProjectConfig,
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
