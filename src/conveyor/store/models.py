"""Tables of the metadata store.

The schema is owned by Alembic (``store/migrations``); these ORM classes mirror it. Every state
change also writes an ``events`` row: the audit log the CLI, dashboard and controller read.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    type_annotation_map = {dict: JSON, list: JSON}


class Run(Base):
    """One `conveyor run`: which steps ran, which were restored from cache, and how it ended."""

    __tablename__ = "runs"
    # `conveyor runs`: a project's newest runs, walked in order rather than sorted
    __table_args__ = (Index("ix_runs_project_started", "project", "started_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project: Mapped[str] = mapped_column(String(200), index=True)
    status: Mapped[str] = mapped_column(
        String(20), index=True
    )  # running|succeeded|failed|interrupted
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    workspace: Mapped[str] = mapped_column(Text)
    git_commit: Mapped[str | None] = mapped_column(String(64))
    git_dirty: Mapped[bool | None]
    env_hash: Mapped[str] = mapped_column(String(64))
    config_hash: Mapped[str] = mapped_column(String(64))
    args: Mapped[dict] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text)


class StepRun(Base):
    """One step inside a run: ran, restored from cache, failed, or blocked by a failed upstream."""

    __tablename__ = "step_runs"
    __table_args__ = (Index("ix_step_runs_run_step", "run_id", "step", unique=True),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    step: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20))  # pending|running|ran|cached|failed|blocked
    cache_key: Mapped[str] = mapped_column(String(64), index=True)
    key_parts: Mapped[dict] = mapped_column(JSON, default=dict)  # what the key was made of
    reason: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    duration_s: Mapped[float | None] = mapped_column(Float)
    outputs: Mapped[dict] = mapped_column(JSON, default=dict)
    log_digest: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    traceback: Mapped[str | None] = mapped_column(Text)


class StepCache(Base):
    """Cache key → what the step produced. Shared by everyone who uses the same store."""

    __tablename__ = "step_cache"

    cache_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    step: Mapped[str] = mapped_column(String(200))
    outputs: Mapped[dict] = mapped_column(JSON)
    key_parts: Mapped[dict] = mapped_column(JSON, default=dict)
    metrics: Mapped[dict] = mapped_column(JSON, default=dict)
    run_id: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    duration_s: Mapped[float] = mapped_column(Float)


class Metric(Base):
    __tablename__ = "metrics"
    __table_args__ = (Index("ix_metrics_run_key", "run_id", "key"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    step: Mapped[str] = mapped_column(String(200))
    key: Mapped[str] = mapped_column(String(250))
    value: Mapped[float] = mapped_column(Float)
    index: Mapped[int] = mapped_column(Integer, default=0)
    logged_at: Mapped[float] = mapped_column(Float)


class Param(Base):
    __tablename__ = "params"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    step: Mapped[str] = mapped_column(String(200), primary_key=True)
    key: Mapped[str] = mapped_column(String(250), primary_key=True)
    value: Mapped[str] = mapped_column(Text)  # JSON text


class LoggedArtifact(Base):
    """A file a step logged with `conveyor.log_artifact` (beside its return value)."""

    __tablename__ = "logged_artifacts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    step: Mapped[str] = mapped_column(String(200))
    name: Mapped[str] = mapped_column(String(500))
    digest: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(BigInteger)


class Snapshot(Base):
    """An immutable view of a data source: content hash, files, schema, profile."""

    __tablename__ = "snapshots"

    id: Mapped[str] = mapped_column(String(300), primary_key=True)  # source:content_hash
    source: Mapped[str] = mapped_column(String(200), index=True)
    kind: Mapped[str] = mapped_column(String(20))
    content_hash: Mapped[str] = mapped_column(String(64), index=True)
    files: Mapped[list] = mapped_column(JSON, default=list)
    schema: Mapped[dict | None] = mapped_column(JSON)
    row_count: Mapped[int | None] = mapped_column(BigInteger)
    profile: Mapped[dict | None] = mapped_column(JSON)
    data_digest: Mapped[str | None] = mapped_column(String(64))  # materialised result (SQL)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RunSnapshot(Base):
    __tablename__ = "run_snapshots"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    snapshot_id: Mapped[str] = mapped_column(
        String(300), ForeignKey("snapshots.id"), primary_key=True
    )


class EnvLock(Base):
    """The Python version and installed distributions a run used."""

    __tablename__ = "env_locks"

    hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    python: Mapped[str] = mapped_column(String(100))
    packages: Mapped[list] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Event(Base):
    """The audit log: one row per state change, never updated."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_entity", "entity", "entity_id"),
        # `events --id` and a release's timeline: one entity's events, whatever its kind
        Index("ix_events_entity_id", "entity_id"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    kind: Mapped[str] = mapped_column(String(100), index=True)
    entity: Mapped[str] = mapped_column(String(50))
    entity_id: Mapped[str] = mapped_column(String(200))
    actor: Mapped[str] = mapped_column(String(200))
    payload: Mapped[dict] = mapped_column(JSON, default=dict)


class ModelVersion(Base):
    """A registered model version: its file pinned by sha256, and everything that explains it.

    Rows are written once at registration; only ``status`` changes afterwards (archived). What
    an environment serves is in ``aliases``, never here.
    """

    __tablename__ = "model_versions"
    __table_args__ = (Index("ix_model_versions_model_version", "model", "version", unique=True),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project: Mapped[str] = mapped_column(String(200), index=True)
    model: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20))  # registered|archived
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    run_id: Mapped[str] = mapped_column(String(40), index=True)
    task: Mapped[str] = mapped_column(String(20))
    file: Mapped[dict] = mapped_column(JSON)  # format, digest, size, trusted types, class
    onnx: Mapped[dict | None] = mapped_column(JSON)  # digest, size, max_abs_diff, inputs
    signature: Mapped[dict] = mapped_column(JSON)
    metrics: Mapped[dict] = mapped_column(JSON)
    slices: Mapped[dict] = mapped_column(JSON, default=dict)
    gates: Mapped[list] = mapped_column(JSON, default=list)
    plots: Mapped[dict] = mapped_column(JSON, default=dict)  # name -> digest of an SVG
    lineage: Mapped[dict] = mapped_column(JSON)
    holdout: Mapped[dict] = mapped_column(JSON)  # stored output descriptor of the holdout frame
    references: Mapped[dict] = mapped_column(JSON, default=dict)  # source -> parquet sample
    card: Mapped[dict] = mapped_column(JSON, default=dict)  # intended use, limitations, target


class Alias(Base):
    """What an environment serves: (model, alias) → version. Moved only with an event."""

    __tablename__ = "aliases"

    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    alias: Mapped[str] = mapped_column(String(100), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RequestLog(Base):
    """One served request (sampled): inputs, outputs, version, latency; written in batches.

    ``role`` is ``serve`` for the answer a caller got, ``shadow`` for a copy that answered no one.
    Inputs and outputs are JSON text: kept as sent, read back in windows by the monitor.
    """

    __tablename__ = "request_log"
    __table_args__ = (Index("ix_request_log_model_env_at", "model", "environment", "at"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    request_id: Mapped[str] = mapped_column(String(40), index=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    model: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(Integer)
    environment: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(20))
    status: Mapped[int] = mapped_column(Integer)
    latency_ms: Mapped[float] = mapped_column(Float)
    rows: Mapped[int] = mapped_column(Integer)
    inputs: Mapped[str] = mapped_column(Text)
    outputs: Mapped[str] = mapped_column(Text)
    gateway: Mapped[str] = mapped_column(String(200))


class Feedback(Base):
    """Ground-truth labels for a logged request, sent later through ``POST /v1/feedback``."""

    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    request_id: Mapped[str] = mapped_column(String(40), index=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    labels: Mapped[str] = mapped_column(Text)  # JSON array, one label per row of the request
    actor: Mapped[str] = mapped_column(String(200))


class Release(Base):
    """One move of an environment from version A to version B under a strategy.

    ``active`` holds ``model@environment`` while the release is pending, running or paused and
    NULL once it finished: its unique index is what refuses a second release for the same
    environment, in the database, whichever process asks.
    """

    __tablename__ = "releases"
    __table_args__ = (
        Index("ix_releases_model_env", "model", "environment"),
        Index("ix_releases_created_at", "created_at"),  # `conveyor releases`: newest first
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    model: Mapped[str] = mapped_column(String(200))
    environment: Mapped[str] = mapped_column(String(100))
    from_version: Mapped[int | None] = mapped_column(Integer)
    to_version: Mapped[int] = mapped_column(Integer)
    strategy: Mapped[str] = mapped_column(String(20))
    state: Mapped[str] = mapped_column(String(20), index=True)
    step: Mapped[int] = mapped_column(Integer, default=0)
    step_started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    plan: Mapped[dict] = mapped_column(JSON)  # the environment's settings when it started
    verdicts: Mapped[list] = mapped_column(JSON, default=list)
    reason: Mapped[str | None] = mapped_column(Text)
    active: Mapped[str | None] = mapped_column(String(310), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Traffic(Base):
    """What an environment sends to a version other than its alias: a canary's share, a
    shadow's mirror, or a version kept warm for an instant rollback. No row: all to the alias."""

    __tablename__ = "traffic"

    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    environment: Mapped[str] = mapped_column(String(100), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    mode: Mapped[str] = mapped_column(String(10))  # canary|shadow|warm
    weight: Mapped[float] = mapped_column(Float, default=0.0)  # percent of requests (canary)
    sticky: Mapped[str | None] = mapped_column(String(200))
    release_id: Mapped[str | None] = mapped_column(String(40))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Lease(Base):
    """A named lock with an expiry: one controller per project, taken over only once expired."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
