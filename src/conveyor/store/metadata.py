"""The metadata store: one SQLAlchemy database (a SQLite file by default, PostgreSQL for a team).

Every write goes through a short transaction and, where it changes state, adds an ``events`` row
in the same transaction, so the audit log never disagrees with the tables it describes.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, overload

from sqlalchemy import (
    Column,
    MetaData,
    String,
    Table,
    create_engine,
    delete,
    event,
    func,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from conveyor.exceptions import (
    RunNotFound,
    StoreCorrupted,
    StoreError,
    StoreUnwritable,
    foreign_reason,
    safe_url,
)
from conveyor.store import events as ev
from conveyor.store import models as m
from conveyor.store.disk import DISK_ERRNOS, diagnose, explain
from conveyor.store.records import HEAD_REVISION, actor, new_run_id, utcnow

MIGRATIONS = Path(__file__).with_name("migrations")

# Alembic's own bookkeeping table, as Alembic creates it.
_ALEMBIC_VERSION = Table(
    "alembic_version",
    MetaData(),
    Column("version_num", String(32), primary_key=True),
)


@overload
def as_utc(value: datetime) -> datetime: ...
@overload
def as_utc(value: None) -> None: ...
@overload
def as_utc(value: datetime | None) -> datetime | None: ...
def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


@dataclass
class StepRecord:
    """Everything a finished step writes, in one transaction."""

    run_id: str
    step: str
    status: str  # ran | cached | failed | blocked
    cache_key: str
    key_parts: dict | None = None
    reason: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_s: float | None = None
    outputs: dict | None = None
    log_digest: str | None = None
    error: str | None = None
    traceback: str | None = None
    metrics: Sequence[tuple[str, float, int, float]] = ()  # key, value, index, logged_at
    params: dict[str, Any] | None = None
    artifacts: Sequence[tuple[str, str, int]] = ()  # name, digest, size
    cacheable: bool = False


class Store:
    """The metadata database.

    Args:
        url: any SQLAlchemy URL; ``sqlite:///path`` is the embedded default.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine: Engine | None = None
        self._sessions: sessionmaker[Session] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def open(self) -> Store:
        """Connect, and migrate the schema to the newest revision if needed.

        Raises:
            StoreError: the database cannot be reached or migrated.
        """
        path = sqlite_path(self.url)
        if path is not None:
            refuse_empty(path)
        try:
            self._engine = _make_engine(self.url)
            self._sessions = sessionmaker(self._engine, expire_on_commit=False)
            if path is not None:
                self._quick_check(path)
            if self._revision() != HEAD_REVISION:
                self._migrate()
        except SQLAlchemyError as exc:
            self.close()
            raise self._error(exc, f"Cannot open the metadata store {safe_url(self.url)}") from exc
        except OSError as exc:  # the database's folder cannot be created
            self.close()
            where = exc.filename or (path and path.parent) or self.url
            raise StoreUnwritable(
                f"Cannot open the metadata store {safe_url(self.url)}: "
                + explain(exc.errno, where, exc.strerror or str(exc))
            ) from exc
        except StoreError:
            self.close()
            raise
        return self

    def _quick_check(self, path: Path) -> None:
        """Refuse a damaged SQLite file before anything reads or writes it.

        Once per process per file: ``PRAGMA quick_check`` reads every page (about 4 ms per MB
        on a loaded 2-core machine), so a file above ``_QUICK_CHECK_MAX_BYTES`` has only its
        schema read, which still catches a file that is not a database or whose first pages
        are damaged. The no-op fast path reads its own SQLite file and never comes here.
        """
        key = os.path.realpath(path)
        if key in _CHECKED or not path.exists():
            return
        whole = path.stat().st_size <= _QUICK_CHECK_MAX_BYTES
        sql = "PRAGMA quick_check" if whole else "SELECT count(*) FROM sqlite_master"
        with self.engine.connect() as conn:
            rows = [str(r[0]) for r in conn.exec_driver_sql(sql).fetchall()]
        if whole and rows != ["ok"]:
            raise StoreCorrupted(
                f"The metadata store {path} is damaged (SQLite's quick_check: {rows[0]}). "
                + recovery(path)
            )
        _CHECKED.add(key)

    def _error(self, exc: SQLAlchemyError, what: str) -> StoreError:
        """The StoreError for a driver's error: a damaged file, a disk that cannot be written
        (recovered from the file system, since SQLite reports it without an errno), or else
        the driver's own words."""
        reason = foreign_reason(exc)
        path = sqlite_path(self.url)
        if path is None:
            return StoreError(f"{what}: {reason}")
        lowered = reason.lower()
        if "malformed" in lowered or "not a database" in lowered:
            return StoreCorrupted(f"{what}: {path} is damaged ({reason}). " + recovery(path))
        code = diagnose(path)
        if code in DISK_ERRNOS or "readonly" in lowered or "disk is full" in lowered:
            return StoreUnwritable(f"{what} ({reason}): " + explain(code, path, reason))
        return StoreError(f"{what}: {reason}")

    def close(self) -> None:
        """Release the connections; the store can be opened again, and is unusable until then."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
        self._sessions = None

    def __enter__(self) -> Store:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise StoreError("The store is not open; call Store.open() first.")
        return self._engine

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed on success, rolled back on any error."""
        if self._sessions is None:
            raise StoreError("The store is not open; call Store.open() first.")
        session = self._sessions()
        try:
            yield session
            session.commit()
        except SQLAlchemyError as exc:
            session.rollback()
            raise self._error(
                exc, f"The metadata store {safe_url(self.url)} refused a write"
            ) from exc
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def _revision(self) -> str | None:
        with self.engine.connect() as conn:
            try:
                return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
            except SQLAlchemyError:
                return None

    def _migrate(self) -> None:
        """Bring the schema to HEAD_REVISION: created whole when empty, else by Alembic."""
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # Two processes opening a fresh database at once must not both create tables.
                conn.execute(text("SELECT pg_advisory_xact_lock(7001001)"))
            elif conn.dialect.name == "sqlite":
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            if not inspect(conn).has_table("alembic_version"):
                # A new database gets the models' schema in one go and is stamped at head:
                # what the migrations would build (a test compares the two), without the
                # ~0.2 s of importing and running Alembic on every new project.
                m.Base.metadata.create_all(conn)
                _ALEMBIC_VERSION.create(conn)
                conn.execute(
                    text("INSERT INTO alembic_version (version_num) VALUES (:v)"),
                    {"v": HEAD_REVISION},
                )
                return
            from alembic import command
            from alembic.config import Config

            cfg = Config()
            cfg.set_main_option("script_location", str(MIGRATIONS))
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    # -- events ----------------------------------------------------------------------------

    @staticmethod
    def add_event(
        session: Session,
        kind: str,
        entity: str,
        entity_id: str,
        payload: dict | None = None,
        *,
        at: datetime | None = None,
    ) -> None:
        """Add one audit-log row to the caller's transaction.

        Args:
            session: the transaction that makes the change the event records.
            kind: one of the constants of :mod:`conveyor.store.events`.
            entity: what ``entity_id`` names (``run``, ``model``, ...), as the catalogue says.
            entity_id: which run, model, release, ... it happened to.
            payload: JSON-able details, with the keys the catalogue lists.
            at: when, if not now (a run's start event carries the run's own start time).

        Raises:
            StoreError: the kind is not in the catalogue, or not one for this entity.
        """
        ev.check(kind, entity)
        session.add(
            m.Event(
                at=at or utcnow(),
                kind=kind,
                entity=entity,
                entity_id=entity_id,
                actor=actor(),
                payload=payload or {},
            )
        )

    def events(
        self, *, entity: str | None = None, entity_id: str | None = None, limit: int = 200
    ) -> list[m.Event]:
        with self.session() as s:
            q = select(m.Event).order_by(m.Event.id.desc()).limit(limit)
            if entity:
                q = q.where(m.Event.entity == entity)
            if entity_id:
                q = q.where(m.Event.entity_id == entity_id)
            return list(reversed(s.scalars(q).all()))

    # -- runs ------------------------------------------------------------------------------

    def start_run(
        self,
        *,
        project: str,
        workspace: str,
        env_hash: str,
        config_hash: str,
        args: dict,
        git_commit: str | None,
        git_dirty: bool | None,
        steps: dict[str, str],
    ) -> str:
        """Create a run and its pending steps (step → cache key) in one transaction."""
        now = utcnow()
        run_id = new_run_id(now)
        with self.session() as s:
            s.add(
                m.Run(
                    id=run_id,
                    project=project,
                    status="running",
                    started_at=now,
                    host=socket.gethostname(),
                    pid=os.getpid(),
                    workspace=workspace,
                    git_commit=git_commit,
                    git_dirty=git_dirty,
                    env_hash=env_hash,
                    config_hash=config_hash,
                    args=args,
                )
            )
            s.flush()
            for step, key in steps.items():
                s.add(m.StepRun(run_id=run_id, step=step, status="pending", cache_key=key))
            self.add_event(s, ev.RUN_STARTED, "run", run_id, {"steps": list(steps)}, at=now)
        return run_id

    def finish_run(self, run_id: str, status: str, error: str | None = None) -> None:
        """End a run; steps it never finished (Ctrl-C, a crash) end as 'interrupted'.

        Raises:
            StoreError: ``status`` is not one a run ends with (succeeded, failed, interrupted).
        """
        kind = ev.run_ended(status)
        with self.session() as s:
            s.execute(
                update(m.Run)
                .where(m.Run.id == run_id)
                .values(status=status, finished_at=utcnow(), error=error)
            )
            s.execute(
                update(m.StepRun)
                .where(m.StepRun.run_id == run_id, m.StepRun.status.in_(["pending", "running"]))
                .values(status="interrupted")
            )
            self.add_event(s, kind, "run", run_id, {"error": error} if error else {})

    def mark_interrupted(self, workspace: str, host: str | None = None) -> list[str]:
        """Runs of this workspace left 'running' by a killed process become 'interrupted'.

        Only call this while holding the workspace's run lock: then no live process owns them.
        """
        host = host or socket.gethostname()
        with self.session() as s:
            ids = s.scalars(
                select(m.Run.id).where(
                    m.Run.status == "running", m.Run.workspace == workspace, m.Run.host == host
                )
            ).all()
            for run_id in ids:
                s.execute(
                    update(m.Run)
                    .where(m.Run.id == run_id)
                    .values(status="interrupted", finished_at=utcnow())
                )
                s.execute(
                    update(m.StepRun)
                    .where(m.StepRun.run_id == run_id, m.StepRun.status.in_(["pending", "running"]))
                    .values(status="interrupted")
                )
                self.add_event(s, ev.RUN_INTERRUPTED, "run", run_id, {"reason": "process died"})
        return list(ids)

    def step_started(self, run_id: str, step: str, reason: str | None) -> None:
        with self.session() as s:
            s.execute(
                update(m.StepRun)
                .where(m.StepRun.run_id == run_id, m.StepRun.step == step)
                .values(status="running", started_at=utcnow(), reason=reason)
            )
            self.add_event(s, ev.STEP_STARTED, "run", run_id, {"step": step, "reason": reason})

    def record_step(self, rec: StepRecord) -> None:
        """Write a finished step: status, metrics, params, artifacts, cache entry, event.

        Raises:
            StoreError: ``rec.status`` is not one a step ends with (ran, cached, failed,
                blocked), or the write was refused.
        """
        kind = ev.step_ended(rec.status)
        with self.session() as s:
            s.execute(
                update(m.StepRun)
                .where(m.StepRun.run_id == rec.run_id, m.StepRun.step == rec.step)
                .values(
                    status=rec.status,
                    cache_key=rec.cache_key,
                    key_parts=rec.key_parts or {},
                    reason=rec.reason,
                    started_at=rec.started_at,
                    finished_at=rec.finished_at,
                    duration_s=rec.duration_s,
                    outputs=rec.outputs or {},
                    log_digest=rec.log_digest,
                    error=rec.error,
                    traceback=rec.traceback,
                )
            )
            if rec.metrics:
                s.execute(
                    insert(m.Metric),
                    [
                        {
                            "run_id": rec.run_id,
                            "step": rec.step,
                            "key": key,
                            "value": value,
                            "index": index,
                            "logged_at": logged_at,
                        }
                        for key, value, index, logged_at in rec.metrics
                    ],
                )
            for key, value in (rec.params or {}).items():
                s.merge(m.Param(run_id=rec.run_id, step=rec.step, key=key, value=json.dumps(value)))
            for name, digest, size in rec.artifacts:
                s.add(
                    m.LoggedArtifact(
                        run_id=rec.run_id, step=rec.step, name=name, digest=digest, size=size
                    )
                )
            if rec.cacheable and rec.status == "ran":
                last = _last_values(rec.metrics)
                s.merge(
                    m.StepCache(
                        cache_key=rec.cache_key,
                        step=rec.step,
                        outputs=rec.outputs or {},
                        key_parts=rec.key_parts or {},
                        metrics=last,
                        run_id=rec.run_id,
                        created_at=rec.finished_at or utcnow(),
                        duration_s=rec.duration_s or 0.0,
                    )
                )
            payload: dict[str, Any] = {"step": rec.step, "cache_key": rec.cache_key}
            if rec.error:
                payload["error"] = rec.error
            self.add_event(s, kind, "run", rec.run_id, payload)

    def cached(self, keys: Sequence[str]) -> dict[str, m.StepCache]:
        if not keys:
            return {}
        with self.session() as s:
            rows = s.scalars(select(m.StepCache).where(m.StepCache.cache_key.in_(list(keys))))
            return {row.cache_key: row for row in rows}

    def runs(self, *, limit: int = 50, project: str | None = None) -> list[m.Run]:
        with self.session() as s:
            q = select(m.Run).order_by(m.Run.started_at.desc(), m.Run.id.desc()).limit(limit)
            if project:
                q = q.where(m.Run.project == project)
            return list(s.scalars(q).all())

    def run(self, run_id: str) -> m.Run:
        """A run by id or unique prefix; ``latest`` or ``-1`` is the newest."""
        with self.session() as s:
            if run_id in ("latest", "-1"):
                found = s.scalars(select(m.Run).order_by(m.Run.started_at.desc()).limit(1)).all()
            else:
                found = s.scalars(select(m.Run).where(m.Run.id.startswith(run_id)).limit(2)).all()
            if len(found) == 1:
                return found[0]
            if not found:
                raise RunNotFound(f"No run matches {run_id!r}. Run 'conveyor runs' to list them.")
            raise RunNotFound(
                f"Run id prefix {run_id!r} is ambiguous; give more characters "
                "(see 'conveyor runs')."
            )

    def step_runs(self, run_id: str) -> list[m.StepRun]:
        with self.session() as s:
            q = select(m.StepRun).where(m.StepRun.run_id == run_id).order_by(m.StepRun.id)
            return list(s.scalars(q).all())

    def metrics(self, run_id: str) -> list[m.Metric]:
        with self.session() as s:
            q = select(m.Metric).where(m.Metric.run_id == run_id).order_by(m.Metric.id)
            return list(s.scalars(q).all())

    def params(self, run_id: str) -> list[m.Param]:
        with self.session() as s:
            q = select(m.Param).where(m.Param.run_id == run_id).order_by(m.Param.step, m.Param.key)
            return list(s.scalars(q).all())

    def logged_artifacts(self, run_id: str) -> list[m.LoggedArtifact]:
        with self.session() as s:
            q = select(m.LoggedArtifact).where(m.LoggedArtifact.run_id == run_id)
            return list(s.scalars(q.order_by(m.LoggedArtifact.id)).all())

    def last_step_run(self, step: str, statuses: Sequence[str] = ("ran", "cached")) -> Any:
        """The newest record of a step that produced outputs: what `status` compares against."""
        with self.session() as s:
            q = (
                select(m.StepRun)
                .where(m.StepRun.step == step, m.StepRun.status.in_(list(statuses)))
                .order_by(m.StepRun.id.desc())
                .limit(1)
            )
            return s.scalars(q).first()

    # -- snapshots and environments --------------------------------------------------------

    def save_snapshot(self, run_id: str, snap: dict, data_digest: str | None = None) -> str:
        snap_id = f"{snap['source']}:{snap['content_hash']}"
        with self.session() as s:
            row = s.get(m.Snapshot, snap_id)
            if row is None:
                s.add(
                    m.Snapshot(
                        id=snap_id,
                        source=snap["source"],
                        kind=snap["kind"],
                        content_hash=snap["content_hash"],
                        files=snap.get("files") or [],
                        schema=snap.get("schema"),
                        row_count=snap.get("row_count"),
                        profile=snap.get("profile"),
                        data_digest=data_digest,
                        created_at=utcnow(),
                    )
                )
                self.add_event(s, ev.SNAPSHOT_CREATED, "snapshot", snap_id, {"run": run_id})
            s.merge(m.RunSnapshot(run_id=run_id, snapshot_id=snap_id))
        return snap_id

    def update_profile(self, snap_id: str, schema: dict, row_count: int, profile: dict) -> None:
        with self.session() as s:
            s.execute(
                update(m.Snapshot)
                .where(m.Snapshot.id == snap_id)
                .values(schema=schema, row_count=row_count, profile=profile)
            )
            self.add_event(s, ev.SNAPSHOT_PROFILED, "snapshot", snap_id, {"rows": row_count})

    def snapshot(self, snap_id: str) -> m.Snapshot | None:
        with self.session() as s:
            return s.get(m.Snapshot, snap_id)

    def run_snapshots(self, run_id: str) -> list[m.Snapshot]:
        with self.session() as s:
            q = (
                select(m.Snapshot)
                .join(m.RunSnapshot, m.RunSnapshot.snapshot_id == m.Snapshot.id)
                .where(m.RunSnapshot.run_id == run_id)
            )
            return list(s.scalars(q).all())

    def save_env_lock(self, env_hash: str, python: str, packages: list[str]) -> None:
        with self.session() as s:
            if s.get(m.EnvLock, env_hash) is None:
                s.add(
                    m.EnvLock(hash=env_hash, python=python, packages=packages, created_at=utcnow())
                )

    # -- garbage collection ----------------------------------------------------------------

    def referenced_digests(self, exclude_runs: Sequence[str] = ()) -> set[str]:
        """Every artifact digest some record still points at: the roots of `conveyor gc`.

        Args:
            exclude_runs: count these runs as deleted already (what a dry run of pruning
                would free), together with the cache entries only they used.
        """
        excluded = list(exclude_runs)
        keep: set[str] = set()
        used_keys: set[str] = set()
        with self.session() as s:
            q = select(m.StepRun.outputs, m.StepRun.log_digest, m.StepRun.cache_key)
            if excluded:
                q = q.where(m.StepRun.run_id.not_in(excluded))
            for outputs, log, key in s.execute(q):
                keep.update(_digests_in(outputs))
                used_keys.add(key)
                if log:
                    keep.add(log)
            for key, outputs in s.execute(select(m.StepCache.cache_key, m.StepCache.outputs)):
                if not excluded or key in used_keys:
                    keep.update(_digests_in(outputs))
            q = select(m.LoggedArtifact.digest)
            if excluded:
                q = q.where(m.LoggedArtifact.run_id.not_in(excluded))
            keep.update(d for d in s.scalars(q) if d)
            keep.update(d for d in s.scalars(select(m.Snapshot.data_digest)) if d)
            # A registered version pins its files for as long as the version exists.
            for row in s.execute(
                select(
                    m.ModelVersion.file,
                    m.ModelVersion.onnx,
                    m.ModelVersion.plots,
                    m.ModelVersion.holdout,
                    m.ModelVersion.references,
                )
            ):
                file, onnx, plots, holdout, references = row
                keep.update(d for d in (file.get("digest"), (onnx or {}).get("digest")) if d)
                keep.update(plots.values())
                keep.update(_digests_in({"holdout": holdout}))
                keep.update(references.values())
        return keep

    def prunable_runs(self, project: str, before: datetime) -> list[str]:
        """Finished runs of a project that started before ``before``; never its newest run."""
        with self.session() as s:
            newest = s.scalar(
                select(m.Run.id)
                .where(m.Run.project == project)
                .order_by(m.Run.started_at.desc())
                .limit(1)
            )
            q = select(m.Run.id).where(
                m.Run.project == project,
                m.Run.started_at < before,
                m.Run.status != "running",
                m.Run.id != newest,
                # A run that produced a registered version is its lineage: kept.
                m.Run.id.not_in(select(m.ModelVersion.run_id)),
            )
            return list(s.scalars(q.order_by(m.Run.started_at)))

    def delete_runs(self, run_ids: Sequence[str]) -> None:
        """Delete runs with their steps, metrics, params and logged artifacts, and the cache
        entries that no remaining run used. The audit log keeps its events, plus one
        ``run.deleted`` each: history is thinned, never rewritten."""
        ids = list(run_ids)
        if not ids:
            return
        with self.session() as s:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                # Explicit deletes rather than ON DELETE CASCADE alone, which SQLite honours
                # only on connections that enabled foreign keys.
                for table in (m.Metric, m.Param, m.LoggedArtifact, m.RunSnapshot, m.StepRun):
                    s.execute(delete(table).where(table.run_id.in_(chunk)))
                s.execute(delete(m.Run).where(m.Run.id.in_(chunk)))
            s.execute(
                delete(m.StepCache).where(
                    m.StepCache.cache_key.not_in(select(m.StepRun.cache_key).distinct())
                )
            )
            for run_id in ids:
                self.add_event(s, ev.RUN_DELETED, "run", run_id, {"reason": "gc"})

    def count(self, table: type[m.Base]) -> int:
        with self.session() as s:
            return int(s.scalar(select(func.count()).select_from(table)) or 0)


#: SQLite files that passed ``PRAGMA quick_check`` in this process (real paths).
_CHECKED: set[str] = set()

#: Larger SQLite files get a schema read rather than a full quick_check (~0.4 s at 93 MB).
_QUICK_CHECK_MAX_BYTES = 64 * 1024 * 1024

#: A 0-byte file younger than this may be a new store another process is creating right now.
_NEW_FILE_S = 10.0


def sqlite_path(url: str) -> Path | None:
    """The file a ``sqlite:///`` URL names, or None (another database, or in memory)."""
    if not url.startswith("sqlite"):
        return None
    path = url.split("///", 1)[-1].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" and "///" in url else None


def refuse_empty(path: Path) -> None:
    """Refuse a 0-byte database file: SQLite would silently treat it as a new, empty store,
    and every run, version and release recorded there would seem to vanish.

    Raises:
        StoreCorrupted: ``path`` is empty, has no write-ahead log, and is older than a few
            seconds (so it is not a store another process is creating at this moment).
    """
    try:
        st = os.stat(path)
    except OSError:
        return  # a new store (or one we cannot see: the open that follows says why)
    if st.st_size:
        return
    wal = path.with_name(path.name + "-wal")
    if wal.exists() and wal.stat().st_size:
        return  # the pages are still in the log: SQLite reads them from there
    if time.time() - st.st_mtime < _NEW_FILE_S:
        return
    raise StoreCorrupted(
        f"The metadata store {path} is an empty file (0 bytes): it was truncated, or "
        "created by something other than Conveyor. " + recovery(path)
    )


def recovery(path: Path) -> str:
    """How to get a damaged store back: the newest backup beside it, or how to start again."""
    backups = [
        p
        for pattern in (f"{path.name}.bak*", f"{path.name}.backup*", f"{path.stem}*.bak")
        for p in path.parent.glob(pattern)
        if p.is_file() and p.stat().st_size
    ]
    if backups:
        newest = max(backups, key=lambda p: p.stat().st_mtime)
        return f"Restore the newest backup: cp {newest} {path}"
    return (
        f"No backup was found beside it ({path.name}.bak). Try `sqlite3 {path} .recover | "
        f"sqlite3 {path}.recovered` and move the result in its place, or move {path.name} "
        "aside to start an empty store (runs and registered versions are lost; artifacts stay)."
    )


def _digests_in(outputs: Any) -> Iterator[str]:
    """Outputs are ``{name: {"digest": ..., "format": ...}}``; files of a cmd step likewise."""
    if isinstance(outputs, dict):
        for value in outputs.values():
            if isinstance(value, dict) and isinstance(value.get("digest"), str):
                yield value["digest"]


def _last_values(metrics: Sequence[tuple[str, float, int, float]]) -> dict[str, float]:
    last: dict[str, float] = {}
    for key, value, _index, _at in metrics:
        last[key] = value
    return last


def _wal(cur: Any) -> None:
    """Switch to WAL; a fresh file that another process is creating at the same moment answers
    "database is locked" at once (SQLite does not wait on the busy handler for this), so wait
    for it here, up to the busy timeout."""
    import sqlite3
    import time

    deadline = time.monotonic() + 30.0
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = sqlite_path(url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            # WAL lets readers (dashboard, `conveyor runs`) work during a run; the busy timeout
            # makes concurrent writers wait instead of failing.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA busy_timeout=30000")
            _wal(cur)
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    try:
        return create_engine(url, pool_pre_ping=True)
    except ModuleNotFoundError as exc:
        raise StoreError(
            f"The store URL {safe_url(url)} needs the driver {exc.name!r}. "
            "Install it with: pip install 'conveyor-ml[postgres]'"
        ) from exc
