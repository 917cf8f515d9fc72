"""A monitoring report computed and kept, or answered from the one kept while nothing changed.

`conveyor monitor` and the controller's periodic monitoring keep each report they compute
(``store/kept.py`` says where, and what its fingerprint covers); `conveyor monitor` prints the
kept one while its fingerprint matches. The CLI's fast path (``cli/reads.py``) does the same
check with ``sqlite3`` before anything heavy loads; this module is the full path's: any metadata
store, and the computation when the check fails. Keeping never fails a command: a report that
cannot be kept is only computed again next time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from conveyor.store import kept as keeper

if TYPE_CHECKING:
    from conveyor.config import ProjectConfig
    from conveyor.config.monitor import WindowConfig
    from conveyor.monitor.report import Monitoring, MonitorReport
    from conveyor.registry.registry import Registry
    from conveyor.store.metadata import Store

__all__ = ["Look", "keep", "key_for", "kept_report", "look", "take"]

log = logging.getLogger(__name__)


@dataclass
class Look:
    """A report and where it came from: ``seen`` when computed now (with the window and the
    reference, for the HTML page), else the kept report as of now (``keeper.FIELD`` says when
    it was computed)."""

    report: MonitorReport
    seen: Monitoring | None = None
    kept: dict[str, Any] | None = None  # the report's ``keeper.FIELD``: when, by whom


def key_for(
    config: ProjectConfig,
    model: str | None,
    environment: str | None,
    window: WindowConfig | None,
) -> keeper.Key | None:
    """The report ``observe`` gives for these options (None: no model to name it by)."""
    from conveyor.config.monitor import MonitorConfig

    settings = config.monitor or MonitorConfig()
    model = model or (config.model.name if config.model is not None else None)
    if not model:
        return None
    spec = window or settings.window
    return keeper.Key(model, environment or settings.environment, spec.seconds, spec.last)


def _state_dir(config: ProjectConfig) -> Path:
    from conveyor.project import Paths

    return Paths(Path(config.root)).state_dir


def take(config: ProjectConfig, store: Store, key: keeper.Key) -> keeper.Fingerprint | None:
    """The fingerprint of ``key``'s report now (None: it cannot be taken; nothing is kept)."""
    from conveyor.project import CONFIG_FILE

    try:
        now = datetime.now(UTC)
        root = Path(config.root)
        project = keeper.project_stamp(
            root, root / CONFIG_FILE, config.store_url(), config.artifacts_url()
        )
        routing = keeper.routing_store(store, key.model, key.environment)
        if routing is None:
            return None
        log_part = keeper.log_stamp(
            config.artifacts_url(),
            key.model,
            key.environment,
            keeper.first_day(key.seconds, now),
        )
    except Exception as exc:  # a cache: never the reason a report fails
        log.debug("no fingerprint for %s: %s", key, exc)
        return None
    return keeper.Fingerprint(key, project, routing, log_part, now)


def keep(
    config: ProjectConfig,
    store: Store,
    fingerprint: keeper.Fingerprint | None,
    report: MonitorReport,
    *,
    by: str,
) -> bool:
    """Keep a report just computed under the fingerprint taken before it; True if kept.

    A window of seconds holds until its oldest row leaves it: that row's time is read back
    from the log (the report does not carry it), its cost a scan of one column.
    """
    if fingerprint is None:
        return False
    try:
        span = report["window"]
        key = keeper.Key(report["model"], report["environment"], span["seconds"], span["last"])
        if key != fingerprint.key:
            return False
        start, end = datetime.fromisoformat(span["start"]), datetime.fromisoformat(span["end"])
        if not keeper.keepable(fingerprint, end):
            return False
        expires = None
        if span["seconds"] is not None and report["requests"]:
            oldest = _oldest(store, key, start, end)
            if oldest is None:
                return False
            expires = oldest + timedelta(seconds=float(span["seconds"]))
        state = _state_dir(config)
        keeper.write_record(state, fingerprint, dict(report), expires_at=expires, by=by)
        named = config.model is not None
        default = key_for(config, None if named else key.model, None, None)
        if default is not None:
            keeper.write_defaults(state, fingerprint.project, default, model_known=named)
        return True
    except Exception as exc:  # a cache: never the reason a report fails
        log.warning("could not keep the monitoring report: %s", exc)
        return False


def _oldest(store: Store, key: keeper.Key, start: datetime, end: datetime) -> datetime | None:
    """The time of the oldest served row in [start, end] (None: no row)."""
    import pyarrow.compute as pc

    from conveyor.monitor.windows import log_files
    from conveyor.store.predictionlog.query import read_requests

    table = read_requests(
        log_files(store),
        key.model,
        key.environment,
        since=start,
        until=end,
        roles=["serve"],
        columns=("at",),
        ordered=False,
    )
    if not len(table):
        return None
    oldest = pc.min(table.column("at")).as_py()
    return None if oldest is None else oldest.astimezone(UTC)


def kept_report(
    config: ProjectConfig, store: Store, key: keeper.Key, now: datetime | None = None
) -> dict[str, Any] | None:
    """The kept report of ``key`` as of now, if its fingerprint still matches, else None."""
    from conveyor.project import CONFIG_FILE

    now = now or datetime.now(UTC)
    root = Path(config.root)
    record = keeper.read_record(_state_dir(config), key)
    try:
        if (
            record is None
            or not keeper.same_project(record["project"], root, root / CONFIG_FILE)
            or not keeper.time_holds(record, now)
        ):
            return None
        routing = keeper.routing_store(store, key.model, key.environment)
        log_part = keeper.log_stamp(
            config.artifacts_url(), key.model, key.environment, record["log"].get("first_day")
        )
        if not keeper.holds(record, routing, log_part):
            return None
        return keeper.as_of(record, now)
    except Exception as exc:  # a corrupt record or a failing look: compute afresh
        log.debug("kept report of %s not used: %s", key, exc)
        return None


def look(
    config: ProjectConfig,
    registry: Registry,
    *,
    model: str | None = None,
    environment: str | None = None,
    window: WindowConfig | None = None,
    fresh: bool = False,
    by: str = "conveyor monitor",
) -> Look:
    """The kept report while it holds (unless ``fresh``), else one computed now and kept.

    Raises:
        MonitorError: as ``observe``, when it computes.
    """
    from conveyor.monitor.report import observe

    key = key_for(config, model, environment, window)
    if key is not None and not fresh:
        report = kept_report(config, registry.store, key)
        if report is not None:
            return Look(cast("MonitorReport", report), kept=report[keeper.FIELD])
    fingerprint = take(config, registry.store, key) if key is not None else None
    seen = observe(config, registry, model=model, environment=environment, window=window)
    keep(config, registry.store, fingerprint, seen.report, by=by)
    return Look(seen.report, seen)
