"""Kept monitoring reports: the last report of each (model, environment, window), stored with a
fingerprint of everything it was computed from, so a look at unchanged data costs nothing.

A fresh monitoring report imports pandas, SciPy, SQLAlchemy and DuckDB (about 1.5 s before it
reads a row); a user or a script polling `conveyor monitor` mostly looks at a log that has not
changed since the last look. So every computation (`conveyor monitor`, the controller's periodic
monitoring) writes its report here with its fingerprint, and the CLI's fast path prints it while
the fingerprint still matches. A matching fingerprint means a fresh computation would give the
same report; it covers:

- the project: the root, the bytes of conveyor.yaml (model name, monitor window, ``min_rows``,
  drift settings, store locations, ``allow_pickle``, trusted types) and the ``CONVEYOR_*``
  variables that override its store locations;
- what the environment routes to: its alias, the served version's row (id, task, signature,
  model file, holdout and reference samples: a version's reference is fixed by these) and the
  traffic row (canary, shadow or warm version and weight);
- the prediction log's files: name, size and modified time of every file under the model's and
  environment's request partitions from the window's first day on, and of every feedback file.
  Files are written whole and never appended to (``docs/prediction-log.md``), so rows newer
  than the computation can only be in files it did not list;
- the clock, for a window of the last N seconds: rows leave it as time passes, so a report
  holds only from its window's end until its oldest row leaves (that row's time plus the
  window's length). A window of the last N requests does not move without new files.

Where: one JSON file per (model, environment, window) under the project's state folder
(``.conveyor/monitor/``), written atomically (``store/atomic.py``). Not a table of the metadata
store: the fast path reads the file before it knows where the store is (the record says), a
table would need a migration that every project's plain SQLite reads then wait for, and this
is a cache (losing it costs one computation), machine-local like the rest of ``.conveyor/``. A
file that is missing, unreadable, of another format or of another project is ignored.

Standard library only (the CLI's fast path imports it); SQLAlchemy is imported only by
``routing_store``, for a store the fast path cannot read with ``sqlite3``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.store.atomic import write_text
from conveyor.store.predictionlog import layout
from conveyor.store.predictionlog.files import LogFiles

if TYPE_CHECKING:
    from conveyor.store.metadata import Store

__all__ = [
    "FIELD",
    "Fingerprint",
    "Key",
    "as_of",
    "defaults",
    "holds",
    "log_stamp",
    "parse_window",
    "project_stamp",
    "read_record",
    "same_project",
    "routing_plain",
    "routing_store",
    "time_holds",
    "write_defaults",
    "write_record",
]

FORMAT = 1
FOLDER = "monitor"  # under the project's state folder (.conveyor/)
#: the JSON field a report answered from its kept copy carries (a fresh one has none)
FIELD = "kept_report"
#: the variables that change where conveyor.yaml's store and artifacts point
#: (``config/project.py``'s ``_apply_env``); the others it reads do not touch monitoring
ENV_VARS = ("CONVEYOR_STORE_URL", "CONVEYOR_ARTIFACTS")
#: a file modified this close to (or after) a window's end may hold rows past it: modified
#: times come from a coarse clock (a few ms locally, whole seconds on object stores)
MARGIN_S = 2.0

_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*")  # as config/deploy.py's
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


@dataclass(frozen=True)
class Key:
    """Which report: a model's environment over the last ``seconds`` or the last ``last``."""

    model: str
    environment: str
    seconds: float | None
    last: int | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "environment": self.environment,
            "seconds": self.seconds,
            "last": self.last,
        }

    def file_name(self) -> str:
        text = json.dumps(self.to_dict(), sort_keys=True)
        return f"report-{hashlib.sha256(text.encode()).hexdigest()[:32]}.json"


@dataclass(frozen=True)
class Fingerprint:
    """What a report is computed from, taken *before* the computation reads anything: a file or
    a promotion that arrives meanwhile then differs from it at the next look."""

    key: Key
    project: dict[str, Any]
    routing: str
    log: dict[str, Any]
    taken_at: datetime


def parse_window(text: str) -> float | None:
    """Seconds from ``--window`` as ``config.deploy.parse_duration`` reads it, or None."""
    match = _DURATION.fullmatch(text)
    return float(match.group(1)) * _UNITS[match.group(2)] if match else None


# -- the fingerprint's parts ---------------------------------------------------------------------


def project_stamp(root: Path, config_file: Path, store_url: str, artifacts_url: str) -> dict:
    """The project's part: its root, the digest of conveyor.yaml's bytes, the variables that
    override its store locations, where those point (recorded for the fast path), and the
    Conveyor version that computed the report (another may compute otherwise).

    Raises:
        OSError: conveyor.yaml cannot be read.
    """
    return {
        "software": _software(),
        "root": str(root),
        "config_sha256": hashlib.sha256(config_file.read_bytes()).hexdigest(),
        "env": {k: os.environ.get(k) for k in ENV_VARS},
        "store_url": store_url,
        "artifacts_url": artifacts_url,
    }


def same_project(stamp: dict, root: Path, config_file: Path) -> bool:
    """Whether a recorded project stamp still describes the project at ``root`` and this
    Conveyor version."""
    try:
        return (
            stamp.get("software") == _software()
            and stamp.get("root") == str(root)
            and stamp.get("env") == {k: os.environ.get(k) for k in ENV_VARS}
            and stamp.get("config_sha256") == hashlib.sha256(config_file.read_bytes()).hexdigest()
        )
    except (OSError, AttributeError):
        return False


def _software() -> str:
    """The Conveyor version, from the package itself: Python imports it before any of its
    modules, this one included. Importing it by name would make the store layer depend on
    what the package re-exports from the layers above."""
    return str(getattr(sys.modules.get("conveyor"), "__version__", "unknown"))


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


_VERSION_COLUMNS = ("id", "task", "signature", "file", "holdout", "references")
_JSON_COLUMNS = {"signature", "file", "holdout", "references"}


def routing_plain(conn: sqlite3.Connection, model: str, environment: str) -> str | None:
    """The routing part read with ``sqlite3`` (a store at head), or None: nothing routed.

    Raises:
        sqlite3.Error: as the reads do (the caller then takes the full path).
    """
    alias = conn.execute(
        "SELECT version FROM aliases WHERE model = ? AND alias = ?", (model, environment)
    ).fetchone()
    if alias is None:
        return None
    columns = ", ".join(f'"{c}"' for c in _VERSION_COLUMNS)
    row = conn.execute(
        f"SELECT {columns} FROM model_versions WHERE model = ? AND version = ?",
        (model, alias[0]),
    ).fetchone()
    traffic = conn.execute(
        "SELECT version, mode, weight FROM traffic WHERE model = ? AND environment = ?",
        (model, environment),
    ).fetchone()
    version = None
    if row is not None:
        version = {
            c: json.loads(v) if c in _JSON_COLUMNS and v is not None else v
            for c, v in zip(_VERSION_COLUMNS, row, strict=True)
        }
    return _routing(int(alias[0]), version, traffic)


def routing_store(store: Store, model: str, environment: str) -> str | None:
    """``routing_plain`` through the metadata store (any database): the same digest."""
    from sqlalchemy import select

    from conveyor.store import models as m

    with store.session() as s:
        alias = s.get(m.Alias, (model, environment))
        if alias is None:
            return None
        row = s.scalars(
            select(m.ModelVersion).where(
                m.ModelVersion.model == model, m.ModelVersion.version == alias.version
            )
        ).one_or_none()
        traffic = s.get(m.Traffic, (model, environment))
        version = None if row is None else {c: getattr(row, c) for c in _VERSION_COLUMNS}
        shares = None if traffic is None else (traffic.version, traffic.mode, traffic.weight)
        return _routing(int(alias.version), version, shares)


def _routing(alias: int, version: dict | None, traffic: Any) -> str:
    shares = None if traffic is None else [int(traffic[0]), str(traffic[1]), float(traffic[2])]
    return _digest({"alias": alias, "version": version, "traffic": shares})


def first_day(seconds: float | None, end: datetime) -> str | None:
    """The first day partition a window ending at ``end`` reads (None: every day)."""
    return None if seconds is None else layout.day_of(end - timedelta(seconds=seconds))


def log_stamp(artifacts_url: str, model: str, environment: str, since_day: str | None) -> dict:
    """The log's part: the digest of (folder, name, size, modified time) of every request file
    of the model's environment from ``since_day`` on, and of every feedback file (the labels are
    joined on request ids, whatever day they came), with their count and newest time.

    Raises:
        OSError: the log cannot be listed.
    """
    files = LogFiles(layout.log_url(artifacts_url))
    entries: list[tuple[str, str, int, float]] = []
    folders = files.day_folders(
        layout.requests_dir(files.root, model, environment), since_day, None
    )
    folders += files.day_folders(layout.feedback_dir(files.root), None, None)
    for folder in folders:
        where = folder[len(files.root) :]
        entries.extend((where, name, size, mtime) for name, size, mtime in files.entries(folder))
    return {
        "first_day": since_day,
        "files": len(entries),
        "digest": _digest(entries),
        "newest": max((e[3] for e in entries), default=0.0),
    }


# -- records -------------------------------------------------------------------------------------


def read_record(state_dir: Path, key: Key) -> dict | None:
    """The kept report of ``key``, or None: none, unreadable, corrupt or of another format."""
    try:
        record = json.loads((state_dir / FOLDER / key.file_name()).read_text(encoding="utf-8"))
        if (
            record.get("format") != FORMAT
            or record.get("key") != key.to_dict()
            or not isinstance(record.get("report"), dict)
            or not isinstance(record.get("project"), dict)
            or not isinstance(record.get("log"), dict)
        ):
            return None
        _time(record["computed_at"])
        if record.get("expires_at") is not None:
            _time(record["expires_at"])
        return record
    except (OSError, ValueError, TypeError, AttributeError, KeyError):
        return None


def keepable(fingerprint: Fingerprint, end: datetime) -> bool:
    """Whether a report whose window ends at ``end`` may be kept under this fingerprint: every
    row of the listed files must be at or before ``end``. True when the files were listed before
    ``end`` (a file's rows predate its writing); a caller that fixed ``end`` earlier (the
    controller's turn time) needs every listed file older than ``end`` by the clock's margin."""
    if fingerprint.taken_at <= end:
        return True
    return float(fingerprint.log["newest"]) <= end.timestamp() - MARGIN_S


def write_record(
    state_dir: Path,
    fingerprint: Fingerprint,
    report: dict[str, Any],
    *,
    expires_at: datetime | None,
    by: str,
) -> Path:
    """Keep ``report`` under its fingerprint, atomically.

    Raises:
        OSError: the state folder cannot be written.
    """
    record = {
        "format": FORMAT,
        "key": fingerprint.key.to_dict(),
        "project": fingerprint.project,
        "routing": fingerprint.routing,
        "log": fingerprint.log,
        "computed_at": report["window"]["end"],
        "expires_at": None if expires_at is None else expires_at.isoformat(),
        "by": by,
        "report": json.loads(json.dumps(report, default=str)),  # as `--json` prints it
    }
    return write_text(
        state_dir / FOLDER / fingerprint.key.file_name(), json.dumps(record, default=str)
    )


def write_defaults(state_dir: Path, project: dict, key: Key, *, model_known: bool) -> Path:
    """Record which model, environment and window `conveyor monitor` without options means
    under this project stamp (conveyor.yaml's ``model.name`` and ``monitor:`` section);
    ``model_known`` False: conveyor.yaml names no model, so ``-m`` must."""
    data = {
        "format": FORMAT,
        "project": project,
        "key": {**key.to_dict(), "model": key.model if model_known else None},
    }
    return write_text(state_dir / FOLDER / "defaults.json", json.dumps(data))


def defaults(
    state_dir: Path,
    root: Path,
    config_file: Path,
    model: str | None,
    environment: str | None,
) -> Key | None:
    """The key of `conveyor monitor -m MODEL --env ENV` with the window and whichever of the
    two is None taken from the recorded defaults, while conveyor.yaml is unchanged (None: no
    such record, or no model named anywhere)."""
    try:
        data = json.loads((state_dir / FOLDER / "defaults.json").read_text(encoding="utf-8"))
        if data.get("format") != FORMAT or not same_project(data["project"], root, config_file):
            return None
        k = data["key"]
        model = model or k["model"]
        if model is None:
            return None
        return Key(
            str(model),
            str(environment or k["environment"]),
            None if k["seconds"] is None else float(k["seconds"]),
            None if k["last"] is None else int(k["last"]),
        )
    except (OSError, ValueError, TypeError, AttributeError, KeyError):
        return None


# -- checking ------------------------------------------------------------------------------------


def time_holds(record: dict, now: datetime) -> bool:
    """Whether the clock still allows the record: after its window's end, before its oldest
    row leaves a window of seconds."""
    computed = _time(record["computed_at"])
    if now < computed:
        return False
    expires = record.get("expires_at")
    return expires is None or now < _time(expires)


def holds(record: dict, routing: str | None, log: dict) -> bool:
    """Whether a record's routing and log parts equal those taken now (its project part is
    checked first, by ``same_project``: it says where to look for the others)."""
    kept = record["log"]
    return (
        routing is not None
        and record.get("routing") == routing
        and (kept.get("files"), kept.get("digest")) == (log["files"], log["digest"])
    )


def as_of(record: dict, now: datetime) -> dict[str, Any]:
    """The kept report as a fresh computation at ``now`` would give it, with ``FIELD`` saying
    when it was computed and by whom.

    Only the window's span moves: its end is ``now``, its start ``now`` minus the length for a
    window of seconds (and for an empty window of requests, which starts where it ends); the
    fingerprint holding means the rows, and so every figure, are those of the computation.
    """
    report = dict(record["report"])
    window = dict(report["window"])
    if window.get("seconds") is not None:
        window["start"] = (now - timedelta(seconds=float(window["seconds"]))).isoformat()
    elif not report.get("requests"):
        window["start"] = now.isoformat()
    window["end"] = now.isoformat()
    report["window"] = window
    computed = _time(record["computed_at"])
    report[FIELD] = {
        "computed_at": computed.isoformat(),
        "age_s": round((now - computed).total_seconds(), 3),
        "by": record.get("by"),
    }
    return report


def _time(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone")
    return value.astimezone(UTC)
